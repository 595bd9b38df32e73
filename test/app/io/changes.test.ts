import assert from 'node:assert';
import { app } from 'egg-mock/bootstrap';
import type { KvChange } from '../../../app/lib/kvEvents';
import { deviceWithToken, installApp } from '../../support/factories';
import {
  closeAllClients, COMBINATIONS, connect, connectJoined, eventually, joinedPayload, startServer, stopServer, TestClient,
} from '../../support/socket';

/**
 * CONTRACT.md §7 "Never miss a change", on the socket side, for every client generation and
 * transport: join-token / handshake `since` (catch-up from the change log, then live events,
 * no gap and no duplicate, also while writes land), resync-required past retention, ordered
 * gap-free live delivery whatever order the workers' broadcasts arrive in, and the recovery
 * of a change whose broadcast never came. In one process the other workers' broadcasts
 * enter where theirs do (app.realtime.feeds.receive, the adapter's serverSideEmit handler);
 * a worker that died between commit and broadcast is a write whose publication is skipped.
 */

async function kvSet(token: string, key: string, value: unknown = { v: key }) {
  await app.httpRequest().post(`/kv/${encodeURIComponent(key)}`).set('x-app-token', token).send(value as object).expect(200);
}

async function batch(token: string, n: number, prefix = 'b') {
  const body: Record<string, unknown> = {};
  for (let i = 0; i < n; i++) body[`${prefix}${i}`] = { i };
  await app.httpRequest().post('/kv/_batchimport').set('x-app-token', token).send(body).expect(200);
}

/** The device's change log as GET /kv/_changes answers it (every page). */
async function log(token: string, since = 0): Promise<KvChange[]> {
  const out: KvChange[] = [];
  for (;;) {
    const res = await app.httpRequest().get(`/kv/_changes?since=${since}&limit=1000`).set('x-app-token', token).expect(200);
    out.push(...res.body.changes);
    if (!res.body.more) return out;
    since = out[out.length - 1].revision;
  }
}

/** Runs `write` committed but never broadcast (its worker died before publishing it). */
async function unpublished(write: () => Promise<unknown>) {
  const events = app.kvEvents as unknown as { publish(change: KvChange): void };
  const publish = events.publish;
  events.publish = () => undefined;
  try {
    await write();
  } finally {
    events.publish = publish;
  }
}

/** The next `n` events, asserted to be kv-key-changed; their payloads. */
async function nextChanges(client: TestClient, n: number): Promise<KvChange[]> {
  const out: KvChange[] = [];
  for (let i = 0; i < n; i++) out.push(await client.expectNext('kv-key-changed'));
  return out;
}

