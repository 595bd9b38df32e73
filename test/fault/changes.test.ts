import assert from 'node:assert';
import type { TestClient } from '../support/socket';
import { Rand, SEED, World, deviceWithToken, eventually, request, sleep } from './support';

/**
 * A Jepsen-style check of CONTRACT.md §7 ("never miss a change") on a 2-worker cluster with
 * its own MariaDB and Redis. For LOAD_MS: writers on both workers upsert and delete keys of a
 * few devices; readers (sockets on both workers, both client generations, both transports)
 * join one device each with a random first `since`, then disconnect at random and rejoin on
 * a new socket with `since` = the last revision they received. One worker is killed with
 * SIGKILL, and another one between a commit and its broadcast (the fault switch
 * FAULT_CRASH_BEFORE_BROADCAST, honoured in EGG_SERVER_ENV=test only). Afterwards every
 * reader's kv-key-changed sequence, across all its sockets, must equal the device's change
 * log from its first `since` on: no gap, no duplicate, no reordering, the same payloads.
 * The seed (FAULT_SEED) is printed; the counts too.
 */

const LOAD_MS = Number(process.env.FAULT_CHANGES_MS ?? 60000);
const READERS = Number(process.env.FAULT_CHANGES_READERS ?? 50);
const DEVICES = 3;
const KEYS = 6;
const WRITERS = [ '127.0.0.2', '127.0.0.2', '127.0.0.2', '127.0.0.2', '127.0.0.3', '127.0.0.3', '127.0.0.3', '127.0.0.3' ];
const CRASH_KEY = 'crash-between-commit-and-broadcast';
const GENERATIONS = [[ 'v4', 'websocket' ], [ 'v4', 'polling' ], [ 'v2', 'websocket' ], [ 'v2', 'polling' ]] as const;

interface Change {
  uuid: string;
  key: string;
  revision: number;
  [field: string]: unknown;
}

interface Device {
  uuid: string;
  token: string;
}

