import assert from 'node:assert';
import type { TestClient } from '../support/socket';
import { Cluster, World, deviceWithToken, eventually, online, request, sleep } from './support';
import { parseMetrics, sample } from '../support/metrics';

/** The figures of GET /metrics through `localAddress` this test looks at. */
async function figures(c: Cluster, localAddress: string) {
  const res = await request(c, 'GET', '/metrics', { localAddress });
  assert.strictEqual(res.status, 200, res.text);
  const m = parseMetrics(res.text);
  return Object.fromEntries([ 'online_devices_total', 'sockets_connected', 'metrics_workers', 'registered_devices_total', 'database_up', 'redis_up' ]
    .map(n => [ n, sample(m, `classworks_${n}`) ]));
}

/** Steady KV reads and writes through both workers; records every answer. */
class KvLoad {
  readonly statuses: Record<string, number> = {};
  readonly bad: string[] = [];
  private running = true;
  private readonly loops: Array<Promise<void>>;

  constructor(cluster: Cluster, token: string) {
    this.loops = [ '127.0.0.2', '127.0.0.3' ].map((localAddress, i) => (async () => {
      for (let n = 0; this.running; n++) {
        const write = n % 2 === 0;
        const key = `load-${i}-${Math.floor(n / 2)}`;
        try {
          const res = write
            ? await request(cluster, 'POST', `/kv/${key}`, { body: { n }, headers: { 'x-app-token': token }, localAddress })
            : await request(cluster, 'GET', `/kv/load-${i}-${Math.floor(n / 2)}`, { headers: { 'x-app-token': token }, localAddress });
          const what = `${write ? 'POST' : 'GET'} ${res.status}`;
          this.statuses[what] = (this.statuses[what] ?? 0) + 1;
          if (res.status !== 200) this.bad.push(`${what} ${res.text}`);
        } catch (err) {
          this.bad.push(`${write ? 'POST' : 'GET'} ${(err as Error).message}`);
        }
        await sleep(20);
      }
    })());
  }

  async stop() {
    this.running = false;
    await Promise.all(this.loops);
  }
}

