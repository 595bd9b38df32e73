import assert from 'node:assert';
import { app } from 'egg-mock/bootstrap';
import type { KvChange } from '../../../app/lib/kvEvents';
import { deviceWithToken, installApp } from '../../support/factories';

/** GET /kv/_changes (CONTRACT.md §7): the device's change log read over HTTP. */
describe('test/app/controller/kvChanges.test.ts', () => {
  describe('[GET /kv/_changes] changes()', () => {
    let token: string;
    let deviceId: number;
    let uuid: string;
    let events: KvChange[];
    let unsubscribe: () => void;

    beforeEach(async () => {
      const d = await deviceWithToken();
      token = d.token;
      deviceId = d.device.id;
      uuid = d.device.uuid;
      events = [];
      unsubscribe = app.kvEvents.subscribe(c => events.push(c));
    });
    afterEach(() => unsubscribe());

    const get = (query: string, t = token) => app.httpRequest().get(`/kv/_changes${query}`).set('x-app-token', t);

    async function writeFive() {
      await app.httpRequest().post('/kv/a').set('x-app-token', token).send({ v: 1 })
        .expect(200);
      await app.httpRequest().post('/kv/a').set('x-app-token', token).send({ v: 2 })
        .expect(200);
      await app.httpRequest().post('/kv/_batchimport').set('x-app-token', token).send({ b: [], c: {} })
        .expect(200);
      await app.httpRequest().delete('/kv/b').set('x-app-token', token).expect(204);
    }

    it('200 {changes, revision, more}: every change after `since`, oldest first, exactly the kv-key-changed payloads delivered', async () => {
      await writeFive();
      assert.strictEqual(events.length, 5);
      const res = await get('?since=0').expect(200);
      assert.deepStrictEqual(res.body, { changes: events, revision: 5, more: false });
      assert.deepStrictEqual(Object.keys(res.body), [ 'changes', 'revision', 'more' ]);
      assert.deepStrictEqual(res.body.changes[4], { uuid, key: 'b', action: 'delete', deletedAt: (events[4] as { deletedAt: string }).deletedAt, revision: 5 });
      const after3 = await get('?since=3').expect(200);
      assert.deepStrictEqual(after3.body, { changes: events.slice(3), revision: 5, more: false });
    });

    it('200 pages with `limit` (default 100) and `more`', async () => {
      await writeFive();
      const revs = (body: { changes: KvChange[] }) => body.changes.map(c => c.revision);
      const p1 = await get('?since=0&limit=2').expect(200);
      assert.deepStrictEqual([ revs(p1.body), p1.body.more, p1.body.revision ], [[ 1, 2 ], true, 5 ]);
      const p2 = await get('?since=2&limit=2').expect(200);
      assert.deepStrictEqual([ revs(p2.body), p2.body.more ], [[ 3, 4 ], true ]);
      const p3 = await get('?since=4&limit=2').expect(200);
      assert.deepStrictEqual([ revs(p3.body), p3.body.more ], [[ 5 ], false ]);
      const exact = await get('?since=3&limit=2').expect(200);
      assert.deepStrictEqual([ revs(exact.body), exact.body.more ], [[ 4, 5 ], false ]);
    });

    it('200 with [] when `since` is at or above the latest revision (also on a device without changes)', async () => {
      await get('?since=0').expect(200, { changes: [], revision: 0, more: false });
      await writeFive();
      await get('?since=5').expect(200, { changes: [], revision: 5, more: false });
      await get('?since=999999').expect(200, { changes: [], revision: 5, more: false });
    });

    it('400 with a clear message when `since` is missing or not an integer ≥ 0, or `limit` is outside 1..1000', async () => {
      for (const q of [ '', '?since=', '?since=-1', '?since=abc', '?since=1.5', '?since=1e3', '?since[]=1' ]) {
        const res = await get(q).expect(400);
        assert.deepStrictEqual([ res.body.success, res.body.message, res.body.details.field ], [ false, 'since 必须是大于或等于 0 的整数', 'since' ], q);
      }
      for (const q of [ '?since=0&limit=0', '?since=0&limit=1001', '?since=0&limit=x', '?since=0&limit=-5', '?since=0&limit=' ]) {
        const res = await get(q).expect(400);
        assert.deepStrictEqual([ res.body.message, res.body.details.field ], [ 'limit 必须是 1 到 1000 之间的整数', 'limit' ], q);
      }
    });

    it('410 CHANGES_EXPIRED with details.oldest once the changes after `since` are no longer kept; 200 from `oldest` on', async () => {
      await writeFive();
      const s = app.config.classworks;
      const saved = s.changesRetention;
      s.changesRetention = 2;
      try {
        await app.mockContext().service.changes.trim(deviceId, 5, false);
      } finally {
        s.changesRetention = saved;
      }
      for (const since of [ 0, 2 ]) {
        const res = await get(`?since=${since}`).expect(410);
        assert.deepStrictEqual(res.body, {
          success: false,
          message: '请求的变更已不再保留，请重新读取所有键',
          details: { oldest: 3, revision: 5 },
          code: 'CHANGES_EXPIRED',
        });
      }
      const ok = await get('?since=3').expect(200);
      assert.deepStrictEqual(ok.body, { changes: events.slice(3), revision: 5, more: false });
    });

    it('answers only the token\'s own device; a read-only token reads it; `_changes` is a reserved key', async () => {
      await writeFive();
      const other = await deviceWithToken();
      await get('?since=0', other.token).expect(200, { changes: [], revision: 0, more: false });
      const ro = await installApp({ id: deviceId, uuid, name: '' }, { appId: 'ro', isReadOnly: true });
      const res = await get('?since=4', ro.token).expect(200);
      assert.deepStrictEqual(res.body.changes, events.slice(4));
      const write = await app.httpRequest().post('/kv/_changes').set('x-app-token', token).send({})
        .expect(400);
      assert.strictEqual(write.body.message, '键名 \'_changes\' 是保留名称，不能写入');
      await app.httpRequest().get('/kv/_changes?since=0').expect(401);
    });
  });
});