describe('test/fault/changes.test.ts', () => {
  const world = new World('fault_changes', {
    EGG_SERVER_ENV: 'test',
    FAULT_CRASH_BEFORE_BROADCAST: CRASH_KEY,
    // The whole run stays in the log: a rejoin is never answered resync-required.
    CHANGES_RETENTION: '1000000',
    RATE_LIMIT_IP: '0',
    RATE_LIMIT_KV_READ: '0',
    RATE_LIMIT_KV_WRITE: '0',
    RATE_LIMIT_KV_DELETE: '0',
    PRESENCE_HEARTBEAT_MS: '500',
    PRESENCE_TTL_MS: '1500',
  });
  const rand = new Rand(SEED);
  const devices: Device[] = [];

  before(async () => {
    await world.start();
    for (let i = 0; i < DEVICES; i++) devices.push(await deviceWithToken(world.cluster, `changes-${i}`));
  });
  after(() => world.stop());

  /** The device's whole change log (GET /kv/_changes, every page), through whichever worker answers. */
  async function log(d: Device): Promise<{ changes: Change[]; revision: number }> {
    const changes: Change[] = [];
    let since = 0;
    let revision = 0;
    for (;;) {
      const res = await request(world.cluster, 'GET', `/kv/_changes?since=${since}&limit=1000`, {
        headers: { 'x-app-token': d.token }, localAddress: '127.0.0.2', timeoutMs: 5000,
      });
      assert.strictEqual(res.status, 200, res.text);
      changes.push(...res.json.changes);
      revision = res.json.revision;
      if (!res.json.more) return { changes, revision };
      since = changes[changes.length - 1].revision;
    }
  }

  /** One writer loop: random upserts and deletes on random devices through one source address. */
  function writer(localAddress: string, stats: Record<string, number>, running: () => boolean) {
    return (async () => {
      while (running()) {
        const d = devices[rand.int(DEVICES)];
        const key = `k${rand.int(KEYS)}`;
        const del = rand.chance(0.3);
        try {
          const res = await request(world.cluster, del ? 'DELETE' : 'POST', `/kv/${key}`, {
            body: del ? undefined : { at: Date.now(), n: rand.int(1000) }, headers: { 'x-app-token': d.token }, localAddress, timeoutMs: 5000,
          });
          const what = res.status < 300 ? (del ? 'deleted' : 'upserted') : `HTTP ${res.status}`;
          stats[what] = (stats[what] ?? 0) + 1;
        } catch {
          stats.failed = (stats.failed ?? 0) + 1;
          await sleep(100);
        }
        await sleep(rand.int(10));
      }
    })();
  }

  /**
   * A reader: one device, a chain of sockets. Each socket joins with the handshake token and
   * `since` = the last revision the reader received; everything any of them receives is kept in
   * arrival order.
   */
  class Reader {
    readonly seen: Change[] = [];
    readonly resyncs: unknown[] = [];
    sockets = 0;
    /** Sockets found dead by the liveness probe (no ack: a connection the sticky master handed to a worker that went away). */
    deadTransports = 0;
    last: number;
    private client?: TestClient;

    constructor(readonly device: Device, readonly first: number, readonly localAddress: string, private readonly n: number) {
      this.last = first;
    }

    private async open(): Promise<void> {
      const [ version, transport ] = GENERATIONS[(this.n + this.sockets) % GENERATIONS.length];
      this.sockets += 1;
      const c = world.socket({
        version, transport, localAddress: this.localAddress, reconnection: false, connectTimeoutMs: 3000,
        query: { token: this.device.token, since: String(this.last) },
      });
      this.client = c;
      c.raw.on('kv-key-changed', (p: Change) => {
        if (this.client !== c) return; // a socket given up on
        this.seen.push(p);
        this.last = p.revision;
      });
      c.raw.on('resync-required', (p: unknown) => this.resyncs.push(p));
      try {
        await c.waitFor('joined', () => true, { timeoutMs: 5000 });
      } catch (err) {
        this.drop();
        throw err;
      }
    }

    private drop() {
      const c = this.client;
      this.client = undefined;
      c?.close();
    }

    get connected() {
      return !!this.client?.connected;
    }

    /** For failure messages: the current socket and what it received. */
    describe() {
      const c = this.client;
      const events = c ? c.events.map(e => (e.event === 'kv-key-changed' ? e.args[0].revision : e.event)) : [];
      return `${this.device.uuid} via ${this.localAddress}: last ${this.last}, ${this.sockets} sockets, connected ${this.connected}, current socket's events ${JSON.stringify(events.slice(-12))}`;
    }

    /**
     * While `phase()` is 'chaos': keeps a socket joined, now and then drops it and rejoins on a
     * new one. While 'steady': only rejoins when the socket is gone, or found dead by a probe
     * (an ack that needs no lookup: join-token without a token). Returns at 'done'.
     */
    async run(phase: () => 'chaos' | 'steady' | 'done') {
      while (phase() !== 'done') {
        if (!this.connected) {
          this.drop();
          await this.open().catch(() => sleep(200));
          continue;
        }
        if (phase() === 'chaos') {
          await sleep(300 + rand.int(3000));
          if (phase() === 'chaos' && rand.chance(0.4)) this.drop();
          continue;
        }
        await sleep(1000);
        const alive = await this.client!.requestWithin(3000, 'join-token', {}).then(() => true, () => false);
        if (!alive && phase() !== 'done') {
          this.deadTransports += 1;
          this.drop();
        }
      }
    }
  }

  it(`${READERS} readers on ${DEVICES} devices, writers on both workers, kill -9 of a worker and a kill between commit and broadcast: every reader's kv-key-changed sequence is the log from its first since`, async () => {
    const c = world.cluster;
    let writing = true;
    let phase: 'chaos' | 'steady' | 'done' = 'chaos';
    const writeStats: Record<string, number> = {};
    const writers = WRITERS.map(addr => writer(addr, writeStats, () => writing));
    await sleep(2000); // some history, so that first sinces differ

    const readers: Reader[] = [];
    for (let i = 0; i < READERS; i++) {
      const d = devices[i % DEVICES];
      const { revision } = await log(d);
      readers.push(new Reader(d, rand.int(revision + 1), i % 2 ? '127.0.0.3' : '127.0.0.2', i));
    }
    const runs = readers.map(r => r.run(() => phase));
    const started = Date.now();
    const kills: string[] = [];

    await sleep(LOAD_MS * 0.25);
    // kill -9 of the worker behind 127.0.0.3.
    const victim = await c.workerFor('127.0.0.3');
    process.kill(victim, 'SIGKILL');
    kills.push(`SIGKILL ${victim} at ${Date.now() - started} ms`);
    await eventually(() => assert.ok(c.workerPids().length === 2 && !c.workerPids().includes(victim)), 60000, 200);

    await sleep(LOAD_MS * 0.25);
    // A write whose worker dies between its commit and its broadcast.
    const doomed = await eventually(async () => {
      const [ a, b ] = [ await c.workerFor('127.0.0.2'), await c.workerFor('127.0.0.3') ];
      assert.notStrictEqual(a, b);
      return a;
    }, 30000, 200);
    const crash = await request(c, 'POST', `/kv/${CRASH_KEY}`, {
      body: { v: 1 }, headers: { 'x-app-token': devices[0].token }, localAddress: '127.0.0.2', timeoutMs: 10000,
    }).then(res => `answered ${res.status}`, (err: Error) => `no answer (${err.message})`);
    kills.push(`crash between commit and broadcast of ${doomed} at ${Date.now() - started} ms (${crash})`);
    await eventually(() => assert.ok(c.workerPids().length === 2 && !c.workerPids().includes(doomed)), 60000, 200);

    await sleep(Math.max(0, LOAD_MS - (Date.now() - started)));
    writing = false;
    await Promise.all(writers);
    phase = 'steady';

    const logs = new Map<string, { changes: Change[]; revision: number }>();
    for (const d of devices) logs.set(d.uuid, await log(d));
    const crashChange = logs.get(devices[0].uuid)!.changes.find(ch => ch.key === CRASH_KEY);
    assert.ok(crashChange, 'the write of the crashing worker committed');

    // Every reader catches up with its device's latest revision (the recovery of lost broadcasts included).
    await eventually(() => {
      const behind = readers.filter(r => r.last < logs.get(r.device.uuid)!.revision);
      assert.deepStrictEqual(behind.map(r => `${r.describe()}; latest ${logs.get(r.device.uuid)!.revision}`), []);
    }, 30000, 200).catch(err => {
      console.log(c.grepLogs(/\[changes\]|\[realtime\]/).slice(-20).join('\n'));
      throw err;
    }).finally(() => {
      phase = 'done';
    });
    await Promise.all(runs);

    const problems: string[] = [];
    let delivered = 0;
    for (const [ i, r ] of readers.entries()) {
      const expected = logs.get(r.device.uuid)!.changes.filter(ch => ch.revision > r.first);
      delivered += r.seen.length;
      if (r.resyncs.length) problems.push(`reader ${i}: resync-required ${JSON.stringify(r.resyncs)}`);
      const got = r.seen.map(ch => ch.revision);
      const want = expected.map(ch => ch.revision);
      if (got.join() !== want.join()) {
        const at = got.findIndex((rev, j) => rev !== want[j]);
        problems.push(`reader ${i} (${r.device.uuid}, first since ${r.first}, ${r.sockets} sockets): got ${got.length} revisions, want ${want.length}; ` +
          `first difference at #${at}: got ${got.slice(Math.max(0, at - 2), at + 3)} want ${want.slice(Math.max(0, at - 2), at + 3)}`);
        continue;
      }
      for (const [ j, ch ] of r.seen.entries()) {
        try {
          assert.deepStrictEqual(ch, expected[j]);
        } catch {
          problems.push(`reader ${i}: revision ${ch.revision} payload ${JSON.stringify(ch)} differs from the log's ${JSON.stringify(expected[j])}`);
          break;
        }
      }
    }
    const sockets = readers.reduce((n, r) => n + r.sockets, 0);
    const dead = readers.reduce((n, r) => n + r.deadTransports, 0);
    const revisions = devices.map(d => logs.get(d.uuid)!.revision);
    console.log(`      seed ${SEED}: ${LOAD_MS} ms, writes ${JSON.stringify(writeStats)}, device revisions ${revisions}, ` +
      `${readers.length} readers over ${sockets} sockets (${dead} found dead by the probe), ${delivered} kv-key-changed checked, ${problems.length} readers differing; ${kills.join('; ')}`);
    assert.deepStrictEqual(problems, []);
  });
});
