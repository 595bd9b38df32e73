import assert from 'node:assert';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Writable } from 'node:stream';
import { app } from 'egg-mock/bootstrap';
import { Client } from 'pg';
import { main } from '../../../app/command/import/cli';
import { closeAllClients, openJoined, startServer, stopServer } from '../../support/socket';
import { createDevice } from '../../support/factories';
import {
  createForeignMysql, createForeignPg, createMysql11, createPg13, dropMysql, dropPg, Fixture, fixture, FxKey,
  insertMysqlKey, insertPgKey, mysqlSource, Version,
} from './sources';

/**
 * `npm run import` (CONTRACT.md §9) from a real ClassworksKV 1.3 database on PostgreSQL and a
 * real 1.1 database on MariaDB into this server's database (MySQL or the embedded SQLite,
 * whichever the suite runs on), checked through this server's HTTP API and sockets.
 */

const sink = (chunks: string[]) => new Writable({
  write(chunk, _enc, done) {
    chunks.push(String(chunk));
    done();
  },
});

/** The environment the importer sees: the same target as the app under test. */
function importEnv(): Record<string, string | undefined> {
  const env = { ...process.env };
  if (app.model.getDialect() === 'sqlite') {
    delete env.DATABASE_URL;
    env.SQLITE_PATH = (app.config.sequelize as { storage: string }).storage;
  }
  return env;
}

async function runImport(...args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(args, { out: sink(out), err: sink(err), env: importEnv(), cwd: process.cwd() });
  return { code, out: out.join(''), err: err.join('') };
}

const iso = (d: Date) => d.toISOString();
const enc = encodeURIComponent;

async function counts() {
  const m = app.model;
  return {
    accounts: await m.Account.count(), devices: await m.Device.count(), tokens: await m.AppInstall.count(),
    configs: await m.AutoAuthConfig.count(), keys: await m.KvEntry.count(),
  };
}

/** The embedded default has no shared state to tell: the server is stopped during an import (README). */
function restartIfEmbedded() {
  if (app.settings.redisUrl) return;
  app.valueCache.clear();
  app.tokenCache.clear();
  (app.sharedState as unknown as { revisions?: Map<unknown, unknown> }).revisions?.clear();
}

