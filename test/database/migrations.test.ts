import assert from 'node:assert';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Sequelize } from 'sequelize';
import bcrypt from 'bcryptjs';
import { MIGRATIONS_DIR, migrateDownAll, migrateUp } from '../../app/lib/migrator';

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
    assert.deepStrictEqual(await tables(), [ 'accounts', 'app_installs', 'auto_auth_configs', 'device_log', 'devices', 'kv_entries' ]);
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

  it('a 1.1-shaped database of this server, with data, migrates in place without loss', async () => {
    const FIRST = '20251101000000-create-schema.js';
    const ALL = [ 'accounts', 'app_installs', 'auto_auth_configs', 'device_log', 'devices', 'kv_entries' ];
    await migrateDownAll(sequelize);
    // The schema as this server's 1.1 release left it: the first migration only.
    const firstOnly = fs.mkdtempSync(path.join(os.tmpdir(), 'ckv-migr-1.1-'));
    try {
      // database/ as a copy: migrations/<the first one> and what migrations share (collation.js).
      fs.mkdirSync(path.join(firstOnly, 'migrations'));
      fs.copyFileSync(path.join(MIGRATIONS_DIR, FIRST), path.join(firstOnly, 'migrations', FIRST));
      fs.copyFileSync(path.join(MIGRATIONS_DIR, '..', 'collation.js'), path.join(firstOnly, 'collation.js'));
      assert.deepStrictEqual(await migrateUp(sequelize, path.join(firstOnly, 'migrations')), [ FIRST ]);
    } finally {
      fs.rmSync(firstOnly, { recursive: true, force: true });
    }
    assert.deepStrictEqual(await tables(), [ 'app_installs', 'devices', 'kv_entries' ]);

    const q = (sql: string, replacements: unknown[] = []) => sequelize.query(sql, { replacements });
    // Sequelize would drop the milliseconds of a Date replacement on MySQL: give the DATETIME(3) text there.
    const at = (iso: string) => (mysqlUrl ? iso.replace('T', ' ').replace('Z', '') : new Date(iso));
    const hash = bcrypt.hashSync('room-password', 10);
    const devices: Array<[string, string | null, string | null, string | null, number, string, string]> = [
      [ 'room-101', 'Room 101', null, null, 3, '2025-10-25T08:30:00.123Z', '2025-10-26T09:00:00.456Z' ],
      [ 'locked', '锁定的设备', hash, '门牌号', 1, '2025-11-01T00:00:00.001Z', '2025-11-02T00:00:00.999Z' ],
      [ ' 教室 A/b ', null, null, null, 0, '2025-12-31T23:59:59.999Z', '2025-12-31T23:59:59.999Z' ],
    ];
    for (const [ uuid, name, password, hint, revision, created, updated ] of devices) {
      await q('INSERT INTO devices (uuid, name, password, passwordHint, revision, createdAt, updatedAt) VALUES (?, ?, ?, ?, ?, ?, ?)',
        [ uuid, name, password, hint, revision, at(created), at(updated) ]);
    }
    const [ ids ] = await q('SELECT id, uuid FROM devices ORDER BY id') as [Array<{ id: number; uuid: string }>, unknown];
    const idOf = (uuid: string) => ids.find(r => r.uuid === uuid)!.id;
    const installs: Array<[string, string, string, string, string | null, string]> = [
      [ '019a1b2c-3d4e-7000-8a1b-2c3d4e5f6a7b', 'room-101', 'classworks', 'a'.repeat(64), null, '2025-10-25T08:31:00.000Z' ],
      [ '019a1b2c-3d4e-7001-8a1b-2c3d4e5f6a7b', 'room-101', 'cli', 'b'.repeat(64), '前屏', '2025-10-25T08:32:00.007Z' ],
      [ 'legacy-install-id', 'locked', 'classworks', 'c'.repeat(64), 'note', '2025-11-01T10:00:00.500Z' ],
    ];
    for (const [ id, uuid, appId, token, note, installed ] of installs) {
      await q('INSERT INTO app_installs (id, deviceId, appId, token, note, installedAt, updatedAt) VALUES (?, ?, ?, ?, ?, ?, ?)',
        [ id, idOf(uuid), appId, token, note, at(installed), at(installed) ]);
    }
    const entries: Array<[string, string, unknown, string | null, number, string]> = [
      [ 'room-101', 'a', { x: 1, nested: { deep: [ 1, 2, 3 ] } }, '10.0.0.1', 1, '2025-10-25T08:33:00.010Z' ],
      [ 'room-101', 'A', [], null, 2, '2025-10-25T08:34:00.020Z' ],
      [ 'room-101', 'classworks-list-main', [{ name: '张三' }, '李四' ], '::1', 3, '2025-10-25T08:35:00.030Z' ],
      [ 'locked', 'k', { s: 'x\u0000y', emoji: '😀' }, '192.168.1.9', 1, '2025-11-01T12:00:00.000Z' ],
    ];
    for (const [ uuid, key, value, ip, revision, created ] of entries) {
      await q('INSERT INTO kv_entries (deviceId, `key`, value, creatorIp, revision, createdAt, updatedAt) VALUES (?, ?, ?, ?, ?, ?, ?)',
        [ idOf(uuid), key, JSON.stringify(value), ip, revision, at(created), at(created) ]);
    }

    // Every row of every 1.1 table, as stored, before and after.
    const snapshot = async () => ({
      devices: (await q('SELECT id, uuid, name, password, passwordHint, revision, createdAt, updatedAt FROM devices ORDER BY id'))[0],
      installs: (await q('SELECT id, deviceId, appId, token, note, installedAt, updatedAt FROM app_installs ORDER BY id'))[0],
      entries: (await q('SELECT deviceId, `key`, value, creatorIp, revision, createdAt, updatedAt FROM kv_entries ORDER BY deviceId, revision'))[0],
    });
    const before = await snapshot();
    assert.strictEqual(before.devices.length, 3);
    assert.strictEqual(before.installs.length, 3);
    assert.strictEqual(before.entries.length, 4);

    const applied = await migrateUp(sequelize);
    assert.ok(applied.includes('20261206000000-classworks-1-3.js'), applied.join());
    assert.ok(!applied.includes(FIRST));
    assert.deepStrictEqual(await tables(), ALL);
    assert.deepStrictEqual(await snapshot(), before);

    // Values and dates intact (not merely unchanged text): parsed back to what was written.
    const [ stored ] = await q('SELECT d.uuid, e.`key`, e.value FROM kv_entries e JOIN devices d ON d.id = e.deviceId') as [Array<{ uuid: string; key: string; value: string }>, unknown];
    for (const [ uuid, key, value ] of entries) {
      assert.deepStrictEqual(JSON.parse(stored.find(r => r.uuid === uuid && r.key === key)!.value), value, key);
    }
    const [ dates ] = await q('SELECT uuid, createdAt, updatedAt FROM devices') as [Array<{ uuid: string; createdAt: Date | string; updatedAt: Date | string }>, unknown];
    for (const [ uuid, , , , , created, updated ] of devices) {
      const row = dates.find(r => r.uuid === uuid)!;
      assert.strictEqual(new Date(row.createdAt).toISOString(), created);
      assert.strictEqual(new Date(row.updatedAt).toISOString(), updated);
    }
    const [[ locked ]] = await q('SELECT password FROM devices WHERE uuid = ?', [ 'locked' ]) as [Array<{ password: string }>, unknown];
    assert.ok(bcrypt.compareSync('room-password', locked.password));

    // New in 1.3: namespace = uuid; tokens writable, without a kind; one default config per device.
    const [ namespaces ] = await q('SELECT uuid, namespace FROM devices') as [Array<{ uuid: string; namespace: string }>, unknown];
    for (const r of namespaces) assert.strictEqual(r.namespace, r.uuid);
    const [ kinds ] = await q('SELECT deviceType, isReadOnly FROM app_installs') as [Array<{ deviceType: string | null; isReadOnly: unknown }>, unknown];
    assert.deepStrictEqual(kinds.map(k => [ k.deviceType, Number(k.isReadOnly) ]), [[ null, 0 ], [ null, 0 ], [ null, 0 ]]);
    const [ configs ] = await q('SELECT id, deviceId, password, deviceType, isReadOnly, createdAt, updatedAt FROM auto_auth_configs ORDER BY deviceId') as
      [Array<{ id: string; deviceId: number; password: string | null; deviceType: string; isReadOnly: unknown; createdAt: unknown; updatedAt: unknown }>, unknown];
    assert.deepStrictEqual(configs.map(c => [ c.deviceId, c.password, c.deviceType, Number(c.isReadOnly) ]), ids.map(r => [ r.id, null, 'classroom', 0 ]));
    assert.strictEqual(new Set(configs.map(c => c.id)).size, 3);
    for (const c of configs) {
      assert.match(c.id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      assert.ok(!Number.isNaN(new Date(c.createdAt as string).getTime()));
    }
    const [ log ] = await q('SELECT deviceId FROM device_log') as [unknown[], unknown];
    assert.deepStrictEqual(log, []);
    // Accounts (§8): none yet, every device unbound.
    assert.ok(applied.includes('20261206100000-accounts.js'), applied.join());
    const [ bound ] = await q('SELECT uuid, accountId FROM devices ORDER BY id') as [Array<{ uuid: string; accountId: string | null }>, unknown];
    assert.deepStrictEqual(bound, devices.map(([ uuid ]) => ({ uuid, accountId: null })));

    // Reverting what was applied gives the 1.1 database back, every row included; then forward again.
    for (const name of [ ...applied ].reverse()) {
      const migration = await import(path.join(MIGRATIONS_DIR, name)) as { down(qi: unknown, s: unknown): Promise<void> };
      await migration.down(sequelize.getQueryInterface(), Sequelize);
      await q('DELETE FROM SequelizeMeta WHERE name = ?', [ name ]);
    }
    assert.deepStrictEqual(await tables(), [ 'app_installs', 'devices', 'kv_entries' ]);
    assert.deepStrictEqual(await snapshot(), before);
    assert.deepStrictEqual(await migrateUp(sequelize), applied);
    assert.deepStrictEqual(await snapshot(), before);

    // And the whole chain still reverts and re-applies.
    await migrateDownAll(sequelize);
    assert.deepStrictEqual(await tables(), []);
    assert.ok((await migrateUp(sequelize)).includes(FIRST));
    assert.deepStrictEqual(await tables(), ALL);
    await migrateDownAll(sequelize);
  });
});
