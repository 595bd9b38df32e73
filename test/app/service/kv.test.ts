import assert from 'node:assert';
import { app } from 'egg-mock/bootstrap';
import type { KvChange } from '../../../app/lib/kvEvents';
import type { TokenInfo } from '../../../app/lib/tokenCache';
import { deviceWithToken } from '../../support/factories';

const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

async function storedValue(deviceId: number, key: string): Promise<string | undefined> {
  const rows = await app.model.query('SELECT value FROM kv_entries WHERE deviceId = ? AND `key` = ?', {
    replacements: [ deviceId, key ], type: 'SELECT', raw: true,
  }) as Array<{ value: string }>;
  return rows[0]?.value;
}

async function revisions(deviceId: number): Promise<Record<string, number>> {
  const rows = await app.model.query('SELECT `key`, revision FROM kv_entries WHERE deviceId = ?', {
    replacements: [ deviceId ], type: 'SELECT', raw: true,
  }) as Array<{ key: string; revision: number | string }>;
  return Object.fromEntries(rows.map(r => [ r.key, Number(r.revision) ]));
}

/** A trigger that makes the database refuse to insert the key `boom` (a failure inside the transaction). */
async function withFailingInsert(fn: () => Promise<void>) {
  const db = app.model;
  if (db.getDialect() === 'mysql') {
    await db.query('DROP TRIGGER IF EXISTS kv_test_boom');
    await db.query("CREATE TRIGGER kv_test_boom BEFORE INSERT ON kv_entries FOR EACH ROW BEGIN IF NEW.`key` = 'boom' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'boom'; END IF; END");
  } else {
    await db.query('DROP TRIGGER IF EXISTS kv_test_boom');
    await db.query("CREATE TRIGGER kv_test_boom BEFORE INSERT ON kv_entries WHEN NEW.\"key\" = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END");
  }
  try {
    await fn();
  } finally {
    await db.query('DROP TRIGGER IF EXISTS kv_test_boom');
  }
}

/** The TokenInfo of a factory-made device and token (a writable token of 'test-app'). */
function tokenInfoOf(d: { device: { id: number; uuid: string }; install: { id: string }; token: string }): TokenInfo {
  return { installId: d.install.id, deviceId: d.device.id, uuid: d.device.uuid, token: d.token, appId: 'test-app', deviceType: null, isReadOnly: false, note: null };
}

