import fs from 'node:fs';
import path from 'node:path';
import type { Sequelize } from 'sequelize';
// umzug 2 is what sequelize-cli itself runs; same `SequelizeMeta` table, same files.
// eslint-disable-next-line @typescript-eslint/no-var-requires
const Umzug = require('umzug');

export const MIGRATIONS_DIR = path.join(__dirname, '../../database/migrations');

function umzugFor(sequelize: Sequelize, dir = MIGRATIONS_DIR) {
  return new Umzug({
    storage: 'sequelize',
    storageOptions: { sequelize, tableName: 'SequelizeMeta' },
    migrations: {
      path: dir,
      pattern: /^\d+[\w-]+\.js$/,
      params: [ sequelize.getQueryInterface(), (sequelize.constructor as any) ],
    },
    logging: false,
  });
}

/**
 * Applies every pending migration in `database/migrations`; returns the names applied.
 * On MySQL the run holds a named lock, so instances starting together against one
 * database migrate one after the other instead of racing on the same DDL.
 */
export async function migrateUp(sequelize: Sequelize, dir?: string): Promise<string[]> {
  const run = async () => {
    const done: Array<{ file: string }> = await umzugFor(sequelize, dir).up();
    return done.map(m => m.file);
  };
  if (sequelize.getDialect() !== 'mysql') return run();
  // GET_LOCK belongs to a connection: a transaction keeps one connection for it.
  return sequelize.transaction(async transaction => {
    const [ rows ] = await sequelize.query("SELECT GET_LOCK('classworks-kv:migrate', 120) AS locked", { transaction }) as [Array<{ locked: number | null }>, unknown];
    if (Number(rows[0]?.locked) !== 1) throw new Error('could not take the migration lock within 120 s');
    try {
      return await run();
    } finally {
      await sequelize.query("SELECT RELEASE_LOCK('classworks-kv:migrate')", { transaction });
    }
  });
}

/** The names of the migrations not applied yet (nothing is written; the import's dry run). */
export async function pendingMigrations(sequelize: Sequelize, dir = MIGRATIONS_DIR): Promise<string[]> {
  // umzug creates its table when asked: on a database never migrated, every file is pending.
  const tables = (await sequelize.getQueryInterface().showAllTables()).map(t => (typeof t === 'string' ? t : (t as { tableName: string }).tableName));
  if (!tables.includes('SequelizeMeta')) return fs.readdirSync(dir).filter(f => /^\d+[\w-]+\.js$/.test(f)).sort();
  const pending: Array<{ file: string }> = await umzugFor(sequelize, dir).pending();
  return pending.map(m => m.file);
}

/** Reverts every migration (used by tests of the migrations themselves). */
export async function migrateDownAll(sequelize: Sequelize, dir?: string): Promise<void> {
  await umzugFor(sequelize, dir).down({ to: 0 });
}