const revisions = (changes: KvChange[]) => changes.map(c => c.revision);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('test/app/io/changes.test.ts', () => {
  for (const combo of COMBINATIONS) {
    describe(combo.title, () => {
      before(() => startServer());
      afterEach(() => closeAllClients());
      after(() => stopServer());

      describe('[join-token {token, since}] catch-up from the change log', () => {
        it('after joined: every change with revision > since, oldest first, exactly the logged payloads, then the live ones', async () => {
          const { device, token } = await deviceWithToken();
          await kvSet(token, 'a');
          await batch(token, 3);
          await app.httpRequest().delete('/kv/a').set('x-app-token', token).expect(204);
          const client = await connect(combo);
          const ack = await client.request('join-token', { token, since: 0 });
          assert.deepStrictEqual(ack, { ok: true, uuid: device.uuid });
          assert.deepStrictEqual(await client.expectNext('device-joined'), { uuid: device.uuid, connections: 1 });
          assert.deepStrictEqual(await client.expectNext('joined'), joinedPayload(device.uuid, token, combo.transport));
          const logged = await log(token);
          assert.deepStrictEqual(revisions(logged), [ 1, 2, 3, 4, 5 ]);
          assert.deepStrictEqual(await nextChanges(client, 5), logged);
          await kvSet(token, 'live');
          const [ live ] = await nextChanges(client, 1);
          assert.deepStrictEqual(live, (await log(token, 5))[0]);
          assert.strictEqual(live.revision, 6);
        });

        it('since = n: only the changes after n', async () => {
          const { token } = await deviceWithToken();
          await batch(token, 6);
          const client = await connect(combo);
          await client.request('join-token', { token, since: 4 });
          await client.expectNext('device-joined');
          await client.expectNext('joined');
          assert.deepStrictEqual(await nextChanges(client, 2), await log(token, 4));
          await kvSet(token, 'x');
          assert.deepStrictEqual(revisions(await nextChanges(client, 1)), [ 7 ]);
        });

        it('since as a string of digits is the same number', async () => {
          const { token } = await deviceWithToken();
          await batch(token, 3);
          const client = await connect(combo);
          await client.request('join-token', { apptoken: token, since: '1' });
          await client.expectNext('device-joined');
          await client.expectNext('joined');
          assert.deepStrictEqual(revisions(await nextChanges(client, 2)), [ 2, 3 ]);
        });

        it('since at or above the latest revision: nothing from the log, the next live change is the first event', async () => {
          const { device, token } = await deviceWithToken();
          await batch(token, 3);
          // Every client stays open (closeAllClients): a close would reach the next one as a
          // device-left whenever the server gets to it.
          const clients: TestClient[] = [];
          for (const since of [ 3, 10, 3 ]) {
            const client = await connect(combo);
            clients.push(client);
            await client.request('join-token', { token, since });
            for (const c of clients) assert.deepStrictEqual(await c.expectNext('device-joined'), { uuid: device.uuid, connections: clients.length });
            await client.expectNext('joined');
          }
          await kvSet(token, 'x');
          for (const client of [ clients[0], clients[2] ]) assert.deepStrictEqual(revisions(await nextChanges(client, 1)), [ 4 ]);
        });

        it('without since, on a device new to the worker whose revision is read slowly: a change made right after joined arrives', async () => {
          // The feed's starting revision is read when the first socket of the device joins. If
          // that read finished after `joined` (a busy database), it counted the client's first
          // write, and the socket started past it: the change never came (seen once under load).
          const { device, token } = await deviceWithToken();
          await batch(token, 2);
          const deps = (app.realtime.feeds as unknown as { deps: { latest(ids: number[]): Promise<Map<number, number>> } }).deps;
          const latest = deps.latest;
          let release!: () => void;
          const held = new Promise<void>(resolve => {
            release = resolve;
          });
          let asked!: () => void;
          const reading = new Promise<void>(resolve => {
            asked = resolve;
          });
          deps.latest = async ids => {
            if (ids.includes(device.id)) {
              asked();
              await held;
            }
            return latest.call(deps, ids);
          };
          try {
            const client = await connect(combo);
            client.send('join-token', { token });
            await reading;
            await new Promise(resolve => setTimeout(resolve, 300));
            // A client that has its `joined` writes at once; the read of the revision finishes after the write.
            if (client.named('joined').length === 0) {
              release();
              await client.waitFor('joined');
            }
            await kvSet(token, 'first');
            release();
            assert.deepStrictEqual(await client.expectNext('device-joined'), { uuid: device.uuid, connections: 1 });
            assert.deepStrictEqual(await client.expectNext('joined'), joinedPayload(device.uuid, token, combo.transport));
            const [ change ] = await nextChanges(client, 1);
            assert.deepStrictEqual({ key: change.key, revision: change.revision }, { key: 'first', revision: 3 });
          } finally {
            deps.latest = latest;
            release();
          }
        });

        it('without since (or since null): no catch-up, the live changes from the join on', async () => {
          const { device, token } = await deviceWithToken();
          await batch(token, 3);
          // The earlier clients stay open (closeAllClients): a close would reach the next one as a
          // device-left whenever the server gets to it.
          let connections = 0;
          for (const payload of [{ token }, { token, since: null }]) {
            const client = await connect(combo);
            await client.request('join-token', payload);
            assert.deepStrictEqual(await client.expectNext('device-joined'), { uuid: device.uuid, connections: ++connections });
            await client.expectNext('joined');
            await kvSet(token, 'x');
            const [ next ] = await nextChanges(client, 1);
            assert.deepStrictEqual([ next.key, next.revision ], [ 'x', 3 + connections ]);
          }
        });

        it('the catch-up reads the log page by page: every page in order, then live', async () => {
          const feed = app.settings.changeFeed;
          const pageSize = feed.pageSize;
          feed.pageSize = 7;
          try {
            const { token } = await deviceWithToken();
            await batch(token, 30);
            const client = await connect(combo);
            await client.request('join-token', { token, since: 0 });
            await client.expectNext('device-joined');
            await client.expectNext('joined');
            assert.deepStrictEqual(await nextChanges(client, 30), await log(token));
            await kvSet(token, 'x');
            assert.deepStrictEqual(revisions(await nextChanges(client, 1)), [ 31 ]);
          } finally {
            feed.pageSize = pageSize;
          }
        });

        it('writes landing during the catch-up: every revision exactly once, in order, no gap', async () => {
          const { device, token } = await deviceWithToken();
          await batch(token, 300);
          const live = await connectJoined(combo, token, device.uuid, 1);
          const client = await connect(combo);
          const writes = Promise.all(range(1, 40).map(i => kvSet(token, `w${i}`)));
          await client.request('join-token', { token, since: 0 });
          await writes;
          await client.expectNext('device-joined');
          await client.expectNext('joined');
          const got = await nextChanges(client, 340);
          assert.deepStrictEqual(revisions(got), range(1, 340));
          assert.deepStrictEqual(got, await log(token));
          // The socket joined without since got the live ones: in order, none twice.
          const seen = live.payloads('kv-key-changed').map((c: KvChange) => c.revision);
          assert.deepStrictEqual(seen, range(seen[0] ?? 301, 340));
          assert.strictEqual(client.pending().length, 0);
        });

        it('rejoining with since while joined: the log after since again, then the live ones, nothing twice', async () => {
          const { device, token } = await deviceWithToken();
          const client = await connectJoined(combo, token, device.uuid, 1);
          await kvSet(token, 'a');
          await kvSet(token, 'b');
          assert.deepStrictEqual(revisions(await nextChanges(client, 2)), [ 1, 2 ]);
          await client.request('join-token', { token, since: 0 });
          await client.expectNext('device-joined');
          await client.expectNext('joined');
          assert.deepStrictEqual(revisions(await nextChanges(client, 2)), [ 1, 2 ]);
          await kvSet(token, 'c');
          assert.deepStrictEqual(revisions(await nextChanges(client, 1)), [ 3 ]);
        });

        it('rejoining without since while joined changes nothing in the stream', async () => {
          const { device, token } = await deviceWithToken();
          const other = await installApp(device, { appId: 'other-app' });
          const client = await connectJoined(combo, token, device.uuid, 1);
          await kvSet(token, 'a');
          assert.deepStrictEqual(await client.request('join-token', { token: other.token }), { ok: true, uuid: device.uuid });
          await kvSet(token, 'b');
          await client.waitFor('kv-key-changed', (c: KvChange) => c.revision === 2);
          assert.deepStrictEqual(revisions(client.payloads('kv-key-changed')), [ 1, 2 ]);
        });
      });

      describe('[handshake query.since] io/middleware/auth', () => {
        it('token and since in the handshake: device-joined, joined, the log after since, then live', async () => {
          const { device, token } = await deviceWithToken();
          await batch(token, 4);
          const client = await connect(combo, { query: { token, since: '2' } });
          assert.deepStrictEqual(await client.expectNext('device-joined'), { uuid: device.uuid, connections: 1 });
          assert.deepStrictEqual(await client.expectNext('joined'), joinedPayload(device.uuid, token, combo.transport));
          assert.deepStrictEqual(await nextChanges(client, 2), await log(token, 2));
          await kvSet(token, 'x');
          assert.deepStrictEqual(revisions(await nextChanges(client, 1)), [ 5 ]);
        });

        it('a since that is not a whole number ≥ 0: join-error {by:token,reason:invalid_since}, not joined', async () => {
          for (const since of [ '-1', '1.5', 'abc', '' ]) {
            const { device, token } = await deviceWithToken();
            const client = await connect(combo, { query: { token, since } });
            assert.deepStrictEqual(await client.expectNext('join-error'), { by: 'token', reason: 'invalid_since' });
            // Not in the room: a join of another socket is not seen, a later join-token is the next thing it gets.
            const probe = await connectJoined(combo, token, device.uuid, 1);
            await client.request('join-token', { token });
            assert.deepStrictEqual(await client.expectNext('device-joined'), { uuid: device.uuid, connections: 2 });
            probe.close();
            client.close();
          }
        });
      });

      describe('[join-token] invalid since', () => {
        it('join-error {by:token,reason:invalid_since} and ack {ok:false,reason:invalid_since}; nothing joined', async () => {
          const { device, token } = await deviceWithToken();
          const client = await connect(combo);
          for (const since of [ -1, 1.5, 'abc', '', true, {}, [ 1 ], 2 ** 60 ]) {
            const ack = await client.request('join-token', { token, since });
            assert.deepStrictEqual(ack, { ok: false, reason: 'invalid_since' }, `since ${JSON.stringify(since)}`);
            assert.deepStrictEqual(await client.expectNext('join-error'), { by: 'token', reason: 'invalid_since' });
          }
          // Without an ack: the event alone.
          client.send('join-token', { token, since: -5 });
          assert.deepStrictEqual(await client.expectNext('join-error'), { by: 'token', reason: 'invalid_since' });
          // A missing token still comes first: ack missing_token, no event.
          assert.deepStrictEqual(await client.request('join-token', { since: -1 }), { ok: false, reason: 'missing_token' });
          assert.deepStrictEqual(await client.request('join-token', { token }), { ok: true, uuid: device.uuid });
          assert.deepStrictEqual(await client.expectNext('device-joined'), { uuid: device.uuid, connections: 1 });
        });
      });

      describe('[resync-required] since older than the log keeps', () => {
        let retention: number;
        beforeEach(() => {
          retention = app.settings.changesRetention;
          app.settings.changesRetention = 3;
        });
        afterEach(() => {
          app.settings.changesRetention = retention;
        });

        it('resync-required {uuid, revision: latest} after joined, then live events; a since still kept is caught up', async () => {
          const { device, token } = await deviceWithToken();
          await batch(token, 8);
          await app.logTrimmer.runOnce();
          await app.httpRequest().get('/kv/_changes?since=1').set('x-app-token', token).expect(410);
          const client = await connect(combo);
          await client.request('join-token', { token, since: 1 });
          await client.expectNext('device-joined');
          await client.expectNext('joined');
          assert.deepStrictEqual(await client.expectNext('resync-required'), { uuid: device.uuid, revision: 8 });
          await kvSet(token, 'x');
          assert.deepStrictEqual(revisions(await nextChanges(client, 1)), [ 9 ]);

          const kept = await connect(combo, { query: { token, since: '6' } });
          await kept.expectNext('device-joined');
          await kept.expectNext('joined');
          assert.deepStrictEqual(revisions(await nextChanges(kept, 3)), [ 7, 8, 9 ]);
        });
      });

      describe('[kv-key-changed] ordered, gap-free live delivery', () => {
        it('broadcasts arriving out of order (other workers): delivered in revision order, each once', async () => {
          const { device, token } = await deviceWithToken();
          const client = await connectJoined(combo, token, device.uuid, 1);
          await unpublished(() => batch(token, 3));
          const [ c1, c2, c3 ] = await log(token);
          app.realtime.feeds.receive(c3);
          app.realtime.feeds.receive(c2);
          app.realtime.feeds.receive(c3);
          app.realtime.feeds.receive(c1);
          app.realtime.feeds.receive(c2);
          assert.deepStrictEqual(await nextChanges(client, 3), [ c1, c2, c3 ]);
          await kvSet(token, 'x');
          assert.deepStrictEqual(revisions(await nextChanges(client, 1)), [ 4 ]);
        });

        it('a change whose broadcast is missing is read from the log before the next one is delivered', async () => {
          const { device, token } = await deviceWithToken();
          const client = await connectJoined(combo, token, device.uuid, 1);
          await kvSet(token, 'a');
          await unpublished(() => kvSet(token, 'b'));
          await kvSet(token, 'c');
          assert.deepStrictEqual(await nextChanges(client, 3), await log(token));
        });

        it('a committed change whose worker died before broadcasting it still reaches every joined socket (within 5 s)', async () => {
          const { device, token } = await deviceWithToken();
          const first = await connectJoined(combo, token, device.uuid, 1);
          const second = await connectJoined(combo, token, device.uuid, 2);
          await first.expectNext('device-joined');
          await unpublished(() => kvSet(token, 'lost'));
          const [ lost ] = await log(token);
          assert.deepStrictEqual(await first.expectNext('kv-key-changed', 5000), lost);
          assert.deepStrictEqual(await second.expectNext('kv-key-changed', 5000), lost);
        });

        it('a socket catching up and a live socket, writes from "several workers" out of order: both strictly in order, no gap', async () => {
          const { device, token } = await deviceWithToken();
          await batch(token, 50);
          const live = await connectJoined(combo, token, device.uuid, 1);
          await unpublished(() => Promise.all(range(1, 20).map(i => kvSet(token, `w${i}`))));
          const late = await log(token, 50);
          const client = await connect(combo);
          await client.request('join-token', { token, since: 10 });
          for (const c of [ ...late ].reverse()) app.realtime.feeds.receive(c);
          await client.expectNext('device-joined');
          await client.expectNext('joined');
          assert.deepStrictEqual(revisions(await nextChanges(client, 60)), range(11, 70));
          await eventually(() => assert.deepStrictEqual(revisions(live.payloads('kv-key-changed')), range(51, 70)));
          assert.deepStrictEqual(live.payloads('kv-key-changed'), late);
        });
      });
    });
  }
});
