/**
 * GET /metrics on a real 2-worker `egg-scripts start --sticky` cluster (CONTRACT §6.5):
 * whichever worker answers, the figures are the whole cluster's. Clients from 127.0.0.2
 * land on worker 0, from 127.0.0.3 on worker 1 (see cluster.test.ts). Workers renew
 * their snapshots every PRESENCE_HEARTBEAT_MS (500 ms here), so answers are awaited,
 * never timed.
 *
 * Needs `npm run build` first.
 */
import assert from 'node:assert';
import { TestClient } from '../support/socket';
import { parseMetrics, sample, Sample } from '../support/metrics';
import {
  ADDR_W0, ADDR_W1, Cluster, deviceWithToken, eventually, joinedClient, pidOfInstance, presence,
  request, useCluster,
} from './support';

describe('test/cluster/metrics.test.ts', function() {
  let cluster: Cluster;
  // Counts fresh on every scrape: each test starts from empty tables.
  useCluster({ METRICS_CACHE_MS: '0' }, c => {
    cluster = c;
  });

  async function scrape(localAddress: string): Promise<Sample[]> {
    const res = await request(cluster.url, 'GET', '/metrics', { localAddress });
    assert.strictEqual(res.status, 200, res.text);
    assert.strictEqual(res.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
    return parseMetrics(res.text);
  }

  /** Waits until both workers answer exactly `expected` (name → value, label sets written as name{k="v"}). */
  async function bothReport(expected: Record<string, number | undefined>) {
    const read = (m: Sample[]) => Object.fromEntries(Object.keys(expected).map(key => {
      const [ , name, labels ] = /^([^{]+)(?:\{(.*)\})?$/.exec(key)!;
      const wanted = Object.fromEntries([ ...(labels ?? '').matchAll(/(\w+)="([^"]*)"/g) ].map(x => [ x[1], x[2] ]));
      return [ key, sample(m, name, wanted) ];
    }));
    let last: unknown;
    try {
      await eventually('both workers to report the same cluster-wide figures', async () => {
        last = { w0: read(await scrape(ADDR_W0)), w1: read(await scrape(ADDR_W1)) };
        assert.deepStrictEqual(last, { w0: expected, w1: expected });
        return true;
      });
    } catch (err) {
      throw new Error(`${(err as Error).message}\nlast seen: ${JSON.stringify(last)}\nexpected on both: ${JSON.stringify(expected)}`);
    }
  }

  async function instanceOf(uuid: string, client: TestClient) {
    const map = await eventually(`presence of socket ${client.id} in ${uuid}`, async () => {
      const m = await presence(cluster.prefix, uuid);
      return m[client.id] ? m : undefined;
    });
    return map[client.id];
  }

  it('200 through either worker: the same distinct online tokens, sockets, devices, keys and summed HTTP counters ' +
    'of both workers, with sockets joined on both', async () => {
    const d1 = await deviceWithToken(cluster.url, ADDR_W0);
    const d2 = await deviceWithToken(cluster.url, ADDR_W1);
    const a = await joinedClient(cluster.url, { localAddress: ADDR_W0, token: d1.token });
    const b = await joinedClient(cluster.url, { localAddress: ADDR_W1, token: d1.token, transport: 'polling' });
    const c = await joinedClient(cluster.url, { localAddress: ADDR_W1, token: d2.token });
    assert.notStrictEqual(await instanceOf(d1.uuid, a), await instanceOf(d1.uuid, b));

    // A route nothing else in this file uses: 3 answers by worker 0, 2 by worker 1, one 404.
    const res = await request(cluster.url, 'POST', '/kv/k', { body: { v: 1 }, headers: { 'x-app-token': d1.token }, localAddress: ADDR_W0 });
    assert.strictEqual(res.status, 200, res.text);
    for (const via of [ ADDR_W0, ADDR_W0, ADDR_W0, ADDR_W1, ADDR_W1 ]) {
      const meta = await request(cluster.url, 'GET', '/kv/k/metadata', { headers: { 'x-app-token': d1.token }, localAddress: via });
      assert.strictEqual(meta.status, 200, meta.text);
    }
    const missing = await request(cluster.url, 'GET', '/kv/nope/metadata', { headers: { 'x-app-token': d2.token }, localAddress: ADDR_W1 });
    assert.strictEqual(missing.status, 404, missing.text);

    await bothReport({
      classworks_online_devices_total: 2,
      classworks_sockets_connected: 3,
      classworks_metrics_workers: 2,
      classworks_registered_devices_total: 2,
      classworks_keys_total: 1,
      classworks_database_up: 1,
      classworks_redis_up: 1,
      'classworks_http_requests_total{method="GET",route="/kv/:key/metadata",status="200"}': 5,
      'classworks_http_requests_total{method="GET",route="/kv/:key/metadata",status="404"}': 1,
      'classworks_http_request_duration_seconds_count{method="GET",route="/kv/:key/metadata"}': 6,
      'classworks_events_delivered_total{type="kv-key-changed"}': 1,
    });

    // b leaves (d1.token is still joined on worker 0), then c (d2.token is gone).
    b.close();
    await bothReport({ classworks_online_devices_total: 2, classworks_sockets_connected: 2 });
    c.close();
    await bothReport({ classworks_online_devices_total: 1, classworks_sockets_connected: 1 });
  });

  it('a killed worker drops out of the figures within the presence TTL, and its successor reports again', async () => {
    const d1 = await deviceWithToken(cluster.url, ADDR_W0);
    const d2 = await deviceWithToken(cluster.url, ADDR_W0);
    const a = await joinedClient(cluster.url, { localAddress: ADDR_W0, token: d1.token });
    const b = await joinedClient(cluster.url, { localAddress: ADDR_W1, token: d2.token });
    const instA = await instanceOf(d1.uuid, a);
    const instB = await instanceOf(d2.uuid, b);
    assert.notStrictEqual(instA, instB);
    await bothReport({ classworks_online_devices_total: 2, classworks_sockets_connected: 2, classworks_metrics_workers: 2 });

    const victim = pidOfInstance(instB);
    assert.ok(cluster.workerPids().includes(victim), `${victim} is not a worker of this cluster`);
    process.kill(victim, 'SIGKILL'); // no clean shutdown: its snapshot has to expire
    // Worker 0 (the only one for a while, then with the reforked worker 1) no longer counts b.
    await eventually('worker 0 to drop the dead worker\'s socket and token', async () => {
      const m = await scrape(ADDR_W0);
      return sample(m, 'classworks_online_devices_total') === 1 && sample(m, 'classworks_sockets_connected') === 1;
    }, 30000);
    await eventually('egg to refork worker 1', async () => cluster.workerPids().length === 2 && !cluster.workerPids().includes(victim), 60000);
    await bothReport({ classworks_online_devices_total: 1, classworks_sockets_connected: 1, classworks_metrics_workers: 2 });
  });
});
