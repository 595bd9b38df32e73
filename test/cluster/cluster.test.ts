/**
 * A real 2-worker `egg-scripts start --sticky` cluster on MySQL + Redis (CONTRACT.md §4,
 * "Cluster behaviour"). The egg master hands each TCP connection to a worker chosen
 * from the peer address: 127.0.0.2 -> worker 0, 127.0.0.3 -> worker 1. Which worker
 * a socket is on is read from the Redis presence hash (socketId -> instanceId).
 *
 * Needs `npm run build` first (npm run test:cluster does it).
 */
import assert from 'node:assert';
import { COMBINATIONS, joinedPayload, TestClient, TransportName } from '../support/socket';
import {
  ADDR_W0, ADDR_W1, Cluster, deviceWithToken, eventually, joinedClient, pidOfInstance, presence,
  request, useCluster,
} from './support';

const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/** Presence heartbeat and TTL the cluster runs with (see startCluster): a dead worker's sockets go within 2 s. */
const SWEEP_BOUND_MS = 500 + 1500;

describe('test/cluster/cluster.test.ts', function() {
  let cluster: Cluster;

  useCluster({ RATE_LIMIT_KV_READ: '5' }, c => {
    cluster = c;
  }, async c => {
    // Leave no socket behind for the next test: wait until nobody is online.
    await eventually('GET /devices/online to be empty after the test', async () => {
      const res = await request(c.url, 'GET', '/devices/online');
      return res.status === 200 && res.body.devices.length === 0;
    }).catch(() => undefined);
  });

  async function instanceOf(uuid: string, client: TestClient) {
    const map = await eventually(`presence of socket ${client.id} in ${uuid}`, async () => {
      const m = await presence(cluster.prefix, uuid);
      return m[client.id] ? m : undefined;
    });
    return map[client.id];
  }

  async function online(localAddress: string) {
    const res = await request(cluster.url, 'GET', '/devices/online', { localAddress });
    assert.strictEqual(res.status, 200, res.text);
    return res.body;
  }

  describe('[sticky routing] egg master by source address', () => {
    COMBINATIONS.forEach(({ client: gen, transport }) => {
      it(`puts ${gen} ${transport} clients from ${ADDR_W0} and ${ADDR_W1} on two different workers of this cluster`, async () => {
        const d = await deviceWithToken(cluster.url);
        const a = await joinedClient(cluster.url, { version: gen, transport, localAddress: ADDR_W0, token: d.token });
        const b = await joinedClient(cluster.url, { version: gen, transport, localAddress: ADDR_W1, token: d.token });
        const instA = await instanceOf(d.uuid, a);
        const instB = await instanceOf(d.uuid, b);
        assert.notStrictEqual(instA, instB);
        const workers = cluster.workerPids();
        assert.strictEqual(workers.length, 2);
        assert(workers.includes(pidOfInstance(instA)), `${instA} is not a worker of this cluster (${workers})`);
        assert(workers.includes(pidOfInstance(instB)), `${instB} is not a worker of this cluster (${workers})`);
      });
    });
  });

  describe('[POST /kv/:key] upsert() across workers', () => {
    COMBINATIONS.forEach(({ client: gen, transport }) => {
      it(`200 through either worker and kv-key-changed reaches ${gen} ${transport} sockets on both workers`, async () => {
        const d = await deviceWithToken(cluster.url);
        const a = await joinedClient(cluster.url, { version: gen, transport, localAddress: ADDR_W0, token: d.token });
        const b = await joinedClient(cluster.url, { version: gen, transport, localAddress: ADDR_W1, token: d.token });
        assert.notStrictEqual(await instanceOf(d.uuid, a), await instanceOf(d.uuid, b));

        for (const [ via, key ] of [[ ADDR_W0, 'from-worker-0' ], [ ADDR_W1, 'from-worker-1' ]]) {
          const res = await request(cluster.url, 'POST', `/kv/${key}`, { body: { via }, headers: { 'x-app-token': d.token }, localAddress: via });
          assert.strictEqual(res.status, 200, res.text);
          assert.strictEqual(res.body.created, true);
          for (const c of [ a, b ]) {
            const msg = await c.waitFor('kv-key-changed', m => m.key === key);
            assert.deepStrictEqual({ ...msg, updatedAt: undefined, revision: undefined }, {
              uuid: d.uuid, key, action: 'upsert', created: true, updatedAt: undefined, revision: undefined,
            });
            assert.match(msg.updatedAt, ISO_MS);
            assert.strictEqual(msg.updatedAt, res.body.updatedAt);
          }
        }
        // The client address of each write is the peer the master handed over.
        const meta = await request(cluster.url, 'GET', '/kv/from-worker-1/metadata', { headers: { 'x-app-token': d.token }, localAddress: ADDR_W0 });
        assert.strictEqual(meta.status, 200, meta.text);
        assert.strictEqual(meta.body.metadata.creatorIp, ADDR_W1);
      });
    });
  });

  describe('[device-joined / GET /devices/online] online() counts are cluster-wide', () => {
    it('200 connections 2 from both workers when two sockets on two workers joined (v2 polling + v4 websocket), 1 after one leaves', async () => {
      const d = await deviceWithToken(cluster.url);
      const a = await joinedClient(cluster.url, { version: 'v2', transport: 'polling', localAddress: ADDR_W0, token: d.token });
      assert.deepStrictEqual(a.payloads('device-joined'), [{ uuid: d.uuid, connections: 1 }]);
      const markA = a.mark();
      const b = await joinedClient(cluster.url, { version: 'v4', transport: 'websocket', localAddress: ADDR_W1, token: d.token });
      assert.notStrictEqual(await instanceOf(d.uuid, a), await instanceOf(d.uuid, b));
      // The joiner on worker 1 and the socket on worker 0 both see the cluster-wide count.
      assert.deepStrictEqual(b.payloads('device-joined'), [{ uuid: d.uuid, connections: 2 }]);
      assert.deepStrictEqual(await a.waitFor('device-joined', () => true, { since: markA }), { uuid: d.uuid, connections: 2 });

      const expected = { success: true, devices: [{ uuid: d.uuid, connections: 2, name: d.name }] };
      assert.deepStrictEqual(await online(ADDR_W0), expected);
      assert.deepStrictEqual(await online(ADDR_W1), expected);

      const markLeft = a.mark();
      b.close();
      assert.deepStrictEqual(await a.waitFor('device-left', () => true, { since: markLeft }), { uuid: d.uuid, connections: 1 });
      const after = { success: true, devices: [{ uuid: d.uuid, connections: 1, name: d.name }] };
      assert.deepStrictEqual(await online(ADDR_W0), after);
      assert.deepStrictEqual(await online(ADDR_W1), after);
    });
  });

  describe('[DELETE /apps/devices/:uuid/uninstall/:installId] uninstall() across workers', () => {
    ([ 'websocket', 'polling' ] as TransportName[]).forEach(transport => {
      it(`204 through worker 0 makes a v4 ${transport} socket on worker 1 get left token_revoked, and worker 1 answers 401 for the token at once`, async () => {
        const d = await deviceWithToken(cluster.url);
        const b = await joinedClient(cluster.url, { version: 'v4', transport, localAddress: ADDR_W1, token: d.token });
        const otherToken = await installOther(d.uuid);
        const watcher = await joinedClient(cluster.url, { version: 'v4', transport: 'websocket', localAddress: ADDR_W0, token: otherToken });
        assert.notStrictEqual(await instanceOf(d.uuid, b), await instanceOf(d.uuid, watcher));
        // Worker 1 has the token in its cache now.
        const warm = await request(cluster.url, 'GET', '/kv/_info', { headers: { 'x-app-token': d.token }, localAddress: ADDR_W1 });
        assert.strictEqual(warm.status, 200, warm.text);

        const markB = b.mark();
        const markW = watcher.mark();
        const del = await request(cluster.url, 'DELETE', `/apps/devices/${encodeURIComponent(d.uuid)}/uninstall/${d.installId}`, { localAddress: ADDR_W0 });
        assert.strictEqual(del.status, 204, del.text);
        assert.strictEqual(del.text, '');

        // No waiting: the very next request on worker 1 must already refuse the token.
        const after = await request(cluster.url, 'GET', '/kv/_info', { headers: { 'x-app-token': d.token }, localAddress: ADDR_W1 });
        assert.strictEqual(after.status, 401, after.text);
        assert.deepStrictEqual(after.body, { success: false, message: '无效的token', details: null });

        assert.deepStrictEqual(await b.waitFor('left', () => true, { since: markB }), { by: 'token', uuid: d.uuid, reason: 'token_revoked' });
        // The room (on the other worker) is told the new count.
        assert.deepStrictEqual(await watcher.waitFor('device-left', () => true, { since: markW }), { uuid: d.uuid, connections: 1 });
        // And the revoked socket no longer gets the device's events (the watcher does).
        const write = await request(cluster.url, 'POST', '/kv/after-revoke', { body: { v: 1 }, headers: { 'x-app-token': otherToken }, localAddress: ADDR_W1 });
        assert.strictEqual(write.status, 200, write.text);
        await watcher.waitFor('kv-key-changed', m => m.key === 'after-revoke');
        // Let an event that would wrongly reach b arrive before looking.
        await request(cluster.url, 'GET', '/check', { localAddress: ADDR_W1 });
        assert.deepStrictEqual(b.payloads('kv-key-changed', markB), []);
        assert.strictEqual(b.connected, true);
      });
    });

    /** A second install on the same device (a token that stays valid). */
    async function installOther(uuid: string) {
      const res = await request(cluster.url, 'POST', `/apps/devices/${encodeURIComponent(uuid)}/install/watcher`, { body: {}, localAddress: ADDR_W0 });
      assert.strictEqual(res.status, 201, res.text);
      return res.body.token as string;
    }
  });

  describe('[rate limit] KV read quota is cluster-wide', () => {
    it('429 on the 6th read with RATE_LIMIT_KV_READ=5 after 3 reads through worker 0 and 2 through worker 1 with the same token', async () => {
      const d = await deviceWithToken(cluster.url);
      const statuses: number[] = [];
      for (const via of [ ADDR_W0, ADDR_W0, ADDR_W0, ADDR_W1, ADDR_W1 ]) {
        const res = await request(cluster.url, 'GET', '/kv/_info', { headers: { 'x-app-token': d.token }, localAddress: via });
        statuses.push(res.status);
        assert.strictEqual(res.headers['ratelimit-policy'], '5;w=60');
      }
      assert.deepStrictEqual(statuses, [ 200, 200, 200, 200, 200 ]);
      const sixth = await request(cluster.url, 'GET', '/kv/_info', { headers: { 'x-app-token': d.token }, localAddress: ADDR_W1 });
      assert.strictEqual(sixth.status, 429, sixth.text);
      const retryAfter = Number(sixth.headers['retry-after']);
      assert(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 60, `Retry-After ${sixth.headers['retry-after']}`);
      assert.deepStrictEqual(sixth.body, {
        success: false,
        message: '请求过于频繁，请稍后再试',
        details: { limit: 5, windowSeconds: 60, retryAfter },
        code: 'RATE_LIMITED',
      });
      // Worker 0 refuses it too.
      const seventh = await request(cluster.url, 'GET', '/kv/_info', { headers: { 'x-app-token': d.token }, localAddress: ADDR_W0 });
      assert.strictEqual(seventh.status, 429, seventh.text);
    });
  });

  describe('[worker crash] kill -9 of one worker', () => {
    it(`GET /devices/online drops the dead worker's sockets within ${SWEEP_BOUND_MS} ms (PRESENCE_HEARTBEAT_MS 500 + PRESENCE_TTL_MS 1500), the worker is reforked and its client rejoins with the handshake token`, async () => {
      const d = await deviceWithToken(cluster.url);
      // Two sockets on the worker that will die (one reconnects, one does not), one on the survivor.
      const doomedQuiet = await joinedClient(cluster.url, { version: 'v4', transport: 'websocket', localAddress: ADDR_W1, token: d.token });
      const doomed = await joinedClient(cluster.url, { version: 'v4', transport: 'websocket', localAddress: ADDR_W1, token: d.token, reconnection: true });
      const survivor = await joinedClient(cluster.url, { version: 'v4', transport: 'websocket', localAddress: ADDR_W0, token: d.token });
      const deadInstance = await instanceOf(d.uuid, doomed);
      assert.strictEqual(await instanceOf(d.uuid, doomedQuiet), deadInstance);
      const liveInstance = await instanceOf(d.uuid, survivor);
      assert.notStrictEqual(deadInstance, liveInstance);
      assert.deepStrictEqual(await online(ADDR_W0), { success: true, devices: [{ uuid: d.uuid, connections: 3, name: d.name }] });

      const deadPid = pidOfInstance(deadInstance);
      const before = cluster.workerPids();
      assert(before.includes(deadPid));
      const oldId = doomed.id;
      const markDoomed = doomed.mark();
      const markSurvivor = survivor.mark();
      process.kill(deadPid, 'SIGKILL');

      // The quiet socket never comes back; its entry must disappear with its worker's.
      await eventually('the dead worker\'s sockets to leave the presence hash', async () => {
        const m = await presence(cluster.prefix, d.uuid);
        return !Object.values(m).includes(deadInstance) && !m[oldId];
      }, SWEEP_BOUND_MS + 4000, 50);

      // Reforked: two workers again, the dead pid gone.
      const after = await eventually('the master to refork the killed worker', async () => {
        const pids = cluster.workerPids();
        return pids.length === 2 && !pids.includes(deadPid) ? pids : undefined;
      }, 30000);
      assert(after.includes(pidOfInstance(liveInstance)));

      // The reconnecting client rejoins by its handshake token (a new socket id).
      const rejoined = await doomed.waitFor('joined', () => true, { since: markDoomed, timeoutMs: 30000 });
      assert.deepStrictEqual(rejoined, joinedPayload(d.uuid, d.token, doomed.transport));
      assert.notStrictEqual(doomed.id, oldId);
      const newInstance = await instanceOf(d.uuid, doomed);
      assert(after.includes(pidOfInstance(newInstance)), `${newInstance} is not a live worker (${after})`);

      // Survivor + rejoined client: 2, seen from both source addresses.
      const expected = { success: true, devices: [{ uuid: d.uuid, connections: 2, name: d.name }] };
      await eventually('online count 2 after the rejoin', async () => {
        const body = await online(ADDR_W0);
        return JSON.stringify(body) === JSON.stringify(expected);
      });
      assert.deepStrictEqual(await online(ADDR_W1), expected);
      assert.strictEqual(survivor.connected, true);
      assert.strictEqual(doomedQuiet.connected, false);
      // The survivor heard the rejoin in its room.
      const joinedMsg = await survivor.waitFor('device-joined', () => true, { since: markSurvivor });
      assert.strictEqual(joinedMsg.uuid, d.uuid);

      // A write after the crash reaches both.
      const res = await request(cluster.url, 'POST', '/kv/after-crash', { body: { ok: true }, headers: { 'x-app-token': d.token }, localAddress: ADDR_W1 });
      assert.strictEqual(res.status, 200, res.text);
      await survivor.waitFor('kv-key-changed', m => m.key === 'after-crash');
      await doomed.waitFor('kv-key-changed', m => m.key === 'after-crash');
    });
  });
});
