import assert from 'node:assert';
import { DatabaseProbe, World, deviceWithToken, eventually, probeWhileDatabaseAway, request } from './support';

const FREEZE_MS = 15000;
/**
 * Generous: an answer must arrive, but how fast is not asserted. The server's own bound
 * is DB_QUERY_TIMEOUT_MS (5 s) per query plus at most the pool's acquire wait (5 s);
 * without it, a request sent on an idle pooled connection never gets an answer.
 */
const CLIENT_TIMEOUT_MS = 20000;
const VIA = [ '127.0.0.2', '127.0.0.3' ];

describe('test/fault/mysql-freeze.test.ts', () => {
  const world = new World('fault_freeze', { RATE_LIMIT_IP: '0' });
  let token: string;

  before(async () => {
    await world.start();
    token = (await deviceWithToken(world.cluster, 'dev-f')).token;
    for (const localAddress of VIA) {
      const res = await request(world.cluster, 'POST', '/kv/k', { body: { v: 1 }, headers: { 'x-app-token': token }, localAddress });
      assert.strictEqual(res.status, 200, res.text);
    }
  });

  after(async () => {
    world.db.thaw();
    await world.stop();
  });

  it(`MySQL frozen (SIGSTOP) for ${FREEZE_MS / 1000} s: requests on idle pooled connections and on new ones are answered ` +
    '503 SERVICE_UNAVAILABLE (none hangs), no worker dies, and the service recovers without a restart once it runs again', async () => {
    const c = world.cluster;
    const master = c.masterPid;
    const pids = c.workerPids();
    const auth = { 'x-app-token': token };
    const probes: DatabaseProbe[] = [
      { method: 'GET', path: '/kv/k', headers: auth },
      { method: 'POST', path: '/kv/k2', headers: auth, body: n => ({ n }) },
      { method: 'GET', path: '/kv?limit=5', headers: auth },
      { method: 'DELETE', path: '/kv/k3', headers: auth },
      { method: 'POST', path: '/kv/_batchimport', headers: auth, body: n => ({ a: { n }, b: [ n ] }) },
      { method: 'GET', path: '/kv/_info', headers: { 'x-app-token': 'f'.repeat(64) } },
      { method: 'GET', path: '/devices/dev-f' },
      { method: 'POST', path: '/devices', body: n => ({ uuid: `new-${n}`, deviceName: 'x' }) },
    ];

    // Every worker's pools (Sequelize's and the KV writer's) hold idle connections, as
    // on a live server: these are the ones a frozen database leaves hanging.
    for (const localAddress of VIA) {
      const answers = await Promise.all([
        request(c, 'GET', '/kv?limit=5', { headers: auth, localAddress }),
        request(c, 'GET', '/devices/dev-f', { localAddress }),
        request(c, 'POST', '/kv/warm', { body: { w: 1 }, headers: auth, localAddress }),
        request(c, 'POST', '/kv/_batchimport', { body: { w2: 1 }, headers: auth, localAddress }),
      ]);
      assert.deepStrictEqual(answers.map(r => r.status), [ 200, 200, 200, 200 ], answers.map(r => r.text).join('\n'));
    }

    world.db.freeze();
    // Still frozen while the last answers arrive.
    const { sent, failures } = await probeWhileDatabaseAway(c, probes, { ms: FREEZE_MS, via: VIA, clientTimeoutMs: CLIENT_TIMEOUT_MS });
    assert.deepStrictEqual(failures, []);
    console.log(`      ${sent} database requests answered 503 while MySQL was frozen`);

    world.db.thaw();
    for (const localAddress of VIA) {
      await eventually(async () => {
        const res = await request(c, 'GET', '/kv/k', { headers: auth, localAddress });
        assert.deepStrictEqual([ res.status, res.json ], [ 200, { v: 1 }]);
      }, 30000, 250);
      const write = await request(c, 'POST', '/kv/after', { body: { ok: true }, headers: auth, localAddress });
      assert.strictEqual(write.status, 200, write.text);
      const list = await request(c, 'GET', '/kv?limit=5', { headers: auth, localAddress });
      assert.strictEqual(list.status, 200, list.text);
      const device = await request(c, 'GET', '/devices/dev-f', { localAddress });
      assert.strictEqual(device.status, 200, device.text);
    }
    assert.strictEqual(c.masterPid, master);
    assert.deepStrictEqual(c.workerPids(), pids);
    assert.deepStrictEqual(c.grepLogs(/AppWorkerDiedError|AgentWorkerDiedError/), []);
  });
});
