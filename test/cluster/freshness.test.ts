/**
 * Each worker keeps a cache of stored values for GET /kv/:key, and of the pages of
 * GET /kv and GET /kv/_keys (app/lib/valueCache.ts). On a real 2-worker cluster: a
 * write answered by one worker is what the other worker serves from then on, never the
 * value or page it had cached before.
 *
 * Needs `npm run build` first (npm run test:cluster does it).
 */
import assert from 'node:assert';
import { closeAllClients } from '../support/socket';
import {
  ADDR_W0, ADDR_W1, Cluster, closeRedis, deviceWithToken, eventually, joinedClient,
  request, startCluster, truncateTables,
} from './support';

describe('test/cluster/freshness.test.ts', function() {
  let cluster: Cluster;

  before(async function() {
    cluster = await startCluster({ workers: 2, env: { RATE_LIMIT_KV_READ: '0', RATE_LIMIT_KV_WRITE: '0', RATE_LIMIT_KV_BATCH: '0', RATE_LIMIT_KV_DELETE: '0' } });
  });

  beforeEach(() => truncateTables());

  afterEach(function() {
    closeAllClients();
    if (this.currentTest?.state === 'failed' && cluster) {
      console.error(`--- cluster output (tail) ---\n${cluster.output().slice(-6000)}`);
    }
  });

  after(async () => {
    await cluster?.stop();
    await closeRedis();
  });

  const kv = (method: string, path: string, token: string, localAddress: string, body?: unknown) =>
    request(cluster.url, method, path, { headers: { 'x-app-token': token }, localAddress, body });

  it('200 with the new value on worker 1 right after each of 100 POSTs answered by worker 0 (worker 1 had the old value cached)', async () => {
    const d = await deviceWithToken(cluster.url);
    let res = await kv('POST', '/kv/fresh', d.token, ADDR_W0, { n: 0 });
    assert.strictEqual(res.status, 200, res.text);
    for (let n = 1; n <= 100; n++) {
      const before = await kv('GET', '/kv/fresh', d.token, ADDR_W1);
      assert.strictEqual(before.status, 200, before.text);
      assert.deepStrictEqual(before.body, { n: n - 1 });
      res = await kv('POST', '/kv/fresh', d.token, ADDR_W0, { n });
      assert.strictEqual(res.status, 200, res.text);
      const after = await kv('GET', '/kv/fresh', d.token, ADDR_W1);
      assert.strictEqual(after.status, 200, after.text);
      assert.deepStrictEqual(after.body, { n }, `write ${n}`);
    }
  });

  it('404 on worker 1 right after a DELETE answered by worker 0; a batch import on worker 1 is served by worker 0 at once', async () => {
    const d = await deviceWithToken(cluster.url);
    assert.strictEqual((await kv('POST', '/kv/gone', d.token, ADDR_W0, { v: 1 })).status, 200);
    assert.deepStrictEqual((await kv('GET', '/kv/gone', d.token, ADDR_W1)).body, { v: 1 });
    assert.strictEqual((await kv('DELETE', '/kv/gone', d.token, ADDR_W0)).status, 204);
    const gone = await kv('GET', '/kv/gone', d.token, ADDR_W1);
    assert.strictEqual(gone.status, 404);
    assert.deepStrictEqual(gone.body, { success: false, message: "未找到键名为 'gone' 的记录", details: null });

    const keys = Array.from({ length: 100 }, (_, i) => `k${i}`);
    for (const k of keys.slice(0, 3)) {
      assert.strictEqual((await kv('POST', `/kv/${k}`, d.token, ADDR_W1, { old: k })).status, 200);
      assert.deepStrictEqual((await kv('GET', `/kv/${k}`, d.token, ADDR_W0)).body, { old: k });
    }
    const imported = await kv('POST', '/kv/_batchimport', d.token, ADDR_W1, Object.fromEntries(keys.map(k => [ k, { new: k }])));
    assert.strictEqual(imported.status, 200, imported.text);
    for (const k of keys.slice(0, 3)) assert.deepStrictEqual((await kv('GET', `/kv/${k}`, d.token, ADDR_W0)).body, { new: k });
  });

  it('GET /kv and /kv/_keys on worker 1 show each of 30 POSTs and DELETEs answered by worker 0 at once (worker 1 had the page cached)', async () => {
    const d = await deviceWithToken(cluster.url);
    const pages = async (expected: string[]) => {
      for (let i = 0; i < 2; i++) { // the second read of each is served from worker 1's cache
        const keys = await kv('GET', '/kv/_keys', d.token, ADDR_W1);
        assert.strictEqual(keys.status, 200, keys.text);
        assert.deepStrictEqual(keys.body, { keys: expected, total_rows: expected.length, current_page: { limit: 100, skip: 0, count: expected.length } });
        const list = await kv('GET', '/kv?limit=100', d.token, ADDR_W1);
        assert.strictEqual(list.status, 200, list.text);
        assert.deepStrictEqual(list.body.items.map((it: { key: string }) => it.key), expected);
        assert.strictEqual(list.body.total_rows, expected.length);
      }
    };
    const present: string[] = [];
    await pages(present);
    for (let n = 0; n < 30; n++) {
      const key = `k${String(n).padStart(2, '0')}`;
      assert.strictEqual((await kv('POST', `/kv/${key}`, d.token, ADDR_W0, { n })).status, 200);
      present.push(key);
      await pages(present);
      if (n % 3 === 2) {
        const gone = present.shift()!;
        assert.strictEqual((await kv('DELETE', `/kv/${gone}`, d.token, ADDR_W0)).status, 204);
        await pages(present);
      }
    }
  });

  it('a socket on worker 1 that GETs through worker 1 on each kv-key-changed reads the value of that event (50 writes through worker 0)', async () => {
    const d = await deviceWithToken(cluster.url);
    const client = await joinedClient(cluster.url, { version: 'v4', transport: 'websocket', localAddress: ADDR_W1, token: d.token });
    assert.strictEqual((await kv('POST', '/kv/live', d.token, ADDR_W0, { n: 0 })).status, 200);
    await client.waitFor('kv-key-changed');
    assert.deepStrictEqual((await kv('GET', '/kv/live', d.token, ADDR_W1)).body, { n: 0 });
    const reads: Array<Promise<unknown>> = [];
    client.raw.on('kv-key-changed', () => {
      reads.push(kv('GET', '/kv/live', d.token, ADDR_W1).then(r => r.body));
    });
    for (let n = 1; n <= 50; n++) {
      assert.strictEqual((await kv('POST', '/kv/live', d.token, ADDR_W0, { n })).status, 200);
      await eventually(`kv-key-changed ${n}`, async () => reads.length >= n);
      assert.deepStrictEqual(await reads[n - 1], { n }, `event ${n}`);
    }
  });
});
