import assert from 'node:assert';
import type { TestClient } from '../support/socket';
import { World, deviceWithToken, eventually, request, sleep } from './support';

/**
 * Relayed events and their history (CONTRACT.md §6.4) when things break: the history lives
 * in the database (device_log), so it is the same through every worker and survives a
 * Redis restart and the kill -9 of a worker; while the database is down, send-event is
 * refused with internal_error and nothing is relayed (a relay the history cannot show is
 * never announced as sent).
 */
describe('test/fault/events.test.ts', () => {
  const world = new World('fault_events', { PRESENCE_HEARTBEAT_MS: '500', PRESENCE_TTL_MS: '1500' });
  const VIA = [ '127.0.0.2', '127.0.0.3' ];
  let device: { uuid: string; token: string };
  let onA: TestClient;
  let onB: TestClient;
  let n = 0;

  before(async () => {
    await world.start();
    device = await deviceWithToken(world.cluster, 'dev-e');
    onA = await world.joined({ token: device.token, localAddress: VIA[0] });
    onB = await world.joined({ token: device.token, localAddress: VIA[1], version: 'v2' });
  });

  after(async () => {
    await world.stop();
  });

  /** Sends an event from `from` until `to` (on the other worker) receives one; returns the eventIds sent. */
  async function relayReaches(from: TestClient, to: TestClient, label: string): Promise<string[]> {
    const sent: string[] = [];
    await eventually(async () => {
      const ack = await from.requestWithin(15000, 'send-event', { type: label, content: { n: n++ } });
      assert.strictEqual(ack.ok, true, JSON.stringify(ack));
      sent.push(ack.eventId);
      await to.waitFor(label, p => p.eventId === ack.eventId, { timeoutMs: 1000 });
    }, 30000, 200);
    return sent;
  }

  /** The device's history through each worker's socket: asserts both agree, returns it. */
  async function historyEverywhere(sockets: TestClient[]): Promise<Array<Record<string, any>>> {
    const answers = [];
    for (const s of sockets) {
      const mark = s.mark();
      const ack = await s.requestWithin(15000, 'get-event-history', { limit: 1000 });
      assert.deepStrictEqual(ack, { ok: true });
      answers.push((await s.waitFor('event-history', undefined, { since: mark })).devices[device.uuid]);
    }
    for (const a of answers.slice(1)) assert.deepStrictEqual(a, answers[0]);
    return answers[0];
  }

  const ids = (records: Array<Record<string, any>>) => records.map(r => (r.type === 'kv-key-changed' ? `kv:${r.key}` : r.eventId));

  it('Redis killed and restarted empty: the history is unchanged through both workers, events sent meanwhile are in it, relaying across workers comes back', async () => {
    const c = world.cluster;
    assert.notStrictEqual(await c.workerFor(VIA[0]), await c.workerFor(VIA[1]));
    const before1 = await relayReaches(onA, onB, 'before');
    const write = await request(c, 'POST', '/kv/r1', { body: { v: 1 }, headers: { 'x-app-token': device.token }, localAddress: VIA[1] });
    assert.strictEqual(write.status, 200, write.text);
    const before2 = await relayReaches(onB, onA, 'before');
    const history = await historyEverywhere([ onA, onB ]);
    assert.deepStrictEqual(ids(history), [ ...before1, 'kv:r1', ...before2 ]);

    await world.redis.stop();
    await sleep(1000);
    // Without Redis the event is still recorded and announced (delivery to the other worker waits for Redis).
    const during = await onA.requestWithin(15000, 'send-event', { type: 'during', content: null });
    assert.strictEqual(during.ok, true, JSON.stringify(during));
    assert.deepStrictEqual(ids(await historyEverywhere([ onA, onB ])), [ ...ids(history), during.eventId ]);
    await world.redis.start();

    const after1 = await relayReaches(onA, onB, 'after');
    const after2 = await relayReaches(onB, onA, 'after');
    const final = await historyEverywhere([ onA, onB ]);
    assert.deepStrictEqual(final.slice(0, history.length), history, 'records from before the restart are unchanged');
    assert.deepStrictEqual(ids(final), [ ...ids(history), during.eventId, ...after1, ...after2 ]);
  });

  it('kill -9 of a worker: its sockets rejoin through the reforked worker, which answers the same history as the survivor', async () => {
    const c = world.cluster;
    const victim = await c.workerFor(VIA[1]);
    const survivorPid = await c.workerFor(VIA[0]);
    await relayReaches(onA, onB, 'pre-crash');
    const history = await historyEverywhere([ onA, onB ]);
    const drops = onB.disconnects;
    const mark = onB.mark();
    process.kill(victim, 'SIGKILL');
    await eventually(() => {
      const pids = c.workerPids();
      assert.strictEqual(pids.length, 2, `workers: ${pids}`);
      assert.ok(!pids.includes(victim) && pids.includes(survivorPid));
    }, 60000, 200);
    await eventually(async () => assert.deepStrictEqual(
      [ await c.workerFor(VIA[0]), await c.workerFor(VIA[1]) ].sort((x, y) => x - y), c.workerPids()), 30000, 200);
    await eventually(() => {
      assert.ok(onB.disconnects > drops && onB.connected, 'the socket on the killed worker reconnected');
      assert.ok(onB.named('joined', mark).length >= 1, 'and rejoined');
    }, 60000, 100);
    assert.deepStrictEqual(await historyEverywhere([ onA, onB ]), history);
    const after = await relayReaches(onB, onA, 'post-crash');
    assert.deepStrictEqual(ids(await historyEverywhere([ onA, onB ])), [ ...ids(history), ...after ]);
  });

  it('MySQL stopped: send-event answers event-error internal_error and relays nothing, get-event-history answers internal_error; both work again once it is back', async () => {
    const before = await historyEverywhere([ onA, onB ]);
    const markB = onB.mark();
    const markA = onA.mark();
    await world.db.stop();
    try {
      for (const [ sender, mark ] of [[ onA, markA ], [ onB, markB ]] as Array<[TestClient, number]>) {
        const ack = await sender.requestWithin(20000, 'send-event', { type: 'lost', content: { x: 1 } });
        assert.deepStrictEqual(ack, { ok: false, reason: 'internal_error' });
        assert.deepStrictEqual(sender.payloads('event-error', mark), [{ reason: 'internal_error' }]);
        assert.deepStrictEqual(await sender.requestWithin(20000, 'get-event-history'), { ok: false, reason: 'internal_error' });
        assert.deepStrictEqual(sender.payloads('event-history-error', mark), [{ reason: 'internal_error' }]);
        assert.deepStrictEqual(sender.named('event-sent', mark), []);
      }
    } finally {
      await world.db.start();
    }
    const after = await relayReaches(onA, onB, 'db-back');
    // Nothing named `lost` reached anyone: the first event after the outage came before any of it could.
    assert.deepStrictEqual([ ...onA.named('lost', markA), ...onB.named('lost', markB) ], []);
    assert.deepStrictEqual(ids(await historyEverywhere([ onA, onB ])), [ ...ids(before), ...after ]);
  });
});
