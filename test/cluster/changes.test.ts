/**
 * CONTRACT.md §7 on a real 2-worker sticky cluster (MySQL + Redis): catch-up with `since`
 * while both workers write, ordered gap-free live delivery whichever worker wrote, and a
 * change whose worker was killed between commit and broadcast (the fault switch
 * FAULT_CRASH_BEFORE_BROADCAST, honoured only in a test server env, here EGG_SERVER_ENV=test) reaching every
 * joined socket within 5 s. 127.0.0.2 → worker 0, 127.0.0.3 → worker 1.
 *
 * Needs `npm run build` first (npm run test:cluster does it).
 */
import assert from 'node:assert';
import { COMBINATIONS, TestClient } from '../support/socket';
import {
  ADDR_W0, ADDR_W1, Cluster, deviceWithToken, eventually, joinedClient, pidOfInstance, presence, request, useCluster,
} from './support';

const CRASH_KEY = 'crash-between-commit-and-broadcast';

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const revisionsOf = (c: TestClient) => c.payloads('kv-key-changed').map((p: { revision: number }) => p.revision);

describe('test/cluster/changes.test.ts', function() {
  let cluster: Cluster;

  useCluster({ EGG_SERVER_ENV: 'test', FAULT_CRASH_BEFORE_BROADCAST: CRASH_KEY }, c => {
    cluster = c;
  });

  async function write(token: string, key: string, via: string) {
    const res = await request(cluster.url, 'POST', `/kv/${encodeURIComponent(key)}`, { body: { key }, headers: { 'x-app-token': token }, localAddress: via });
    assert.strictEqual(res.status, 200, res.text);
    return res.body;
  }

  async function log(token: string, since = 0) {
    const res = await request(cluster.url, 'GET', `/kv/_changes?since=${since}&limit=1000`, { headers: { 'x-app-token': token }, localAddress: ADDR_W0 });
    assert.strictEqual(res.status, 200, res.text);
    return res.body.changes as Array<{ revision: number }>;
  }

  async function instanceOf(uuid: string, client: TestClient) {
    const map = await eventually(`presence of socket ${client.id} in ${uuid}`, async () => {
      const m = await presence(cluster.prefix, uuid);
      return m[client.id] ? m : undefined;
    });
    return map[client.id];
  }

  describe('[kv-key-changed] ordered across workers', () => {
    COMBINATIONS.forEach(({ client: gen, transport }) => {
      it(`${gen} ${transport}: sockets on both workers get every write of both workers once, in revision order; one joining with since=0 meanwhile gets the whole log first`, async () => {
        const d = await deviceWithToken(cluster.url);
        const a = await joinedClient(cluster.url, { version: gen, transport, localAddress: ADDR_W0, token: d.token });
        const b = await joinedClient(cluster.url, { version: gen, transport, localAddress: ADDR_W1, token: d.token });
        assert.notStrictEqual(await instanceOf(d.uuid, a), await instanceOf(d.uuid, b));
        const writes: Array<Promise<unknown>> = [];
        for (let i = 0; i < 30; i++) writes.push(write(d.token, `k${i % 7}`, i % 2 ? ADDR_W1 : ADDR_W0));
        const late = await joinedClient(cluster.url, { version: gen, transport, localAddress: ADDR_W1, token: d.token, query: { since: '0' } });
        for (let i = 30; i < 60; i++) writes.push(write(d.token, `k${i % 7}`, i % 2 ? ADDR_W1 : ADDR_W0));
        await Promise.all(writes);
        const all = await log(d.token);
        assert.deepStrictEqual(all.map(c => c.revision), range(1, 60));
        for (const c of [ a, b, late ]) {
          await eventually(`all 60 changes on ${c.id}`, async () => revisionsOf(c).length >= 60);
          assert.deepStrictEqual(c.payloads('kv-key-changed'), all);
        }
      });
    });
  });

  describe('[fault switch] a worker killed between commit and broadcast', () => {
    it('the committed change reaches the sockets on the surviving worker within 5 s, and a socket of the dead worker that rejoins with since', async () => {
      const d = await deviceWithToken(cluster.url);
      const a = await joinedClient(cluster.url, { localAddress: ADDR_W0, token: d.token });
      const b = await joinedClient(cluster.url, { localAddress: ADDR_W1, token: d.token });
      const victim = pidOfInstance(await instanceOf(d.uuid, b));
      assert.notStrictEqual(pidOfInstance(await instanceOf(d.uuid, a)), victim);
      await write(d.token, 'before', ADDR_W1);
      await a.waitFor('kv-key-changed', m => m.revision === 1);
      await b.waitFor('kv-key-changed', m => m.revision === 1);

      const dying = request(cluster.url, 'POST', `/kv/${CRASH_KEY}`, { body: { v: 1 }, headers: { 'x-app-token': d.token }, localAddress: ADDR_W1 });
      await assert.rejects(dying); // the worker died before answering
      assert.deepStrictEqual((await log(d.token)).map(c => c.revision), [ 1, 2 ], 'the write committed');
      const lost = (await log(d.token, 1))[0];
      assert.deepStrictEqual(await a.waitFor('kv-key-changed', m => m.revision === 2, { timeoutMs: 5000 }), lost);
      assert.deepStrictEqual(revisionsOf(a), [ 1, 2 ]);

      // b's worker is gone; it reconnects to a new worker and rejoins with what it had.
      const again = await eventually('a replacement worker', async () => {
        const pids = cluster.workerPids();
        return pids.length === 2 && !pids.includes(victim) ? pids : undefined;
      });
      assert.strictEqual(again.length, 2);
      const rejoined = await joinedClient(cluster.url, { localAddress: ADDR_W1, token: d.token, query: { since: '1' } });
      assert.deepStrictEqual(await rejoined.waitFor('kv-key-changed', m => m.revision === 2), lost);
      await write(d.token, 'after', ADDR_W0);
      for (const c of [ a, rejoined ]) await c.waitFor('kv-key-changed', m => m.revision === 3);
      assert.deepStrictEqual(revisionsOf(a), [ 1, 2, 3 ]);
      assert.deepStrictEqual(revisionsOf(rejoined), [ 2, 3 ]);
    });
  });
});