function suite(version: Version) {
  const pg = version === '1.3';
  const dbName = pg ? 'imp_src_t13' : 'imp_src_t11';

  describe(`from ClassworksKV ${version} on ${pg ? 'PostgreSQL' : 'MySQL'}`, () => {
    let fx: Fixture;
    let url: string;
    let serverUrl: string;
    const tokenOf = (deviceId: number, i = 0) => fx.installs.filter(x => x.deviceId === deviceId)[i].token;
    const writable = () => fx.installs.find(i => i.deviceId === 1 && !i.isReadOnly)!.token;
    const keysOf = (deviceId: number) => fx.keys.filter(k => k.deviceId === deviceId);
    const namespaceOf = (d: Fixture['devices'][number]) => d.namespace ?? d.uuid;
    const addKey = async (k: FxKey) => {
      if (pg) {
        const c = new Client({ connectionString: url });
        await c.connect();
        await insertPgKey(c, k);
        await c.end();
      } else {
        const c = await mysqlSource(url);
        await insertMysqlKey(c, k);
        await c.end();
      }
    };
    const removeKeys = async (...keys: string[]) => {
      if (pg) {
        const c = new Client({ connectionString: url });
        await c.connect();
        await c.query('DELETE FROM "KVStore" WHERE "key" = ANY($1)', [ keys ]);
        await c.end();
      } else {
        const c = await mysqlSource(url);
        await c.query('DELETE FROM `KVStore` WHERE `key` IN (?)', [ keys ]);
        await c.end();
      }
    };

    before(async () => {
      fx = fixture(version);
      url = pg ? await createPg13(dbName, fx) : await createMysql11(dbName, fx);
      serverUrl = await startServer();
    });

    // test/.setup.ts empties the server's tables before every test; accounts too.
    beforeEach(() => app.model.query('DELETE FROM accounts'));

    /** Imports the source into the empty target (every test starts from a clean world). */
    async function imported() {
      const r = await runImport(url);
      assert.strictEqual(r.code, 0, r.out + r.err);
      return r;
    }

    after(async () => {
      closeAllClients();
      await stopServer();
      if (pg) await dropPg(dbName);
      else await dropMysql(dbName);
    });

    it('--dry-run: reports what would be copied and writes nothing', async () => {
      const r = await runImport(url, '--dry-run');
      assert.strictEqual(r.code, 0, r.out + r.err);
      assert.match(r.out, /would copy:/);
      assert.match(r.out, new RegExp('devices\\s+3\\s+3\\s+0\\s+0\\s+0'));
      assert.match(r.out, new RegExp(`keys\\s+${fx.keys.length}\\s+${fx.keys.length}\\s+0\\s+0\\s+0`));
      assert.match(r.out, /Dry run: nothing was written\./);
      assert.deepStrictEqual(await counts(), { accounts: 0, devices: 0, tokens: 0, configs: 0, keys: 0 });
    });

    it('copies everything and verifies every row and value (exit 0)', async () => {
      const r = await runImport(url);
      assert.strictEqual(r.code, 0, r.out + r.err);
      assert.match(r.out, /Verification OK\./);
      assert.match(r.out, new RegExp(`copied in [\\d.]+ s: 2 accounts, 3 devices, 6 tokens, ${pg ? 5 : 3} auto-auth, ${fx.keys.length} keys`));
      // 1.1 has no auto-auth configs: every device gets the default one, as the 1.3 migration gives.
      assert.deepStrictEqual(await counts(), { accounts: 2, devices: 3, tokens: 6, configs: pg ? 5 : 3, keys: fx.keys.length });
      assert.doesNotMatch(r.out + r.err, /refresh-token-of-wang|devpass|classpw/);
      for (const i of fx.installs) assert.ok(!(r.out + r.err).includes(i.token), 'no full token in the report');
    });

    it('every token authenticates with its device, with its appId, note, kind and dates', async () => {
      await imported();
      for (const i of fx.installs) {
        const d = fx.devices.find(x => x.id === i.deviceId)!;
        const res = await app.httpRequest().get('/kv/_token').set('x-app-token', i.token);
        assert.strictEqual(res.status, 200, JSON.stringify(res.body));
        assert.deepStrictEqual({ ...res.body, device: { ...res.body.device, id: 0 } }, {
          success: true, token: i.token, appId: i.appId, deviceType: i.deviceType, isReadOnly: i.isReadOnly, note: i.note,
          installedAt: iso(i.installedAt), updatedAt: iso(i.updatedAt),
          device: { id: 0, uuid: d.uuid, name: d.name, namespace: namespaceOf(d) },
        });
      }
    });

    it('read-only tokens stay read-only (403), writable ones write', async () => {
      await imported();
      const readOnly = fx.installs.filter(i => i.isReadOnly);
      assert.strictEqual(readOnly.length, pg ? 3 : 0);
      for (const i of readOnly) {
        const res = await app.httpRequest().post('/kv/ro-probe').set('x-app-token', i.token).send({ x: 1 });
        assert.strictEqual(res.status, 403);
        assert.strictEqual(res.body.message, '当前token为只读模式,无法修改数据');
      }
      const res = await app.httpRequest().get('/kv/ro-probe').set('x-app-token', tokenOf(1));
      assert.strictEqual(res.status, 404);
    });

    it('every key: value deep-equal, creatorIp, createdAt and updatedAt kept; keys are case-sensitive', async () => {
      await imported();
      for (const k of fx.keys) {
        const token = tokenOf(k.deviceId);
        const value = await app.httpRequest().get(`/kv/${enc(k.key)}`).set('x-app-token', token).buffer(true)
          .parse((res, cb) => {
            let text = '';
            res.on('data', (c: Buffer) => { text += c.toString('utf8'); });
            res.on('end', () => cb(null, text));
          });
        assert.strictEqual(value.status, 200, k.key);
        assert.deepStrictEqual(JSON.parse(value.body as string), k.value, k.key);
        const meta = await app.httpRequest().get(`/kv/${enc(k.key)}/metadata`).set('x-app-token', token);
        assert.strictEqual(meta.status, 200);
        assert.deepStrictEqual(meta.body.metadata, { creatorIp: k.creatorIp ?? '', createdAt: iso(k.createdAt), updatedAt: iso(k.updatedAt) }, k.key);
      }
      const list = await app.httpRequest().get('/kv/_keys?limit=1000').set('x-app-token', tokenOf(1));
      assert.deepStrictEqual([ ...list.body.keys ].sort(), keysOf(1).map(k => k.key).sort());
      const none = await app.httpRequest().get('/kv/_keys').set('x-app-token', tokenOf(7));
      assert.strictEqual(none.body.total_rows, 0);
    });

    it('devices: names, hints and dates kept; the old bcrypt (cost 8) device passwords verify', async () => {
      await imported();
      for (const d of fx.devices) {
        const info = await app.httpRequest().get('/kv/_info').set('x-app-token', tokenOf(d.id));
        assert.strictEqual(info.status, 200);
        assert.strictEqual(info.body.device.name, d.name);
        assert.strictEqual(info.body.device.createdAt, iso(d.createdAt));
        assert.strictEqual(info.body.device.updatedAt, iso(d.updatedAt));
        const apps = app.httpRequest().get(`/apps/devices/${enc(d.uuid)}/apps`);
        if (d.plainPassword) {
          const ok = await app.httpRequest().get(`/apps/devices/${enc(d.uuid)}/apps`).set('x-device-password', d.plainPassword);
          assert.strictEqual(ok.status, 200, JSON.stringify(ok.body));
          assert.deepStrictEqual(ok.body.apps.map((a: { token: string }) => a.token).sort(), fx.installs.filter(i => i.deviceId === d.id).map(i => i.token).sort());
          const wrong = await app.httpRequest().get(`/apps/devices/${enc(d.uuid)}/apps`).set('x-device-password', 'wrong');
          assert.strictEqual(wrong.status, 401);
          assert.strictEqual(wrong.body.message, '密码错误');
          const hint = await app.httpRequest().get(`/devices/${enc(d.uuid)}/password-hint`);
          assert.strictEqual(hint.body.passwordHint ?? hint.body.hint ?? null, d.passwordHint);
        } else {
          assert.strictEqual((await apps).status, 200);
        }
      }
    });

    it('namespace login (POST /apps/auth/token) answers as the source would', async () => {
      await imported();
      const login = (body: object) => app.httpRequest().post('/apps/auth/token').send(body);
      if (pg) {
        const student = await login({ namespace: 'class-1a', password: 'classpw', appId: 'new-app' });
        assert.strictEqual(student.status, 201, JSON.stringify(student.body));
        assert.deepStrictEqual([ student.body.deviceType, student.body.isReadOnly ], [ 'student', true ]);
        const teacher = await login({ namespace: 'class-1a', password: 'teacherpw', appId: 'new-app' });
        assert.deepStrictEqual([ teacher.status, teacher.body.deviceType, teacher.body.isReadOnly ], [ 201, 'teacher', false ]);
        const parent = await login({ namespace: 'class-3', password: '三班家长', appId: 'new-app' });
        assert.deepStrictEqual([ parent.status, parent.body.deviceType, parent.body.isReadOnly ], [ 201, 'parent', true ]);
        const wrong = await login({ namespace: 'class-1a', password: 'nope', appId: 'new-app' });
        assert.deepStrictEqual([ wrong.status, wrong.body.message ], [ 401, '密码不正确' ]);
        // The password-less config of a device with a device password grants nothing here (§6.1, fixed).
        const open = await login({ namespace: 'class-1a', appId: 'new-app' });
        assert.deepStrictEqual([ open.status, open.body.message ], [ 401, '需要提供密码' ]);
        // Config passwords are stored hashed.
        const stored = await app.model.AutoAuthConfig.findAll({ raw: true }) as unknown as Array<{ password: string | null }>;
        assert.ok(stored.every(c => c.password === null || /^\$2[ab]\$1\d\$/.test(c.password)));
      } else {
        // 1.1 devices answer to their uuid and got the default config (no password, classroom).
        const open = await login({ namespace: 'imp-dev-1', appId: 'new-app' });
        assert.deepStrictEqual([ open.status, open.body.message ], [ 401, '需要提供密码' ]);
      }
      const d2 = await login({ namespace: 'imp-dev-2', appId: 'new-app' });
      assert.strictEqual(d2.status, 201, JSON.stringify(d2.body));
      assert.deepStrictEqual([ d2.body.deviceType, d2.body.isReadOnly ], [ 'classroom', false ]);
      const own = await app.httpRequest().get('/kv/settings').set('x-app-token', d2.body.token);
      assert.deepStrictEqual(own.body, { theme: 'dark', size: 14 });
    });

    it('accounts and their bindings kept (ids too)', async () => {
      await imported();
      const accounts = await app.model.Account.findAll({ raw: true, order: [[ 'id', 'ASC' ]] }) as unknown as Array<Record<string, any>>;
      assert.deepStrictEqual(accounts.map(a => ({
        id: a.id, provider: a.provider, providerId: a.providerId, email: a.email, name: a.name, avatarUrl: a.avatarUrl,
        providerData: a.providerData === null ? null : JSON.parse(a.providerData), tokenVersion: a.tokenVersion,
        createdAt: new Date(a.createdAt).toISOString(), updatedAt: new Date(a.updatedAt).toISOString(),
      })), fx.accounts.map(a => ({
        id: a.id, provider: a.provider, providerId: a.providerId, email: a.email, name: a.name, avatarUrl: a.avatarUrl,
        providerData: a.providerData, tokenVersion: a.tokenVersion, createdAt: iso(a.createdAt), updatedAt: iso(a.updatedAt),
      })));
      // Only the refresh token's SHA-256 is kept, never the token.
      assert.strictEqual(accounts[0].refreshTokenHash === null, !pg);
      const devices = await app.model.Device.findAll({ raw: true }) as unknown as Array<{ uuid: string; accountId: string | null }>;
      for (const d of fx.devices) assert.strictEqual(devices.find(x => x.uuid === d.uuid)!.accountId, d.accountId, d.uuid);
    });

    it('revisions: a device starts at its number of imported keys; _changes and the value cache agree', async () => {
      await imported();
      for (const d of fx.devices) {
        const n = keysOf(d.id).length;
        const row = await app.model.Device.findOne({ where: { uuid: d.uuid }, raw: true }) as unknown as { id: number; revision: number | string };
        assert.strictEqual(Number(row.revision), n, d.uuid);
        const entries = await app.model.KvEntry.findAll({ where: { deviceId: row.id }, raw: true }) as unknown as Array<{ revision: number | string }>;
        assert.deepStrictEqual(entries.map(e => Number(e.revision)).sort((a, b) => a - b), Array.from({ length: n }, (_, i) => i + 1));
        const latest = await app.httpRequest().get(`/kv/_changes?since=${n}`).set('x-app-token', tokenOf(d.id));
        assert.deepStrictEqual([ latest.status, latest.body ], [ 200, { changes: [], revision: n, more: false }]);
        if (n > 0) {
          // The source has no history: asking for it is answered like trimmed history (re-read the keys).
          const old = await app.httpRequest().get('/kv/_changes?since=0').set('x-app-token', tokenOf(d.id));
          assert.strictEqual(old.status, 410);
          assert.deepStrictEqual([ old.body.code, old.body.details ], [ 'CHANGES_EXPIRED', { oldest: n, revision: n }]);
        }
        // With Redis, every worker's value cache is told the imported revisions.
        if (app.settings.redisUrl && n > 0) assert.deepStrictEqual(await app.sharedState.kvRevisions([ row.id ]), [ n ]);
      }
    });

    it('a second run copies nothing (idempotent)', async () => {
      await imported();
      const before = await counts();
      const r = await runImport(url);
      assert.strictEqual(r.code, 0, r.out + r.err);
      assert.match(r.out, /copied in [\d.]+ s: 0 accounts, 0 devices, 0 tokens, 0 auto-auth, 0 keys\n/);
      assert.match(r.out, /Verification OK\./);
      assert.deepStrictEqual(await counts(), before);
    });

    it('a socket joined to an imported device receives the next revision on a write', async () => {
      await imported();
      const n = keysOf(1).length;
      const client = await openJoined(serverUrl, { token: writable() });
      const res = await app.httpRequest().post('/kv/live').set('x-app-token', writable()).send({ after: 'import' });
      assert.strictEqual(res.status, 200);
      const change = await client.waitFor('kv-key-changed', p => p.key === 'live');
      assert.strictEqual(change.revision, n + 1);
      assert.strictEqual(change.created, true);
    });

    it('a token (and, on 1.3, a namespace) already used by another device here: reported, nothing written; overwrite moves them', async () => {
      // A device registered here first, holding one of the source's tokens (and namespace).
      const other = await createDevice({ uuid: 'here-first' });
      const taken = fx.installs[1];
      const now = new Date();
      await app.model.AppInstall.create({ id: 'here-install-1', deviceId: other.id, appId: 'here', token: taken.token, note: null, deviceType: null, isReadOnly: false, installedAt: now, updatedAt: now });
      if (pg) await app.model.Device.update({ namespace: 'class-1a' }, { where: { id: other.id } });
      const before = await counts();

      const r = await runImport(url);
      assert.strictEqual(r.code, 2, r.out + r.err);
      assert.ok(r.out.includes(`token ${taken.token.slice(0, 8)}… of device imp-dev-1: token belongs to another device here\n`), r.out);
      assert.ok(!r.out.includes(taken.token), 'the whole token is never shown');
      if (pg) assert.match(r.out, /device imp-dev-1: namespace "class-1a" belongs to device here-first here\n/);
      assert.match(r.out, /Stopped: nothing was written/);
      assert.deepStrictEqual(await counts(), before);
      const stillThere = await app.httpRequest().get('/kv/_token').set('x-app-token', taken.token);
      assert.strictEqual(stillThere.body.device.uuid, 'here-first');

      const o = await runImport(url, '--on-conflict=overwrite');
      assert.strictEqual(o.code, 0, o.out + o.err);
      assert.match(o.out, /Verification OK\./);
      restartIfEmbedded();
      const moved = await app.httpRequest().get('/kv/_token').set('x-app-token', taken.token);
      assert.deepStrictEqual([ moved.status, moved.body.device.uuid, moved.body.isReadOnly ], [ 200, 'imp-dev-1', taken.isReadOnly ]);
      if (pg) {
        const login = await app.httpRequest().post('/apps/auth/token').send({ namespace: 'class-1a', password: 'classpw', appId: 'x' });
        assert.deepStrictEqual([ login.status, login.body.deviceType ], [ 201, 'student' ]);
        // The other device answers to its uuid again.
        const own = await app.model.Device.findOne({ where: { uuid: 'here-first' }, raw: true }) as unknown as { namespace: string | null };
        assert.strictEqual(own.namespace, null);
      }
    });

    describe('conflicts: this server\'s data moved on after an import, and the source too', () => {
      beforeEach(async () => {
        await imported();
        // Here: a key and a device name changed. There: a key was added to each of two devices.
        assert.strictEqual((await app.httpRequest().post('/kv/obj').set('x-app-token', writable()).send({ changed: 'here' })).status, 200);
        const rename = await app.httpRequest().put('/devices/imp-dev-2/name').send({ name: 'renamed here' });
        assert.strictEqual(rename.status, 200, JSON.stringify(rename.body));
        const at = new Date('2025-12-01T00:00:00.000Z');
        await addKey({ deviceId: 1, key: 'added', value: { late: true }, creatorIp: '198.51.100.1', createdAt: at, updatedAt: at });
        await addKey({ deviceId: 2, key: 'added-2', value: [ 2 ], creatorIp: '198.51.100.2', createdAt: at, updatedAt: at });
      });
      afterEach(() => removeKeys('added', 'added-2'));

      it('without a resolution: a clear report, nothing written (exit 2)', async () => {
        const before = await counts();
        const r = await runImport(url);
        assert.strictEqual(r.code, 2, r.out + r.err);
        assert.match(r.out, /conflicts \(2\):/);
        assert.match(r.out, /key "obj" of device imp-dev-1: here with other value, creatorIp, updatedAt\n/);
        assert.match(r.out, /device imp-dev-2: here with other name, updatedAt\n/);
        assert.match(r.out, /Stopped: nothing was written: 2 conflict\(s\)\. Re-run with --on-conflict=skip .* or --on-conflict=overwrite/);
        assert.deepStrictEqual(await counts(), before);
        assert.strictEqual((await app.httpRequest().get('/kv/added').set('x-app-token', writable())).status, 404);
      });

      it('--dry-run with a resolution reports and writes nothing', async () => {
        const before = await counts();
        const dry = await runImport(url, '--dry-run', '--on-conflict=overwrite');
        assert.strictEqual(dry.code, 0, dry.out);
        assert.match(dry.out, /keys\s+\d+\s+2\s+\d+\s+1\s+0\n/);
        assert.deepStrictEqual(await counts(), before);
        assert.strictEqual((await app.httpRequest().get('/kv/added').set('x-app-token', writable())).status, 404);
      });

      it('--on-conflict=skip keeps this server\'s rows and copies the rest', async () => {
        const r = await runImport(url, '--on-conflict=skip');
        assert.strictEqual(r.code, 0, r.out + r.err);
        // imp-dev-2 is skipped with its rows; "added" of imp-dev-1 is copied.
        assert.match(r.out, /copied in [\d.]+ s: 0 accounts, 0 devices, 0 tokens, 0 auto-auth, 1 keys \(2 conflict\(s\) skipped\)/);
        assert.match(r.out, /Verification OK\./);
        const obj = await app.httpRequest().get('/kv/obj').set('x-app-token', writable());
        assert.deepStrictEqual(obj.body, { changed: 'here' });
        const added = await app.httpRequest().get('/kv/added').set('x-app-token', writable());
        assert.deepStrictEqual(added.body, { late: true });
        const meta = await app.httpRequest().get('/kv/added/metadata').set('x-app-token', writable());
        assert.deepStrictEqual(meta.body.metadata, { creatorIp: '198.51.100.1', createdAt: '2025-12-01T00:00:00.000Z', updatedAt: '2025-12-01T00:00:00.000Z' });
        assert.strictEqual((await app.httpRequest().get('/kv/added-2').set('x-app-token', tokenOf(2))).status, 404);
        // The copied key took the device's next revision (after the change of "obj").
        const n = keysOf(1).length;
        // With its change-log record: _changes stays gap-free.
        const changes = await app.httpRequest().get(`/kv/_changes?since=${n + 1}`).set('x-app-token', writable());
        assert.deepStrictEqual([ changes.status, changes.body ], [ 200, {
          changes: [{ uuid: 'imp-dev-1', key: 'added', action: 'upsert', created: true, updatedAt: '2025-12-01T00:00:00.000Z', revision: n + 2, batch: true }],
          revision: n + 2, more: false,
        }]);
      });

      it('--on-conflict=overwrite takes the source\'s rows; the running server serves them fresh', async () => {
        // Cached by this worker at the current revision.
        assert.deepStrictEqual((await app.httpRequest().get('/kv/obj').set('x-app-token', writable())).body, { changed: 'here' });
        const r = await runImport(url, '--on-conflict=overwrite');
        assert.strictEqual(r.code, 0, r.out + r.err);
        assert.match(r.out, /copied in [\d.]+ s: 0 accounts, 1 devices, 0 tokens, 0 auto-auth, 3 keys \(2 conflict\(s\) overwritten\)/);
        assert.match(r.out, /Verification OK\./);
        restartIfEmbedded();
        const obj = await app.httpRequest().get('/kv/obj').set('x-app-token', writable());
        assert.deepStrictEqual(obj.body, fx.keys.find(k => k.key === 'obj')!.value);
        const info = await app.httpRequest().get('/kv/_info').set('x-app-token', tokenOf(2));
        assert.strictEqual(info.body.device.name, null);
        assert.deepStrictEqual((await app.httpRequest().get('/kv/added-2').set('x-app-token', tokenOf(2))).body, [ 2 ]);
        const again = await runImport(url);
        assert.strictEqual(again.code, 0, again.out);
        assert.match(again.out, /copied in [\d.]+ s: 0 accounts, 0 devices, 0 tokens, 0 auto-auth, 0 keys\n/);
      });
    });
  });
}

