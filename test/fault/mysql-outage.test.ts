import assert from 'node:assert';
import { Cluster, DatabaseProbe, World, clusterEnv, deviceWithToken, eventually, probeWhileDatabaseAway, request, sleep } from './support';
import { parseMetrics, sample } from '../support/metrics';

const OUTAGE_MS = 20000;
/** Generous: an answer must arrive, but how fast is not asserted. */
const CLIENT_TIMEOUT_MS = 15000;
const VIA = [ '127.0.0.2', '127.0.0.3' ];

describe('test/fault/mysql-outage.test.ts', () => {
  const world = new World('fault_mysql', { RATE_LIMIT_IP: '0' });
  let token: string;

  before(async () => {
    await world.start();
    token = (await deviceWithToken(world.cluster, 'dev-m')).token;
    // Both workers know the token (cached), and a value exists.
    for (const localAddress of VIA) {
      const res = await request(world.cluster, 'POST', '/kv/k', { body: { v: 1 }, headers: { 'x-app-token': token }, localAddress });
      assert.strictEqual(res.status, 200, res.text);
    }
  });

  after(async () => {
    await world.stop();
  });

  it(`MySQL stopped for ${OUTAGE_MS / 1000} s: every request that needs the database is answered 503 SERVICE_UNAVAILABLE ` +
    '(none hangs), GET /ready answers 503 naming the database while /metrics answers 200 with database_up 0, no worker dies, ' +
    'and the service recovers without a restart (/ready 200 again)', async () => {
    const c = world.cluster;
    const master = c.masterPid;
    const pids = c.workerPids();
    const auth = { 'x-app-token': token };
    const unknownToken = { 'x-app-token': 'f'.repeat(64) };
    const probes: DatabaseProbe[] = [
      { method: 'GET', path: '/kv/k', headers: auth },
      { method: 'POST', path: '/kv/k2', headers: auth, body: n => ({ n }) },
      { method: 'DELETE', path: '/kv/k', headers: auth },
      { method: 'GET', path: '/kv?limit=5', headers: auth },
      { method: 'POST', path: '/kv/_batchimport', headers: auth, body: n => ({ a: { n }, b: [ n ] }) },
      { method: 'GET', path: '/kv/_info', headers: unknownToken },
      { method: 'GET', path: '/devices/dev-m' },
      { method: 'POST', path: '/devices', body: n => ({ uuid: `new-${n}`, deviceName: 'x' }) },
      { method: 'POST', path: '/apps/devices/dev-m/install/x', body: () => ({}) },
    ];

    await world.db.stop();
    const { sent, failures } = await probeWhileDatabaseAway(c, probes, { ms: OUTAGE_MS, via: VIA, clientTimeoutMs: CLIENT_TIMEOUT_MS });
    assert.deepStrictEqual(failures, []);
    console.log(`      ${sent} database requests answered 503 during the outage`);

    // Still stopped: readiness says what is down; metrics still answer, without the database's figures.
    for (const localAddress of VIA) {
      const ready = await request(c, 'GET', '/ready', { localAddress, timeoutMs: CLIENT_TIMEOUT_MS });
      assert.deepStrictEqual({ status: ready.status, body: ready.json }, {
        status: 503,
        body: { success: false, message: '数据库服务不可用，请稍后重试', details: { database: 'down', redis: 'up' }, code: 'SERVICE_UNAVAILABLE' },
      });
      const metrics = await request(c, 'GET', '/metrics', { localAddress, timeoutMs: CLIENT_TIMEOUT_MS });
      assert.strictEqual(metrics.status, 200, metrics.text);
      const m = parseMetrics(metrics.text);
      assert.deepStrictEqual(
        [ 'database_up', 'redis_up', 'registered_devices_total', 'keys_total' ].map(n => sample(m, `classworks_${n}`)),
        [ 0, 1, undefined, undefined ]);
    }

    await world.db.start();
    for (const localAddress of VIA) {
      await eventually(async () => {
        const res = await request(c, 'GET', '/kv/k', { headers: auth, localAddress });
        assert.deepStrictEqual([ res.status, res.json ], [ 200, { v: 1 }]);
      }, 30000, 250);
      const write = await request(c, 'POST', '/kv/after', { body: { ok: true }, headers: auth, localAddress });
      assert.strictEqual(write.status, 200, write.text);
      const ready = await request(c, 'GET', '/ready', { localAddress });
      assert.deepStrictEqual({ status: ready.status, body: ready.json }, { status: 200, body: { status: 'ready' } });
      const m = parseMetrics((await request(c, 'GET', '/metrics', { localAddress })).text);
      assert.deepStrictEqual([ sample(m, 'classworks_database_up'), sample(m, 'classworks_registered_devices_total') ], [ 1, 1 ]);
    }
    assert.strictEqual(c.masterPid, master);
    assert.deepStrictEqual(c.workerPids(), pids);
    assert.deepStrictEqual(c.grepLogs(/AppWorkerDiedError|AgentWorkerDiedError/), []);
  });

  it('starting the server while MySQL is down fails at once with one message naming the unreachable database', async () => {
    await world.cluster.stop();
    await world.db.stop();
    const second = new Cluster(clusterEnv(world.db, world.redis, world.database));
    try {
      const r = await second.tryStart(60000);
      assert.notStrictEqual(r.code, 0, r.output);
      const port = world.db.port;
      const clear = r.output.split('\n').filter(l => l.includes(`database unreachable: mysql://root@127.0.0.1:${port}/${world.database}`));
      assert.ok(clear.length > 0, r.output);
      console.log(`      egg-scripts start exited ${r.code}: ${clear[0].trim()}`);
      if (process.env.FAULT_DEBUG) console.log(r.output);
      // Nothing keeps restarting: no process of that cluster is left.
      await sleep(2000);
      assert.deepStrictEqual(second.processes(), []);
    } finally {
      await second.destroy();
    }
  });
});
