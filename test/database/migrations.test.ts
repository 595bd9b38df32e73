import assert from 'node:assert';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Sequelize } from 'sequelize';
import { migrateDownAll, migrateUp } from '../../app/lib/migrator';

/**
 * The migrations themselves, on a database of their own: every migration applies and
 * reverts cleanly, and the schema has the byte-exact key semantics the contract needs.
 */
describe('test/database/migrations.test.ts', () => {
  let sequelize: Sequelize;
  let dir: string | undefined;
  const mysqlUrl = process.env.DATABASE_URL?.startsWith('mysql:') ? process.env.DATABASE_URL : undefined;
  const dbName = `classworks_migr_${process.pid}`;

  function connect() {
    const u = new URL(mysqlUrl!);
    u.pathname = `/${dbName}`;
    return new Sequelize(u.toString(), { logging: false, dialectOptions: { charset: 'utf8mb4' } });
  }

  before(async () => {
    if (mysqlUrl) {
      const admin = new Sequelize(mysqlUrl, { logging: false });
      await admin.query(`CREATE DATABASE IF NOT EXISTS \`${dbName}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`);
      await admin.close();
      sequelize = connect();
    } else {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ckv-migr-'));
      sequelize = new Sequelize({ dialect: 'sqlite', storage: path.join(dir, 'm.sqlite'), logging: false });
    }
  });

  after(async () => {
    if (mysqlUrl) await sequelize.query(`DROP DATABASE IF EXISTS \`${dbName}\``);
    await sequelize.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  async function tables() {
    const names = await sequelize.getQueryInterface().showAllTables();
    return names.map(n => (typeof n === 'string' ? n : (n as { tableName: string }).tableName)).filter(n => n !== 'SequelizeMeta').sort();
  }

  it('applies every migration exactly once, also when two servers start together on MySQL, then none', async () => {
    // On MySQL a second connection pool plays a second instance starting at the same moment.
    const other = mysqlUrl ? connect() : undefined;
    let runs: string[][];
    try {
      runs = await Promise.all([ migrateUp(sequelize), ...(other ? [ migrateUp(other) ] : []) ]);
    } finally {
      await other?.close();
    }
    const applied = runs.flat();
    assert.ok(applied.length >= 1);
    assert.strictEqual(new Set(applied).size, applied.length);
    assert.deepStrictEqual(await tables(), [ 'app_installs', 'auto_auth_configs', 'device_log', 'devices', 'kv_entries' ]);
    assert.deepStrictEqual(await migrateUp(sequelize), []);
  });

  it('stores keys byte-exactly: case, trailing spaces and unicode forms are different keys', async () => {
    const now = new Date();
    await sequelize.query('INSERT INTO devices (uuid, name, revision, createdAt, updatedAt) VALUES (?, ?, 0, ?, ?)', { replacements: [ 'm-dev', 'x', now, now ] });
    const [[ dev ]] = await sequelize.query('SELECT id FROM devices WHERE uuid = ?', { replacements: [ 'm-dev' ] }) as [Array<{ id: number }>, unknown];
    const keys = [ 'a', 'A', 'a ', 'é', 'e\u0301' ];
    for (const key of keys) {
      await sequelize.query('INSERT INTO kv_entries (deviceId, `key`, value, revision, createdAt, updatedAt) VALUES (?, ?, ?, 0, ?, ?)', {
        replacements: [ dev.id, key, JSON.stringify({ key }), now, now ],
      });
    }
    for (const key of keys) {
      const [ rows ] = await sequelize.query('SELECT value FROM kv_entries WHERE deviceId = ? AND `key` = ?', { replacements: [ dev.id, key ] }) as [Array<{ value: string }>, unknown];
      assert.deepStrictEqual(rows.map(r => JSON.parse(r.value)), [{ key }]);
    }
    const [ uuidRows ] = await sequelize.query('SELECT id FROM devices WHERE uuid = ?', { replacements: [ 'M-DEV' ] }) as [unknown[], unknown];
    assert.deepStrictEqual(uuidRows, []);
  });

  it('reverts every migration', async () => {
    await migrateDownAll(sequelize);
    assert.deepStrictEqual(await tables(), []);
  });
});