describe('test/command/import/cli.test.ts', () => {
  // test/.setup.ts does not empty `accounts`: leave none behind for the next file.
  after(() => app.model.query('DELETE FROM accounts'));

  suite('1.3');
  suite('1.1');

  describe('--dry-run into an embedded database that does not exist yet', () => {
    it('lists the migrations it would apply, plans against an empty database, creates no file', async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ckv-import-'));
      const file = path.join(dir, 'new.sqlite');
      const fx = fixture('1.3');
      const url = await createPg13('imp_src_tdry', fx);
      try {
        const out: string[] = [];
        const err: string[] = [];
        const env: Record<string, string | undefined> = { ...process.env, SQLITE_PATH: file };
        delete env.DATABASE_URL;
        delete env.REDIS_URL;
        const code = await main([ url, '--dry-run' ], { out: sink(out), err: sink(err), env, cwd: process.cwd() });
        assert.strictEqual(code, 0, out.join('') + err.join(''));
        assert.match(out.join(''), /migrations pending \(applied before a real import\): 20251101000000-create-schema\.js, 20261206000000-classworks-1-3\.js, 20261206100000-accounts\.js/);
        assert.match(out.join(''), new RegExp(`keys\\s+${fx.keys.length}\\s+${fx.keys.length}\\s+0\\s+0\\s+0\n`));
        assert.strictEqual(fs.existsSync(file), false);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
        await dropPg('imp_src_tdry');
      }
    });
  });

  describe('unusable sources: one clear line on stderr, exit code 1, nothing written', () => {
    beforeEach(() => app.model.query('DELETE FROM accounts'));
    after(async () => {
      await dropPg('imp_src_foreign');
      await dropMysql('imp_src_foreign');
    });

    const expectOneLine = async (r: { code: number; out: string; err: string }, pattern: RegExp) => {
      assert.strictEqual(r.code, 1, r.out + r.err);
      assert.strictEqual(r.err.split('\n').filter(Boolean).length, 1, r.err);
      assert.match(r.err, pattern);
      assert.deepStrictEqual(await counts(), { accounts: 0, devices: 0, tokens: 0, configs: 0, keys: 0 });
    };

    it('PostgreSQL not reachable', async () => {
      await expectOneLine(await runImport('postgresql://postgres:secret@127.0.0.1:1/imp_src_none'),
        /^import: cannot reach the source database postgresql:\/\/postgres:\*\*\*@127\.0\.0\.1:1\/imp_src_none: .+\n$/);
    });

    it('MySQL not reachable', async () => {
      await expectOneLine(await runImport('mysql://root@127.0.0.1:1/imp_src_none'), /^import: cannot reach the source database mysql:\/\/root@127\.0\.0\.1:1\/imp_src_none: .+\n$/);
    });

    it('a PostgreSQL database that is not ClassworksKV', async () => {
      const url = await createForeignPg('imp_src_foreign');
      await expectOneLine(await runImport(url), /^import: the source is not a ClassworksKV 1\.3 \(PostgreSQL\) database: table "Device" not found\n$/);
    });

    it('a MySQL database that is not ClassworksKV', async () => {
      const url = await createForeignMysql('imp_src_foreign');
      await expectOneLine(await runImport(url), /^import: the source is not a ClassworksKV 1\.1 \(MySQL\) database: table "Device" lacks "uuid", "name", "password", "passwordHint", "createdAt", "updatedAt"\n$/);
    });

    it('a source URL of another kind', async () => {
      await expectOneLine(await runImport('redis://127.0.0.1:6379/0'), /^import: unsupported source redis:\/\/127\.0\.0\.1:6379\/0: use postgresql:\/\/… \(ClassworksKV 1\.3\) or mysql:\/\/… \(1\.1\)\n$/);
    });

    it('the real command (npm run import → scripts/import.js) exits 1 with one line', function() {
      this.timeout(120000);
      const r = spawnSync(process.execPath, [ path.join(process.cwd(), 'scripts/import.js'), 'postgresql://postgres@127.0.0.1:1/imp_src_none' ], {
        env: importEnv(), encoding: 'utf8', timeout: 110000,
      });
      assert.strictEqual(r.status, 1, r.stdout + r.stderr);
      assert.strictEqual(r.stderr.split('\n').filter(Boolean).length, 1, r.stderr);
      assert.match(r.stderr, /^import: cannot reach the source database postgresql:\/\/postgres@127\.0\.0\.1:1\/imp_src_none: /);
    });

  });
});