describe('test/app/service/kv.test.ts', () => {
  let events: KvChange[];
  let unsubscribe: () => void;
  let device: { id: number; uuid: string };
  let token: string;
  let info: TokenInfo;

  beforeEach(async () => {
    const d = await deviceWithToken();
    device = d.device;
    token = d.token;
    const resolved = await app.mockContext().service.appInstall.resolveToken(token);
    assert.ok(resolved);
    info = resolved;
    events = [];
    unsubscribe = app.kvEvents.subscribe(change => events.push(change));
  });

  afterEach(() => unsubscribe());

  describe('upsert() / remove() / batchImport()', () => {
    it('revision numbers increase by one per write and per batch item; a failed delete uses none', async () => {
      const kv = app.mockContext().service.kv;
      const r1 = await kv.upsert(info, 'a', { v: 1 }, '10.0.0.1');
      const r2 = await kv.upsert(info, 'a', { v: 2 }, '10.0.0.2');
      const batch = await kv.batchImport(info, [[ 'b', 1 ], [ 'a', [ 3 ]], [ 'c', {}]], '10.0.0.3');
      await kv.remove(info, 'b');
      await assert.rejects(kv.remove(info, 'missing'), { status: 404, message: "未找到键名为 'missing' 的记录" });
      const r3 = await kv.upsert(info, 'd', [], '10.0.0.4');

      assert.deepStrictEqual(r1, { deviceId: device.id, key: 'a', created: true, updatedAt: r1.updatedAt });
      assert.deepStrictEqual(r2, { deviceId: device.id, key: 'a', created: false, updatedAt: r2.updatedAt });
      assert.deepStrictEqual(batch, {
        deviceId: device.id, total: 3, successful: 3, failed: 0,
        results: [{ key: 'b', created: true }, { key: 'a', created: false }, { key: 'c', created: true }],
        code: 200,
        message: '批量导入成功',
        data: {
          deviceId: device.id,
          summary: { total: 3, successful: 3, failed: 0 },
          results: [{ key: 'b', isNew: true }, { key: 'a', isNew: false }, { key: 'c', isNew: true }],
        },
      });
      const deleted = events[5];
      assert.strictEqual(deleted.action, 'delete');
      assert.ok(deleted.action === 'delete' && ISO_MS.test(deleted.deletedAt));
      const batchTime = events[2].action === 'upsert' ? events[2].updatedAt : '';
      assert.ok(ISO_MS.test(batchTime));
      const uuid = device.uuid;
      assert.deepStrictEqual(events, [
        { uuid, key: 'a', action: 'upsert', created: true, updatedAt: r1.updatedAt.toISOString(), revision: 1 },
        { uuid, key: 'a', action: 'upsert', created: false, updatedAt: r2.updatedAt.toISOString(), revision: 2 },
        { uuid, key: 'b', action: 'upsert', created: true, updatedAt: batchTime, revision: 3, batch: true },
        { uuid, key: 'a', action: 'upsert', created: false, updatedAt: batchTime, revision: 4, batch: true },
        { uuid, key: 'c', action: 'upsert', created: true, updatedAt: batchTime, revision: 5, batch: true },
        { uuid, key: 'b', action: 'delete', deletedAt: deleted.action === 'delete' ? deleted.deletedAt : '', revision: 6 },
        { uuid, key: 'd', action: 'upsert', created: true, updatedAt: r3.updatedAt.toISOString(), revision: 7 },
      ]);
      assert.deepStrictEqual(await revisions(device.id), { a: 4, c: 5, d: 7 });
      assert.strictEqual(await storedValue(device.id, 'a'), '[3]');
    });

    it('publishes only after commit: a listener reading from another connection sees the new value', async () => {
      const seen: Array<Promise<string | undefined>> = [];
      const off = app.kvEvents.subscribe(change => {
        seen.push(storedValue(device.id, change.key));
      });
      try {
        const kv = app.mockContext().service.kv;
        await kv.upsert(info, 'k', { n: 1 }, '127.0.0.1');
        await kv.batchImport(info, [[ 'k', { n: 2 }], [ 'j', { n: 3 }]], '127.0.0.1');
        await kv.remove(info, 'j');
      } finally {
        off();
      }
      assert.deepStrictEqual(await Promise.all(seen), [ '{"n":1}', '{"n":2}', '{"n":3}', undefined ]);
    });

    it('a batch failing mid-transaction writes nothing, uses no revision and publishes nothing', async () => {
      const kv = app.mockContext().service.kv;
      await kv.upsert(info, 'x', { old: true }, '127.0.0.1');
      events.length = 0;
      await withFailingInsert(async () => {
        await assert.rejects(kv.batchImport(info, [[ 'x', { new: true }], [ 'y', 1 ], [ 'boom', 2 ], [ 'z', 3 ]], '127.0.0.1'));
        await assert.rejects(kv.upsert(info, 'boom', { v: 1 }, '127.0.0.1'));
      });
      assert.deepStrictEqual(events, []);
      assert.strictEqual(await storedValue(device.id, 'x'), '{"old":true}');
      assert.deepStrictEqual(await revisions(device.id), { x: 1 });
      const next = await kv.upsert(info, 'y', [], '127.0.0.1');
      assert.strictEqual(next.created, true);
      assert.deepStrictEqual((events as KvChange[]).map(e => e.revision), [ 2 ]);
    });

    it('concurrent first writes of one key: exactly one created, distinct revisions', async () => {
      const results = await Promise.all(Array.from({ length: 12 }, (_, i) =>
        app.mockContext().service.kv.upsert(info, 'race', { i }, '127.0.0.1')));
      assert.strictEqual(results.filter(r => r.created).length, 1);
      assert.deepStrictEqual(events.map(e => e.revision).sort((a, b) => a - b), Array.from({ length: 12 }, (_, i) => i + 1));
      assert.strictEqual(events.filter(e => e.action === 'upsert' && e.created).length, 1);
    });
  });

  describe('concurrent first writes on many devices', () => {
    it('every write of a new key on 16 devices at once succeeds with created:true (no deadlock between neighbours)', async () => {
      const devices = [];
      for (let i = 0; i < 16; i++) devices.push(await deviceWithToken());
      const results = await Promise.all(devices.flatMap(d => [ 'k1', 'k2', 'k3' ].map(key =>
        app.mockContext().service.kv.upsert({ ...tokenInfoOf(d), appId: d.install.appId, note: d.install.note }, key, { key }, '127.0.0.1'))));
      assert.strictEqual(results.length, 48);
      assert.ok(results.every(r => r.created === true));
    });
  });

  describe('events through the HTTP routes', () => {
    it('POST /kv/:key publishes one upsert with the answer\'s created and updatedAt', async () => {
      const res = await app.httpRequest().post('/kv/h').set('x-app-token', token).send({ a: 1 }).expect(200);
      assert.deepStrictEqual(events, [
        { uuid: device.uuid, key: 'h', action: 'upsert', created: true, updatedAt: res.body.updatedAt, revision: 1 },
      ]);
    });

    it('POST /kv/_batchimport publishes one upsert per key with batch:true, in input order', async () => {
      await app.httpRequest().post('/kv/z').set('x-app-token', token).send({}).expect(200);
      events.length = 0;
      await app.httpRequest().post('/kv/_batchimport').set('x-app-token', token).send({ z: 1, a: 2, m: 3 }).expect(200);
      const t = events[0]?.action === 'upsert' ? events[0].updatedAt : '';
      assert.deepStrictEqual(events, [
        { uuid: device.uuid, key: 'z', action: 'upsert', created: false, updatedAt: t, revision: 2, batch: true },
        { uuid: device.uuid, key: 'a', action: 'upsert', created: true, updatedAt: t, revision: 3, batch: true },
        { uuid: device.uuid, key: 'm', action: 'upsert', created: true, updatedAt: t, revision: 4, batch: true },
      ]);
    });

    it('concurrent HTTP writes of one device all succeed (200), one of them created', async () => {
      const results = await Promise.all(Array.from({ length: 8 }, (_, i) =>
        app.httpRequest().post(`/kv/${i % 2 ? 'odd' : 'even'}`).set('x-app-token', token).send({ i })));
      assert.deepStrictEqual(results.map(r => r.status), Array(8).fill(200));
      assert.strictEqual(results.filter(r => r.body.created).length, 2);
      assert.deepStrictEqual(events.map(e => e.revision).sort((a, b) => a - b), [ 1, 2, 3, 4, 5, 6, 7, 8 ]);
    });

    it('DELETE /kv/:key publishes one delete', async () => {
      await app.httpRequest().post('/kv/d').set('x-app-token', token).send([]).expect(200);
      events.length = 0;
      await app.httpRequest().delete('/kv/d').set('x-app-token', token).expect(204);
      assert.strictEqual(events.length, 1);
      const e = events[0];
      assert.ok(e.action === 'delete' && ISO_MS.test(e.deletedAt));
      assert.deepStrictEqual(e, { uuid: device.uuid, key: 'd', action: 'delete', deletedAt: e.action === 'delete' ? e.deletedAt : '', revision: 2 });
    });

    it('reads publish nothing', async () => {
      await app.httpRequest().post('/kv/r').set('x-app-token', token).send({ a: 1 }).expect(200);
      events.length = 0;
      await app.httpRequest().get('/kv/r').set('x-app-token', token).expect(200);
      await app.httpRequest().get('/kv/r/metadata').set('x-app-token', token).expect(200);
      await app.httpRequest().get('/kv').set('x-app-token', token).expect(200);
      await app.httpRequest().get('/kv/_keys').set('x-app-token', token).expect(200);
      await app.httpRequest().get('/kv/_info').set('x-app-token', token).expect(200);
      await app.httpRequest().get('/kv/missing').set('x-app-token', token).expect(404);
      assert.deepStrictEqual(events, []);
    });

    it('failed writes publish nothing', async () => {
      const saved = app.config.classworks.batchLimit;
      app.config.classworks.batchLimit = 1;
      try {
        await app.httpRequest().post('/kv/_batchimport').set('x-app-token', token).send({ a: 1, b: 2 }).expect(413);
      } finally {
        app.config.classworks.batchLimit = saved;
      }
      await app.httpRequest().post('/kv/_batchimport').set('x-app-token', token).send({ ok: 1, ['x'.repeat(192)]: 1 }).expect(400);
      await app.httpRequest().post('/kv/_batchimport').set('x-app-token', token).send({}).expect(400);
      await app.httpRequest().post(`/kv/${'x'.repeat(192)}`).set('x-app-token', token).send({}).expect(400);
      await app.httpRequest().post('/kv/k').set('x-app-token', token).expect(400);
      await app.httpRequest().post('/kv/k').set('x-app-token', token).set('content-type', 'application/json').send('{bad').expect(400);
      await app.httpRequest().post('/kv/k').set('x-app-token', 'nope').send({ a: 1 }).expect(401);
      await app.httpRequest().delete('/kv/missing').set('x-app-token', token).expect(404);
      assert.deepStrictEqual(events, []);
      // The failed delete above bumped no revision either.
      await app.httpRequest().post('/kv/after').set('x-app-token', token).send({}).expect(200);
      assert.deepStrictEqual((events as KvChange[]).map(e => e.revision), [ 1 ]);
    });
  });

  describe('write batching (concurrent POSTs share a transaction on MySQL)', () => {
    it('30 concurrent writes over 3 devices: each keeps its own answer, revisions consecutive per device in call order, last value stored', async () => {
      const others = [ await deviceWithToken(), await deviceWithToken() ];
      const infos: TokenInfo[] = [ info, ...others.map(tokenInfoOf) ];
      const calls = Array.from({ length: 30 }, (_, i) => ({ info: infos[i % 3], key: `k${i % 4}`, value: { i } }));
      const kv = app.mockContext().service.kv;
      const before = { ...app.kvWriter?.stats };
      const results = await Promise.all(calls.map(c => kv.upsert(c.info, c.key, c.value, '10.1.1.1')));
      if (app.kvWriter) {
        // MySQL: the 30 writes shared transactions (SQLite runs them one by one).
        assert.strictEqual(app.kvWriter.stats.writes - before.writes!, 30);
        assert.ok(app.kvWriter.stats.transactions - before.transactions! <= 8, `${app.kvWriter.stats.transactions - before.transactions!} transactions`);
      } else {
        assert.strictEqual(app.model.getDialect(), 'sqlite', 'only SQLite writes without the batched writer');
      }
      for (const d of infos) {
        const mine = calls.map((c, i) => ({ ...c, i })).filter(c => c.info === d);
        const seen = new Set<string>();
        const expected = mine.map(c => {
          const created = !seen.has(c.key);
          seen.add(c.key);
          return { deviceId: d.deviceId, key: c.key, created };
        });
        assert.deepStrictEqual(mine.map(c => ({ deviceId: results[c.i].deviceId, key: results[c.i].key, created: results[c.i].created })), expected);
        const myEvents = events.filter(e => e.uuid === d.uuid);
        assert.deepStrictEqual(myEvents.map(e => [ e.key, e.revision ]), mine.map((c, n) => [ c.key, n + 1 ]));
        const last: Record<string, { value: string; revision: number }> = {};
        mine.forEach((c, n) => { last[c.key] = { value: JSON.stringify(c.value), revision: n + 1 }; });
        assert.deepStrictEqual(await revisions(d.deviceId), Object.fromEntries(Object.entries(last).map(([ k, v ]) => [ k, v.revision ])));
        for (const [ k, v ] of Object.entries(last)) assert.strictEqual(await storedValue(d.deviceId, k), v.value);
      }
      const rows = await app.model.query('SELECT `key`, createdAt, updatedAt FROM kv_entries WHERE deviceId = ? ORDER BY `key`', {
        replacements: [ info.deviceId ], type: 'SELECT', raw: true,
      }) as Array<{ key: string; createdAt: string | Date; updatedAt: string | Date }>;
      const meta = await kv.metadata(info.deviceId, 'k0');
      const lastK0 = calls.map((c, i) => ({ ...c, i })).filter(c => c.info === info && c.key === 'k0').pop()!;
      assert.strictEqual(meta.metadata.updatedAt.toISOString(), results[lastK0.i].updatedAt.toISOString());
      assert.strictEqual(meta.metadata.creatorIp, '10.1.1.1');
      assert.strictEqual(rows.length, 4);
    });

    it('a write that fails inside a shared transaction fails alone: the others are stored and answered', async () => {
      const kv = app.mockContext().service.kv;
      await withFailingInsert(async () => {
        const outcomes = await Promise.allSettled([ 'a', 'boom', 'b', 'c' ].map(key => kv.upsert(info, key, { key }, '127.0.0.1')));
        assert.deepStrictEqual(outcomes.map(o => o.status), [ 'fulfilled', 'rejected', 'fulfilled', 'fulfilled' ]);
        assert.deepStrictEqual(outcomes.map(o => (o.status === 'fulfilled' ? o.value.created : null)), [ true, null, true, true ]);
      });
      assert.deepStrictEqual(events.map(e => e.key).sort(), [ 'a', 'b', 'c' ]);
      assert.deepStrictEqual(events.map(e => e.revision).sort((x, y) => x - y), [ 1, 2, 3 ]);
      for (const key of [ 'a', 'b', 'c' ]) assert.strictEqual(await storedValue(device.id, key), JSON.stringify({ key }));
      assert.strictEqual(await storedValue(device.id, 'boom'), undefined);
    });
  });

  describe('value cache (GET /kv/:key)', () => {
    const get = (key: string) => app.httpRequest().get(`/kv/${key}`).set('x-app-token', token);

    /** Changes a stored value behind the server's back (no revision change: the cache cannot see it). */
    async function changeBehindItsBack(key: string, json: string) {
      await app.model.query('UPDATE kv_entries SET value = ? WHERE deviceId = ? AND `key` = ?', { replacements: [ json, device.id, key ] });
    }

    /** Another worker committed a write of the device (raised its revision in shared state). */
    async function anotherWorkerWrote() {
      await app.model.query('UPDATE devices SET revision = revision + 1 WHERE id = ?', { replacements: [ device.id ] });
      const rows = await app.model.query('SELECT revision FROM devices WHERE id = ?', { replacements: [ device.id ], type: 'SELECT', raw: true }) as Array<{ revision: number }>;
      await app.sharedState.kvRevisionsRaise([{ deviceId: device.id, revision: Number(rows[0].revision) }]);
    }

    it('serves the cached value until a write here, or one recorded by another worker, moves the device revision', async () => {
      await app.httpRequest().post('/kv/c').set('x-app-token', token).send({ v: 1 }).expect(200);
      assert.deepStrictEqual((await get('c').expect(200)).body, { v: 1 });
      await changeBehindItsBack('c', '{"v":"behind"}');
      assert.deepStrictEqual((await get('c').expect(200)).body, { v: 1 }, 'served from the cache, not the database');
      await anotherWorkerWrote();
      assert.deepStrictEqual((await get('c').expect(200)).body, { v: 'behind' });

      await app.httpRequest().post('/kv/c').set('x-app-token', token).send({ v: 2 }).expect(200);
      assert.deepStrictEqual((await get('c').expect(200)).body, { v: 2 });
      await app.httpRequest().post('/kv/other').set('x-app-token', token).send({}).expect(200);
      await changeBehindItsBack('c', '{"v":"again"}');
      assert.deepStrictEqual((await get('c').expect(200)).body, { v: 'again' }, 'a write of another key of the device moved the revision');
    });

    it('a DELETE and a batch import move the revision; a 404 is never cached', async () => {
      await app.httpRequest().post('/kv/_batchimport').set('x-app-token', token).send({ p: 1, q: 2 }).expect(200);
      assert.deepStrictEqual((await get('p').expect(200)).body, 1);
      assert.deepStrictEqual((await get('q').expect(200)).body, 2);
      await app.httpRequest().delete('/kv/p').set('x-app-token', token).expect(204);
      await get('p').expect(404);
      await app.httpRequest().post('/kv/_batchimport').set('x-app-token', token).send({ p: 3, q: 4 }).expect(200);
      assert.deepStrictEqual((await get('p').expect(200)).body, 3);
      assert.deepStrictEqual((await get('q').expect(200)).body, 4);
      assert.deepStrictEqual(await app.sharedState.kvRevisions([ device.id ]), [ 5 ]);
    });

    it('a write that fails with no clear outcome: the device is distrusted (its cached values are not served), other devices keep theirs', async () => {
      const other = await deviceWithToken();
      await app.httpRequest().post('/kv/x').set('x-app-token', token).send({ v: 1 }).expect(200);
      await app.httpRequest().post('/kv/x').set('x-app-token', other.token).send({ v: 1 }).expect(200);
      await get('x').expect(200);
      await withFailingInsert(async () => {
        // The trigger stands for a failure we cannot tell apart from a lost commit answer.
        const res = await app.httpRequest().post('/kv/boom').set('x-app-token', token).send({ v: 1 });
        assert.strictEqual(res.status, 500);
      });
      assert.deepStrictEqual(await app.sharedState.kvRevisions([ device.id, other.device.id ]), [ null, 1 ]);
      await changeBehindItsBack('x', '{"v":"late"}');
      assert.deepStrictEqual((await get('x').expect(200)).body, { v: 'late' });
      await app.httpRequest().post('/kv/y').set('x-app-token', token).send({}).expect(200);
      assert.deepStrictEqual(await app.sharedState.kvRevisions([ device.id ]), [ null ], 'still distrusted after a later write');
    });

    it('kvRevisionsForget (a raise was refused): the revision is unknown (a distrusted device stays so), and every worker drops the device\'s cached values on the kv-dropped message', async () => {
      const other = await deviceWithToken();
      await app.httpRequest().post('/kv/f').set('x-app-token', token).send({ v: 1 }).expect(200);
      await app.httpRequest().post('/kv/f').set('x-app-token', other.token).send({ v: 1 }).expect(200);
      assert.deepStrictEqual((await get('f').expect(200)).body, { v: 1 });
      await changeBehindItsBack('f', '{"v":"newer"}');
      assert.deepStrictEqual((await get('f').expect(200)).body, { v: 1 }, 'cached');
      await app.sharedState.kvRevisionsDistrust([ other.device.id ], 60000);
      const seen: unknown[] = [];
      app.sharedState.onMessage(m => seen.push(m));
      await app.sharedState.kvRevisionsForget([ device.id, other.device.id ]);
      assert.deepStrictEqual(seen, [{ type: 'kv-dropped', deviceIds: [ device.id, other.device.id ] }]);
      assert.deepStrictEqual(await app.sharedState.kvRevisions([ device.id, other.device.id ]), [ null, null ]);
      assert.deepStrictEqual((await get('f').expect(200)).body, { v: 'newer' }, 'the dropped value is not served');
      // The distrust mark survived: a raise does not make the other device known again.
      await app.sharedState.kvRevisionsRaise([{ deviceId: other.device.id, revision: 9 }]);
      assert.deepStrictEqual(await app.sharedState.kvRevisions([ device.id, other.device.id ]), [ 1, null ]);
    });

    it('shared state keeps the latest revision per device: POSTs, DELETE and batch move it to the write\'s revision', async () => {
      await app.httpRequest().post('/kv/a').set('x-app-token', token).send({}).expect(200);
      assert.deepStrictEqual(await app.sharedState.kvRevisions([ device.id ]), [ 1 ]);
      await app.httpRequest().post('/kv/_batchimport').set('x-app-token', token).send({ a: 1, b: 2, c: 3 }).expect(200);
      assert.deepStrictEqual(await app.sharedState.kvRevisions([ device.id ]), [ 4 ]);
      await app.httpRequest().delete('/kv/a').set('x-app-token', token).expect(204);
      assert.deepStrictEqual(await app.sharedState.kvRevisions([ device.id ]), [ 5 ]);
      await app.httpRequest().delete('/kv/a').set('x-app-token', token).expect(404);
      assert.deepStrictEqual(await app.sharedState.kvRevisions([ device.id ]), [ 5 ]);
    });
  });
});
