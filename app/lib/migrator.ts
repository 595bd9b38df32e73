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

/** Applies every pending migration in `database/migrations`; returns the names applied. */
export async function migrateUp(sequelize: Sequelize, dir?: string): Promise<string[]> {
  const done: Array<{ file: string }> = await umzugFor(sequelize, dir).up();
  return done.map(m => m.file);
}

/** Reverts every migration (used by tests of the migrations themselves). */
export async function migrateDownAll(sequelize: Sequelize, dir?: string): Promise<void> {
  await umzugFor(sequelize, dir).down({ to: 0 });
}
