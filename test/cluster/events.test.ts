/**
 * Relayed events across a real 2-worker `egg-scripts start --sticky` cluster on MySQL +
 * Redis (CONTRACT.md §6.4): a send-event served by one worker reaches the device's
 * sockets on both workers (Redis adapter), the per-token quota is cluster-wide, and the
 * history (device_log) is the same whichever worker answers.
 * 127.0.0.2 -> worker 0, 127.0.0.3 -> worker 1 (see test/cluster/support.ts).
 *
 * Needs `npm run build` first (npm run test:cluster does it).
 */
import assert from 'node:assert';
import { TestClient } from '../support/socket';
import {
  ADDR_W0, ADDR_W1, Cluster, deviceWithToken, eventually, joinedClient, presence, request,
  resetRateLimits, useCluster,
} from './support';

const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const SENDER_INFO = { appId: 'cluster-test', deviceType: null, deviceName: 'Unknown Device', isReadOnly: false, note: null };

describe('test/cluster/events.test.ts', function() {
  let cluster: Cluster;

  useCluster({ RATE_LIMIT_EVENTS: '4', RATE_LIMIT_HISTORY: '3' }, c => {
    cluster = c;
  });

  async function installToken(uuid: string, appId: string) {
    const res = await request(cluster.url, 'POST', `/apps/devices/${encodeURIComponent(uuid)}/install/${appId}`, { body: {} });
    assert.strictEqual(res.status, 201, res.text);
    return res.body.token as string;
  }

  /** Asserts the two sockets are served by different workers (read from the presence hash). */
  async function onTwoWorkers(uuid: string, a: TestClient, b: TestClient) {
    const map = await eventually(`presence of ${a.id} and ${b.id}`, async () => {
      const m = await presence(cluster.prefix, uuid);
      return m[a.id] && m[b.id] ? m : undefined;
    });
    assert.notStrictEqual(map[a.id], map[b.id], 'the two sockets are on the same worker');
  }

  async function send(client: TestClient, type: string, content: unknown) {
    const ack = await client.request('send-event', { type, content });
    assert.strictEqual(ack.ok, true, JSON.stringify(ack));
    return ack.eventId as string;
  }

  describe('[send-event] io/controller/event send() across workers', () => {
    it('an event sent through worker 0 reaches the device\'s sockets on both workers (v4 and v2, websocket and polling), not the sender; and back from worker 1', async () => {
      const d = await deviceWithToken(cluster.url);
      const sender = await joinedClient(cluster.url, { version: 'v4', transport: 'websocket', localAddress: ADDR_W0, token: d.token });
      const receivers = [
        await joinedClient(cluster.url, { version: 'v2', transport: 'polling', localAddress: ADDR_W0, token: d.token }),
        await joinedClient(cluster.url, { version: 'v4', transport: 'polling', localAddress: ADDR_W1, token: d.token }),
        await joinedClient(cluster.url, { version: 'v2', transport: 'websocket', localAddress: ADDR_W1, token: d.token }),
      ];
      await onTwoWorkers(d.uuid, sender, receivers[1]);
      const eventId = await send(sender, 'chat', { text: 'hello' });
      const sent = await sender.waitFor('event-sent');
      assert.match(sent.timestamp, ISO_MS);
      assert.deepStrictEqual(sent, { eventId, eventName: 'chat', timestamp: sent.timestamp, targetDevices: 1, senderInfo: SENDER_INFO });
      for (const r of receivers) {
        assert.deepStrictEqual(await r.waitFor('chat', p => p.eventId === eventId),
          { eventId, content: { text: 'hello' }, timestamp: sent.timestamp, senderId: sender.id, senderInfo: SENDER_INFO });
      }
      // Back from worker 1: the first sender gets the reply, and never got its own event.
      const reply = await send(receivers[2], 'chat', { text: 'hi' });
      await sender.waitFor('chat', p => p.eventId === reply);
      assert.deepStrictEqual(sender.payloads('chat').map(p => p.eventId), [ reply ]);
      for (const r of receivers.slice(0, 2)) await r.waitFor('chat', p => p.eventId === reply);
      assert.deepStrictEqual(receivers[2].payloads('chat').map(p => p.eventId), [ eventId ]);
    });

    it('RATE_LIMIT_EVENTS=4 is counted cluster-wide: 2 send-events through each worker, the 5th is rate_limited on either', async () => {
      const d = await deviceWithToken(cluster.url);
      const w0 = await joinedClient(cluster.url, { version: 'v4', transport: 'websocket', localAddress: ADDR_W0, token: d.token });
      const w1 = await joinedClient(cluster.url, { version: 'v2', transport: 'websocket', localAddress: ADDR_W1, token: d.token });
      await onTwoWorkers(d.uuid, w0, w1);
      for (const c of [ w0, w1, w0, w1 ]) await send(c, 'tick', null);
      for (const c of [ w0, w1 ]) {
        assert.deepStrictEqual(await c.request('send-event', { type: 'tick', content: null }), { ok: false, reason: 'rate_limited' });
        assert.deepStrictEqual(c.payloads('event-error'), [{ reason: 'rate_limited' }]);
      }
    });
  });

  describe('[token-updated] lib/realtime refreshToken() across workers', () => {
    it('a note set through either worker reaches the senderInfo of the token\'s sockets on both workers, without rejoining', async () => {
      const d = await deviceWithToken(cluster.url);
      const res = await request(cluster.url, 'POST', `/apps/devices/${encodeURIComponent(d.uuid)}/install/teacher-app`, { body: { deviceType: 'teacher' } });
      assert.strictEqual(res.status, 201, res.text);
      const teacher = res.body.token as string;
      const w0 = await joinedClient(cluster.url, { version: 'v4', transport: 'websocket', localAddress: ADDR_W0, token: teacher });
      const w1 = await joinedClient(cluster.url, { version: 'v2', transport: 'polling', localAddress: ADDR_W1, token: teacher });
      await onTwoWorkers(d.uuid, w0, w1);
      const named = await request(cluster.url, 'POST', `/apps/tokens/${teacher}/set-teacher-name`, { body: { name: '王老师' } });
      assert.strictEqual(named.status, 200, named.text);
      const info = { appId: 'teacher-app', deviceType: 'teacher', deviceName: 'Unknown Device - 王老师', isReadOnly: false, note: '王老师' };
      const prefix = cluster.prefix;
      /** Sends a read receipt; true when it carries the new note. */
      const sentWithNewNote = async (c: TestClient) => {
        await resetRateLimits(prefix); // RATE_LIMIT_EVENTS is 4 in this cluster
        const mark = c.mark();
        await send(c, 'read-receipt', null);
        const sent = await c.waitFor('event-sent', undefined, { since: mark });
        return JSON.stringify(sent.senderInfo) === JSON.stringify(info) ? true : undefined;
      };
      // The other worker learns it from the bus: wait for it, one event at a time.
      for (const c of [ w0, w1 ]) await eventually(`the new note on ${c.transport}`, () => sentWithNewNote(c));
    });
  });

  describe('[get-event-history] io/controller/event history() across workers', () => {
    it('the same records through either worker: relayed events from both workers and KV writes from both, in order', async () => {
      const d = await deviceWithToken(cluster.url);
      const second = await installToken(d.uuid, 'cluster-test');
      const w0 = await joinedClient(cluster.url, { version: 'v4', transport: 'websocket', localAddress: ADDR_W0, token: d.token });
      const w1 = await joinedClient(cluster.url, { version: 'v2', transport: 'polling', localAddress: ADDR_W1, token: second });
      await onTwoWorkers(d.uuid, w0, w1);
      const auth = (token: string) => ({ 'x-app-token': token });
      const order: string[] = [];
      for (let i = 0; i < 3; i++) {
        order.push(await send(w0, 'from-w0', { i }));
        const write = await request(cluster.url, 'POST', `/kv/k${i}`, { body: { i }, headers: auth(d.token), localAddress: i % 2 ? ADDR_W0 : ADDR_W1 });
        assert.strictEqual(write.status, 200, write.text);
        order.push(`k${i}`);
        order.push(await send(w1, 'from-w1', { i }));
      }
      await w0.waitFor('from-w1', p => p.eventId === order[order.length - 1]);
      const history = async (client: TestClient) => {
        const mark = client.mark();
        assert.deepStrictEqual(await client.request('get-event-history', { limit: 100 }), { ok: true });
        return client.waitFor('event-history', undefined, { since: mark });
      };
      const h0 = await history(w0);
      const h1 = await history(w1);
      assert.deepStrictEqual(h0.devices, h1.devices);
      const records = h0.devices[d.uuid] as Array<Record<string, any>>;
      assert.deepStrictEqual(records.map(r => (r.type === 'kv-key-changed' ? r.key : r.eventId)), order);
      // Each relayed record is the payload its receiver got, plus type and recordedAt.
      const got = w1.named('from-w0').map(e => e.args[0]);
      assert.deepStrictEqual(records.filter(r => r.type === 'from-w0'), got.map(p => ({ ...p, type: 'from-w0', recordedAt: p.timestamp })));
      assert.deepStrictEqual(h1.requestedBy, { deviceType: null, deviceName: 'Unknown Device', isReadOnly: false });
    });

    it('RATE_LIMIT_HISTORY=3 is counted cluster-wide: the 4th request of a token is rate_limited on either worker', async () => {
      const d = await deviceWithToken(cluster.url);
      const w0 = await joinedClient(cluster.url, { version: 'v4', transport: 'websocket', localAddress: ADDR_W0, token: d.token });
      const w1 = await joinedClient(cluster.url, { version: 'v2', transport: 'websocket', localAddress: ADDR_W1, token: d.token });
      await onTwoWorkers(d.uuid, w0, w1);
      for (const c of [ w0, w1, w0 ]) assert.deepStrictEqual(await c.request('get-event-history'), { ok: true });
      for (const c of [ w1, w0 ]) {
        assert.deepStrictEqual(await c.request('get-event-history'), { ok: false, reason: 'rate_limited' });
        assert.deepStrictEqual(c.payloads('event-history-error'), [{ reason: 'rate_limited' }]);
      }
    });
  });
});