describe('test/fault/redis-outage.test.ts', () => {
  const world = new World('fault_redis', { PRESENCE_HEARTBEAT_MS: '500', PRESENCE_TTL_MS: '1500' });
  let token: string;
  let onA: TestClient;
  let onB: TestClient;

  before(async () => {
    await world.start();
    token = (await deviceWithToken(world.cluster, 'dev-r')).token;
    onA = await world.joined({ token, localAddress: '127.0.0.2' });
    onB = await world.joined({ token, localAddress: '127.0.0.3' });
  });

  after(async () => {
    await world.stop();
  });

  /** Writes through the worker of `via` until `listener` (on the other worker) receives the change. */
  async function broadcastReaches(via: string, listener: TestClient, label: string) {
    let n = 0;
    await eventually(async () => {
      const key = `${label}-${n++}`;
      const from = listener.events.length;
      const res = await request(world.cluster, 'POST', `/kv/${key}`, { body: { key }, headers: { 'x-app-token': token }, localAddress: via });
      assert.strictEqual(res.status, 200, res.text);
      await listener.waitFor('kv-key-changed', p => p.key === key, { timeoutMs: 1000, since: from });
    }, 30000, 200);
  }

  it('Redis killed and restarted empty under load: HTTP KV keeps answering 200 (rate limits fail open; only ' +
    '/devices/online and device codes answer 503), /ready answers 503 naming Redis, /metrics 200 with the local figures and ' +
    'redis_up 0; broadcasts across workers, presence and the cluster-wide metrics come back by themselves, no worker restarts', async () => {
    const c = world.cluster;
    const master = c.masterPid;
    const pids = c.workerPids();
    assert.notStrictEqual(await c.workerFor('127.0.0.2'), await c.workerFor('127.0.0.3'));
    await broadcastReaches('127.0.0.2', onB, 'before');
    assert.deepStrictEqual(await online(c), { 'dev-r': 2 });
    // One token joined on both workers: one online token, two sockets, whichever worker answers.
    const whole = { online_devices_total: 1, sockets_connected: 2, metrics_workers: 2, registered_devices_total: 1, database_up: 1, redis_up: 1 };
    for (const localAddress of [ '127.0.0.2', '127.0.0.3' ]) {
      await eventually(async () => assert.deepStrictEqual(await figures(c, localAddress), whole), 10000);
    }

    const limited = await request(c, 'GET', '/kv/_info', { headers: { 'x-app-token': token } });
    assert.strictEqual(limited.headers['ratelimit-policy'], '1024;w=60');

    const load = new KvLoad(c, token);
    await sleep(1000);
    await world.redis.stop();

    // While Redis is away. What needs Redis alone (cluster-wide presence, device codes)
    // answers the 503 of the contract; everything else works, without rate limiting.
    await sleep(1000);
    const REDIS_DOWN = { success: false, message: 'Redis 服务不可用，请稍后重试', details: { service: 'redis' }, code: 'SERVICE_UNAVAILABLE' };
    for (const localAddress of [ '127.0.0.2', '127.0.0.3' ]) {
      const presence = await request(c, 'GET', '/devices/online', { localAddress });
      assert.deepStrictEqual([ presence.status, presence.json ], [ 503, REDIS_DOWN ]);
      const code = await request(c, 'POST', '/auth/device/code', { localAddress });
      assert.deepStrictEqual([ code.status, code.json ], [ 503, REDIS_DOWN ]);
      const device = await request(c, 'GET', '/devices/dev-r', { localAddress });
      assert.strictEqual(device.status, 200, device.text);
      const info = await request(c, 'GET', '/kv/_info', { localAddress, headers: { 'x-app-token': token } });
      assert.strictEqual(info.status, 200, info.text);
      assert.strictEqual(info.headers['ratelimit-policy'], undefined, 'rate limiting fails open: no quota headers');
      const ready = await request(c, 'GET', '/ready', { localAddress });
      assert.deepStrictEqual([ ready.status, ready.json ], [ 503,
        { success: false, message: 'Redis 服务不可用，请稍后重试', details: { database: 'up', redis: 'down' }, code: 'SERVICE_UNAVAILABLE' }]);
      // This worker's own figures only.
      assert.deepStrictEqual(await figures(c, localAddress),
        { online_devices_total: 1, sockets_connected: 1, metrics_workers: 1, registered_devices_total: 1, database_up: 1, redis_up: 0 });
    }
    await sleep(3000);

    await world.redis.start();
    await broadcastReaches('127.0.0.2', onB, 'after-a');
    await broadcastReaches('127.0.0.3', onA, 'after-b');
    await eventually(async () => assert.deepStrictEqual(await online(c, { localAddress: '127.0.0.2' }), { 'dev-r': 2 }), 20000);
    await eventually(async () => assert.deepStrictEqual(await online(c, { localAddress: '127.0.0.3' }), { 'dev-r': 2 }), 20000);
    for (const localAddress of [ '127.0.0.2', '127.0.0.3' ]) {
      await eventually(async () => assert.deepStrictEqual(await figures(c, localAddress), whole), 20000);
      const ready = await request(c, 'GET', '/ready', { localAddress });
      assert.deepStrictEqual([ ready.status, ready.json ], [ 200, { status: 'ready' }]);
    }
    await sleep(1000);
    await load.stop();
    console.log(`      load answers: ${JSON.stringify(load.statuses)}`);

    assert.deepStrictEqual(load.bad, []);
    assert.ok(load.statuses['POST 200'] > 0 && load.statuses['GET 200'] > 0);
    // The sockets stayed connected and no worker restarted.
    assert.deepStrictEqual([ onA.disconnects, onB.disconnects ], [ 0, 0 ]);
    assert.strictEqual(c.masterPid, master);
    assert.deepStrictEqual(c.workerPids(), pids);
  });

  it('Redis killed and restarted WITH its data: a value written while it was away is what every worker serves at once, ' +
    'never the value cached before (the revision Redis comes back with missed that write)', async () => {
    const c = world.cluster;
    const auth = { 'x-app-token': token };
    const VIA = [ '127.0.0.2', '127.0.0.3' ];
    assert.notStrictEqual(await c.workerFor(VIA[0]), await c.workerFor(VIA[1]));
    const put = async (v: number, localAddress: string) => {
      const res = await request(c, 'POST', '/kv/kept', { body: { v }, headers: auth, localAddress });
      assert.strictEqual(res.status, 200, res.text);
    };
    const read = async (localAddress: string) => {
      const res = await request(c, 'GET', '/kv/kept', { headers: auth, localAddress });
      assert.strictEqual(res.status, 200, res.text);
      return (res.json as { v: number }).v;
    };
    await put(1, VIA[0]);
    // Both workers hold v1 in their value cache, tagged with the revision Redis now has.
    for (const localAddress of VIA) for (let i = 0; i < 3; i++) assert.strictEqual(await read(localAddress), 1);

    assert.strictEqual(await world.redis.command('SAVE'), '+OK');
    await world.redis.stop();
    await sleep(500);
    await put(2, VIA[0]); // committed; its revision cannot reach Redis
    await world.redis.start(); // loads the saved data: the revision of v1
    // No read before the workers are connected to Redis again (a read that finds Redis
    // away goes to the database and puts the newer revision back by itself).
    for (const localAddress of VIA) {
      await eventually(async () => assert.strictEqual((await request(c, 'GET', '/devices/online', { localAddress })).status, 200), 20000, 100);
    }
    const seen: string[] = [];
    const until = Date.now() + 3000;
    while (Date.now() < until) {
      for (const localAddress of VIA) seen.push(`${localAddress}:${await read(localAddress)}`);
      await sleep(20);
    }
    assert.deepStrictEqual(seen.filter(s => !s.endsWith(':2')), []);
    await put(3, VIA[1]);
    for (const localAddress of VIA) assert.strictEqual(await read(localAddress), 3);
  });
});
