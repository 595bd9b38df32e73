import assert from 'node:assert';
import { REJOIN_BURST, REJOIN_REFILL_MS, takeRejoin } from '../../../app/lib/realtime';
import { app } from 'egg-mock/bootstrap';
import { createDevice, deviceWithToken, installApp, TestDevice } from '../../support/factories';
import {
  closeAllClients, COMBINATIONS, connect, connectJoined, eventually, joinedPayload, startServer, stopServer, TestClient,
} from '../../support/socket';

/**
 * CONTRACT.md §4 and the channel seed doc, pinned for every client generation and
 * transport: socket.io-client 4.x and 2.x (EIO3), each over websocket and polling.
 * Absence of an event is never asserted by waiting: the test triggers a later,
 * known event and checks that it is the next one the socket receives.
 */

const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

async function kvSet(token: string, key: string, value: unknown) {
  const res = await app.httpRequest().post(`/kv/${encodeURIComponent(key)}`).set('x-app-token', token).send(value as object).expect(200);
  return res.body as { deviceId: number; key: string; created: boolean; updatedAt: string };
}

async function online() {
  const res = await app.httpRequest().get('/devices/online').expect(200);
  return res.body;
}

async function uninstall(device: TestDevice, installId: string) {
  await app.httpRequest().delete(`/apps/devices/${encodeURIComponent(device.uuid)}/uninstall/${encodeURIComponent(installId)}`).expect(204);
}

/** The fields §4 defines for a kv-key-changed payload (extra fields such as `revision` are allowed). */
function contractFields(payload: Record<string, unknown>) {
  const known = [ 'uuid', 'key', 'action', 'created', 'updatedAt', 'batch', 'deletedAt' ];
  return Object.fromEntries(Object.entries(payload).filter(([ k ]) => known.includes(k)));
}

async function expectUpsert(client: TestClient, expected: { uuid: string; key: string; created: boolean; updatedAt?: string; batch?: true }) {
  const payload = await client.expectNext('kv-key-changed');
  assert.match(payload.updatedAt, ISO_MS);
  assert.deepStrictEqual(contractFields(payload), { action: 'upsert', updatedAt: payload.updatedAt, ...expected });
  return payload;
}

async function expectDelete(client: TestClient, uuid: string, key: string) {
  const payload = await client.expectNext('kv-key-changed');
  assert.match(payload.deletedAt, ISO_MS);
  assert.deepStrictEqual(contractFields(payload), { uuid, key, action: 'delete', deletedAt: payload.deletedAt });
  return payload;
}

describe('test/app/io/channel.test.ts', () => {
  for (const combo of COMBINATIONS) {
    describe(combo.title, () => {
      before(() => startServer());
      afterEach(() => closeAllClients());
      after(() => stopServer());

      describe('[connection] io/middleware/auth handshake join', () => {
        it('query.token joins: device-joined {uuid,connections} then joined {by,uuid}, then the device\'s changes arrive', async () => {
          const { device, token } = await deviceWithToken();
          const client = await connect(combo, { query: { token } });
          assert.deepStrictEqual(await client.expectNext('device-joined'), { uuid: device.uuid, connections: 1 });
          assert.deepStrictEqual(await client.expectNext('joined'), joinedPayload(device.uuid, token, combo.transport));
          const res = await kvSet(token, 'k', { v: 1 });
          await expectUpsert(client, { uuid: device.uuid, key: 'k', created: true, updatedAt: res.updatedAt });
        });

        it('query.apptoken joins the same way', async () => {
          const { device, token } = await deviceWithToken();
          const client = await connect(combo, { query: { apptoken: token } });
          assert.deepStrictEqual(await client.expectNext('device-joined'), { uuid: device.uuid, connections: 1 });
          assert.deepStrictEqual(await client.expectNext('joined'), joinedPayload(device.uuid, token, combo.transport));
        });

        it('device-joined goes to the whole room, the joiner included', async () => {
          const { device, token } = await deviceWithToken();
          const first = await connectJoined(combo, token, device.uuid, 1);
          const second = await connectJoined(combo, token, device.uuid, 2);
          assert.deepStrictEqual(await first.expectNext('device-joined'), { uuid: device.uuid, connections: 2 });
          assert.deepStrictEqual(second.pending(), []);
        });

        it('an unknown token: join-error {by,reason:invalid_token}, the socket stays connected and outside every room', async () => {
          const { device, token } = await deviceWithToken();
          const client = await connect(combo, { query: { token: 'f'.repeat(64) } });
          assert.deepStrictEqual(await client.expectNext('join-error'), { by: 'token', reason: 'invalid_token' });
          assert.strictEqual(client.connected, true);
          assert.deepStrictEqual(await online(), { success: true, devices: [] });
          // Not in the room: the next event is the join below, not the write.
          await kvSet(token, 'k', { v: 1 });
          assert.deepStrictEqual(await client.request('join-token', { token }), { ok: true, uuid: device.uuid });
          assert.deepStrictEqual(await client.expectNext('device-joined'), { uuid: device.uuid, connections: 1 });
        });

        it('no token, or an empty one: connected, no event at all', async () => {
          const { device, token } = await deviceWithToken();
          for (const query of [ undefined, { token: '' }, { apptoken: '' }] as Array<Record<string, string> | undefined>) {
            const client = await connect(combo, query ? { query } : {});
            await kvSet(token, 'k', { v: 1 });
            assert.deepStrictEqual(await client.request('join-token', { token }), { ok: true, uuid: device.uuid });
            assert.deepStrictEqual(await client.expectNext('device-joined'), { uuid: device.uuid, connections: 1 });
            assert.deepStrictEqual(await client.expectNext('joined'), joinedPayload(device.uuid, token, combo.transport));
            client.close();
            await eventually(async () => assert.deepStrictEqual(await online(), { success: true, devices: [] }));
          }
        });
      });

      describe('[join-token] io/controller/token join()', () => {
        it('{token} with an ack: device-joined, joined, ack {ok:true,uuid}', async () => {
          const { device, token } = await deviceWithToken();
          const client = await connect(combo);
          assert.deepStrictEqual(await client.request('join-token', { token }), { ok: true, uuid: device.uuid });
          assert.deepStrictEqual(client.events.map(e => e.event), [ 'device-joined', 'joined' ], 'events precede the ack');
          assert.deepStrictEqual(await client.expectNext('device-joined'), { uuid: device.uuid, connections: 1 });
          assert.deepStrictEqual(await client.expectNext('joined'), joinedPayload(device.uuid, token, combo.transport));
        });

        it('{apptoken} joins too', async () => {
          const { device, token } = await deviceWithToken();
          const client = await connect(combo);
          assert.deepStrictEqual(await client.request('join-token', { apptoken: token }), { ok: true, uuid: device.uuid });
          assert.deepStrictEqual(await client.expectNext('device-joined'), { uuid: device.uuid, connections: 1 });
          assert.deepStrictEqual(await client.expectNext('joined'), joinedPayload(device.uuid, token, combo.transport));
        });

        it('without an ack callback: the same two events', async () => {
          const { device, token } = await deviceWithToken();
          const client = await connect(combo);
          client.send('join-token', { token });
          assert.deepStrictEqual(await client.expectNext('device-joined'), { uuid: device.uuid, connections: 1 });
          assert.deepStrictEqual(await client.expectNext('joined'), joinedPayload(device.uuid, token, combo.transport));
        });

        it('a payload without a non-empty string token: ack {ok:false,reason:missing_token}, no event', async () => {
          const { device, token } = await deviceWithToken();
          const client = await connect(combo);
          const payloads: unknown[][] = [
            [], [{}], [{ token: '' }], [{ apptoken: '' }], [{ token: 123 }], [{ token: null }], [{ token: [ token ] }],
            [{ token: { token } }], [{ apptoken: true }], [ token ], [ 42 ], [ null ], [[ token ]], [ 'x'.repeat(100000) ],
          ];
          for (const args of payloads) {
            assert.deepStrictEqual(await client.request('join-token', ...args), { ok: false, reason: 'missing_token' }, JSON.stringify(args).slice(0, 80));
          }
          client.send('join-token'); // no payload and no ack: nothing at all
          client.send('join-token', { token: 7 });
          assert.deepStrictEqual(await client.request('join-token', { token }), { ok: true, uuid: device.uuid });
          assert.deepStrictEqual(await client.expectNext('device-joined'), { uuid: device.uuid, connections: 1 });
        });

        it('an unknown or uninstalled token: join-error invalid_token and ack {ok:false,reason:invalid_token}', async () => {
          const { device, install } = await deviceWithToken();
          await uninstall(device, install.id);
          const client = await connect(combo);
          for (const bad of [ install.token, 'nope', 'a'.repeat(300), 'x'.repeat(100000) ]) {
            assert.deepStrictEqual(await client.request('join-token', { token: bad }), { ok: false, reason: 'invalid_token' });
            assert.deepStrictEqual(await client.expectNext('join-error'), { by: 'token', reason: 'invalid_token' });
          }
          assert.deepStrictEqual(client.pending(), []);
          assert.deepStrictEqual(await online(), { success: true, devices: [] });
        });

        it('rejoining (same token, or another token of the same device): device-joined with the count unchanged, then joined', async () => {
          const { device, token } = await deviceWithToken();
          const other = (await installApp(device, { appId: 'other-app' })).token;
          const watcher = await connectJoined(combo, token, device.uuid, 1);
          const client = await connectJoined(combo, token, device.uuid, 2);
          assert.deepStrictEqual(await watcher.expectNext('device-joined'), { uuid: device.uuid, connections: 2 });
          for (const t of [ token, other ]) {
            assert.deepStrictEqual(await client.request('join-token', { token: t }), { ok: true, uuid: device.uuid });
            assert.deepStrictEqual(await client.expectNext('device-joined'), { uuid: device.uuid, connections: 2 });
            assert.deepStrictEqual(await client.expectNext('joined'), joinedPayload(device.uuid, t, combo.transport));
            assert.deepStrictEqual(await watcher.expectNext('device-joined'), { uuid: device.uuid, connections: 2 });
          }
          // Still one subscription per socket: one event per write.
          await kvSet(token, 'k', { v: 1 });
          await kvSet(token, 'k', { v: 2 });
          await expectUpsert(client, { uuid: device.uuid, key: 'k', created: true });
          await expectUpsert(client, { uuid: device.uuid, key: 'k', created: false });
        });

        it('rejoining with the token it already joined with: no lookup; the room is told (§4) REJOIN_BURST times, then the joiner alone gets joined', async () => {
          const { device, token } = await deviceWithToken();
          const watcher = await connectJoined(combo, token, device.uuid, 1);
          const client = await connectJoined(combo, token, device.uuid, 2);
          assert.deepStrictEqual(await watcher.expectNext('device-joined'), { uuid: device.uuid, connections: 2 });
          const state = app.sharedState;
          const presenceJoin = state.presenceJoin;
          let presenceCalls = 0;
          state.presenceJoin = (...args) => {
            presenceCalls += 1;
            return presenceJoin.apply(state, args);
          };
          app.tokenCache.clear(); // a lookup would have to go to the database: none is made
          const queries: string[] = [];
          app.model.addHook('afterQuery', 'rejoinSpy', (_options, query) => {
            const sql = (query as unknown as { sql?: string }).sql ?? '';
            if (sql.includes('app_installs')) queries.push(sql);
          });
          try {
            for (let i = 0; i < REJOIN_BURST + 3; i++) {
              assert.deepStrictEqual(await client.request('join-token', { token }), { ok: true, uuid: device.uuid });
              if (i < REJOIN_BURST) assert.deepStrictEqual(await client.expectNext('device-joined'), { uuid: device.uuid, connections: 2 });
              assert.deepStrictEqual(await client.expectNext('joined'), joinedPayload(device.uuid, token, combo.transport));
            }
          } finally {
            state.presenceJoin = presenceJoin;
            app.model.removeHook('afterQuery', 'rejoinSpy');
          }
          assert.strictEqual(presenceCalls, REJOIN_BURST);
          assert.deepStrictEqual(queries, []);
          for (let i = 0; i < REJOIN_BURST; i++) assert.deepStrictEqual(await watcher.expectNext('device-joined'), { uuid: device.uuid, connections: 2 });
          // Nothing more reached the room: the next event of both sockets is the next write.
          await kvSet(token, 'k', { v: 1 });
          await expectUpsert(watcher, { uuid: device.uuid, key: 'k', created: true });
          await expectUpsert(client, { uuid: device.uuid, key: 'k', created: true });
          assert.deepStrictEqual(client.pending(), []);
        });

        it('the rejoin budget: REJOIN_BURST announcements at once, one more every REJOIN_REFILL_MS, never more than REJOIN_BURST saved up', () => {
          const state: { rejoins?: { left: number; at: number } } = {};
          const t0 = 1_000_000;
          const taken = (now: number) => takeRejoin(state, now);
          assert.deepStrictEqual(Array.from({ length: REJOIN_BURST + 1 }, () => taken(t0)), [ ...Array(REJOIN_BURST).fill(true), false ]);
          assert.strictEqual(taken(t0 + REJOIN_REFILL_MS - 1), false);
          assert.strictEqual(taken(t0 + REJOIN_REFILL_MS), true);
          assert.strictEqual(taken(t0 + REJOIN_REFILL_MS + 1), false);
          // A long quiet time refills the whole burst, no more.
          const later = t0 + 100 * REJOIN_REFILL_MS;
          assert.deepStrictEqual(Array.from({ length: REJOIN_BURST + 1 }, () => taken(later)), [ ...Array(REJOIN_BURST).fill(true), false ]);
        });

        it('join-token and leave-token sent back to back are applied in the order sent', async () => {
          const { device, token } = await deviceWithToken();
          const client = await connect(combo);
          app.tokenCache.clear(); // both lookups go to the database
          const [ joined, left ] = await Promise.all([
            client.request('join-token', { token }),
            client.request('leave-token', { token }),
          ]);
          assert.deepStrictEqual(joined, { ok: true, uuid: device.uuid });
          assert.deepStrictEqual(left, { ok: true, uuid: device.uuid });
          assert.deepStrictEqual(await client.expectNext('device-joined'), { uuid: device.uuid, connections: 1 });
          assert.deepStrictEqual(await client.expectNext('joined'), joinedPayload(device.uuid, token, combo.transport));
          assert.deepStrictEqual(await online(), { success: true, devices: [] });
          await kvSet(token, 'k', { v: 1 });
          assert.deepStrictEqual(await client.request('join-token', { token }), { ok: true, uuid: device.uuid });
          assert.deepStrictEqual(await client.expectNext('device-joined'), { uuid: device.uuid, connections: 1 });
        });

        it('different tokens of the same device share one room', async () => {
          const { device, token } = await deviceWithToken();
          const other = (await installApp(device, { appId: 'other-app' })).token;
          const a = await connectJoined(combo, token, device.uuid, 1);
          const b = await connect(combo);
          assert.deepStrictEqual(await b.request('join-token', { apptoken: other }), { ok: true, uuid: device.uuid });
          assert.deepStrictEqual(await a.expectNext('device-joined'), { uuid: device.uuid, connections: 2 });
          assert.deepStrictEqual(await b.expectNext('device-joined'), { uuid: device.uuid, connections: 2 });
          await b.expectNext('joined');
          const res = await kvSet(other, 'shared', { v: 1 });
          for (const c of [ a, b ]) await expectUpsert(c, { uuid: device.uuid, key: 'shared', created: true, updatedAt: res.updatedAt });
        });

        it('one socket can join several devices', async () => {
          const a = await deviceWithToken();
          const b = await deviceWithToken();
          const client = await connectJoined(combo, a.token, a.device.uuid, 1);
          assert.deepStrictEqual(await client.request('join-token', { token: b.token }), { ok: true, uuid: b.device.uuid });
          assert.deepStrictEqual(await client.expectNext('device-joined'), { uuid: b.device.uuid, connections: 1 });
          await client.expectNext('joined');
          await kvSet(b.token, 'kb', { v: 1 });
          await kvSet(a.token, 'ka', { v: 1 });
          await expectUpsert(client, { uuid: b.device.uuid, key: 'kb', created: true });
          await expectUpsert(client, { uuid: a.device.uuid, key: 'ka', created: true });
        });
      });

      describe('[leave-token] io/controller/token leave()', () => {
        it('{token} with an ack: ack {ok:true,uuid}, device-left to the room, no more changes for the leaver', async () => {
          const { device, token } = await deviceWithToken();
          const watcher = await connectJoined(combo, token, device.uuid, 1);
          const client = await connectJoined(combo, token, device.uuid, 2);
          await watcher.expectNext('device-joined');
          assert.deepStrictEqual(await client.request('leave-token', { token }), { ok: true, uuid: device.uuid });
          assert.deepStrictEqual(await watcher.expectNext('device-left'), { uuid: device.uuid, connections: 1 });
          await kvSet(token, 'k', { v: 1 });
          await expectUpsert(watcher, { uuid: device.uuid, key: 'k', created: true });
          // The leaver saw neither device-left nor the write: its next event is its own rejoin.
          assert.deepStrictEqual(await client.request('join-token', { token }), { ok: true, uuid: device.uuid });
          assert.deepStrictEqual(await client.expectNext('device-joined'), { uuid: device.uuid, connections: 2 });
        });

        it('without an ack callback: the leave still happens (device-left to the room)', async () => {
          const { device, token } = await deviceWithToken();
          const watcher = await connectJoined(combo, token, device.uuid, 1);
          const client = await connectJoined(combo, token, device.uuid, 2);
          await watcher.expectNext('device-joined');
          client.send('leave-token', { token });
          assert.deepStrictEqual(await watcher.expectNext('device-left'), { uuid: device.uuid, connections: 1 });
        });

        it('{apptoken}, and another token of the same device, leave the room too', async () => {
          const { device, token } = await deviceWithToken();
          const other = (await installApp(device, { appId: 'other-app' })).token;
          const client = await connectJoined(combo, token, device.uuid, 1);
          assert.deepStrictEqual(await client.request('leave-token', { apptoken: other }), { ok: true, uuid: device.uuid });
          assert.deepStrictEqual(await online(), { success: true, devices: [] });
        });

        it('an invalid token is ignored: ack {ok:false,reason:invalid_token}, no event, still in the room', async () => {
          const { device, token } = await deviceWithToken();
          const watcher = await connectJoined(combo, token, device.uuid, 1);
          const client = await connectJoined(combo, token, device.uuid, 2);
          await watcher.expectNext('device-joined');
          for (const bad of [ 'nope', 'f'.repeat(64), 'x'.repeat(100000) ]) {
            assert.deepStrictEqual(await client.request('leave-token', { token: bad }), { ok: false, reason: 'invalid_token' });
          }
          client.send('leave-token', { token: 'nope' });
          await kvSet(token, 'k', { v: 1 });
          await expectUpsert(client, { uuid: device.uuid, key: 'k', created: true });
          await expectUpsert(watcher, { uuid: device.uuid, key: 'k', created: true });
        });

        it('a payload without a non-empty string token: ack {ok:false,reason:missing_token}, no event', async () => {
          const { device, token } = await deviceWithToken();
          const client = await connectJoined(combo, token, device.uuid, 1);
          for (const args of [[], [{}], [{ token: '' }], [{ apptoken: 5 }], [ null ], [ 12 ], [[ token ]], [ token ]] as unknown[][]) {
            assert.deepStrictEqual(await client.request('leave-token', ...args), { ok: false, reason: 'missing_token' });
          }
          await kvSet(token, 'k', { v: 1 });
          await expectUpsert(client, { uuid: device.uuid, key: 'k', created: true });
        });

        it('a valid token of a device the socket did not join: ack {ok:true,uuid}, no event anywhere', async () => {
          const a = await deviceWithToken();
          const b = await deviceWithToken();
          const watcher = await connectJoined(combo, b.token, b.device.uuid, 1);
          const client = await connectJoined(combo, a.token, a.device.uuid, 1);
          assert.deepStrictEqual(await client.request('leave-token', { token: b.token }), { ok: true, uuid: b.device.uuid });
          await kvSet(b.token, 'k', { v: 1 });
          await kvSet(a.token, 'k', { v: 1 });
          await expectUpsert(watcher, { uuid: b.device.uuid, key: 'k', created: true });
          await expectUpsert(client, { uuid: a.device.uuid, key: 'k', created: true });
        });
      });

      describe('[leave-all] io/controller/token leaveAll()', () => {
        it('ack {ok:true} (no uuid); every room it had joined gets device-left; no more changes', async () => {
          const a = await deviceWithToken();
          const b = await deviceWithToken();
          const watchA = await connectJoined(combo, a.token, a.device.uuid, 1);
          const watchB = await connectJoined(combo, b.token, b.device.uuid, 1);
          const client = await connectJoined(combo, a.token, a.device.uuid, 2);
          assert.deepStrictEqual(await client.request('join-token', { token: b.token }), { ok: true, uuid: b.device.uuid });
          await client.expectNext('device-joined');
          await client.expectNext('joined');
          await watchA.expectNext('device-joined');
          await watchB.expectNext('device-joined');

          assert.deepStrictEqual(await client.request('leave-all'), { ok: true });
          assert.deepStrictEqual(await watchA.expectNext('device-left'), { uuid: a.device.uuid, connections: 1 });
          assert.deepStrictEqual(await watchB.expectNext('device-left'), { uuid: b.device.uuid, connections: 1 });

          await kvSet(a.token, 'k', { v: 1 });
          await kvSet(b.token, 'k', { v: 1 });
          await expectUpsert(watchA, { uuid: a.device.uuid, key: 'k', created: true });
          await expectUpsert(watchB, { uuid: b.device.uuid, key: 'k', created: true });
          assert.deepStrictEqual(await client.request('join-token', { token: a.token }), { ok: true, uuid: a.device.uuid });
          assert.deepStrictEqual(await client.expectNext('device-joined'), { uuid: a.device.uuid, connections: 2 });
        });

        it('without an ack callback, as the seed\'s cleanup code sends it: the rooms still get device-left', async () => {
          const { device, token } = await deviceWithToken();
          const watcher = await connectJoined(combo, token, device.uuid, 1);
          const client = await connectJoined(combo, token, device.uuid, 2);
          await watcher.expectNext('device-joined');
          client.send('leave-all');
          assert.deepStrictEqual(await watcher.expectNext('device-left'), { uuid: device.uuid, connections: 1 });
          await kvSet(token, 'k', { v: 1 });
          await expectUpsert(watcher, { uuid: device.uuid, key: 'k', created: true });
          assert.deepStrictEqual(await client.request('join-token', { token }), { ok: true, uuid: device.uuid });
          assert.deepStrictEqual(await client.expectNext('device-joined'), { uuid: device.uuid, connections: 2 });
        });

        it('with nothing joined, and with any payload: ack {ok:true}, no event', async () => {
          const { device, token } = await deviceWithToken();
          const client = await connect(combo);
          assert.deepStrictEqual(await client.request('leave-all'), { ok: true });
          assert.deepStrictEqual(await client.request('leave-all', { token }), { ok: true });
          assert.deepStrictEqual(await client.request('leave-all', 1, null, 'x'), { ok: true });
          client.send('leave-all');
          assert.deepStrictEqual(await client.request('join-token', { token }), { ok: true, uuid: device.uuid });
          assert.deepStrictEqual(await client.expectNext('device-joined'), { uuid: device.uuid, connections: 1 });
        });
      });

      describe('[disconnect] io/middleware/auth after next()', () => {
        it('the room gets device-left {uuid,connections} when a member disconnects', async () => {
          const { device, token } = await deviceWithToken();
          const watcher = await connectJoined(combo, token, device.uuid, 1);
          const client = await connectJoined(combo, token, device.uuid, 2);
          await watcher.expectNext('device-joined');
          client.close();
          assert.deepStrictEqual(await watcher.expectNext('device-left'), { uuid: device.uuid, connections: 1 });
          assert.deepStrictEqual(await online(), { success: true, devices: [{ uuid: device.uuid, connections: 1, name: device.name }] });
        });
      });

      describe('[DELETE /apps/devices/:uuid/uninstall/:installId] token revocation', () => {
        it('the socket gets left {by,uuid,reason:token_revoked}, the room device-left, and no more changes reach it', async () => {
          const { device, install, token } = await deviceWithToken();
          const other = (await installApp(device, { appId: 'other-app' })).token;
          const watcher = await connectJoined(combo, other, device.uuid, 1);
          const client = await connectJoined(combo, token, device.uuid, 2);
          await watcher.expectNext('device-joined');

          await uninstall(device, install.id);
          assert.deepStrictEqual(await client.expectNext('left'), { by: 'token', uuid: device.uuid, reason: 'token_revoked' });
          assert.deepStrictEqual(await watcher.expectNext('device-left'), { uuid: device.uuid, connections: 1 });
          assert.deepStrictEqual(await online(), { success: true, devices: [{ uuid: device.uuid, connections: 1, name: device.name }] });

          await kvSet(other, 'after', { v: 1 });
          await expectUpsert(watcher, { uuid: device.uuid, key: 'after', created: true });
          // The revoked token no longer joins; the socket's next event is that join-error, not the write.
          assert.deepStrictEqual(await client.request('join-token', { token }), { ok: false, reason: 'invalid_token' });
          assert.deepStrictEqual(await client.expectNext('join-error'), { by: 'token', reason: 'invalid_token' });
          assert.strictEqual(client.connected, true);
        });

        it('a socket joined through a revoked token and a still-valid one stays in the room', async () => {
          const { device, install, token } = await deviceWithToken();
          const other = (await installApp(device, { appId: 'other-app' })).token;
          const client = await connectJoined(combo, token, device.uuid, 1);
          assert.deepStrictEqual(await client.request('join-token', { token: other }), { ok: true, uuid: device.uuid });
          await client.expectNext('device-joined');
          await client.expectNext('joined');
          await uninstall(device, install.id);
          await kvSet(other, 'k', { v: 1 });
          await expectUpsert(client, { uuid: device.uuid, key: 'k', created: true });
        });

        it('uninstalling a token the socket did not join with changes nothing for it', async () => {
          const { device, token } = await deviceWithToken();
          const unused = await installApp(device, { appId: 'unused' });
          const client = await connectJoined(combo, token, device.uuid, 1);
          await uninstall(device, unused.id);
          await kvSet(token, 'k', { v: 1 });
          await expectUpsert(client, { uuid: device.uuid, key: 'k', created: true });
        });
      });

      describe('[kv-key-changed] lib/realtime broadcast of committed KV writes', () => {
        it('upsert: {uuid,key,action:upsert,created,updatedAt}, created true then false, no batch flag', async () => {
          const { device, token } = await deviceWithToken();
          const client = await connectJoined(combo, token, device.uuid, 1);
          const first = await kvSet(token, 'settings/theme', { dark: true });
          const second = await kvSet(token, 'settings/theme', []);
          await expectUpsert(client, { uuid: device.uuid, key: 'settings/theme', created: true, updatedAt: first.updatedAt });
          await expectUpsert(client, { uuid: device.uuid, key: 'settings/theme', created: false, updatedAt: second.updatedAt });
        });

        it('batch import: one upsert per key with batch:true, in input order', async () => {
          const { device, token } = await deviceWithToken();
          await kvSet(token, 'alpha', { v: 0 });
          const client = await connectJoined(combo, token, device.uuid, 1);
          await app.httpRequest().post('/kv/_batchimport').set('x-app-token', token)
            .send({ zeta: { v: 1 }, alpha: { v: 2 }, 'mid/key': [ 3 ] }).expect(200);
          const items: Array<{ updatedAt: string }> = [];
          for (const [ key, created ] of [[ 'zeta', true ], [ 'alpha', false ], [ 'mid/key', true ]] as Array<[string, boolean]>) {
            items.push(await expectUpsert(client, { uuid: device.uuid, key, created, batch: true }));
          }
          assert.ok(items.every(i => i.updatedAt === items[0].updatedAt));
        });

        it('delete: {uuid,key,action:delete,deletedAt}', async () => {
          const { device, token } = await deviceWithToken();
          await kvSet(token, 'a/b', { v: 1 });
          const client = await connectJoined(combo, token, device.uuid, 1);
          await app.httpRequest().delete('/kv/a%2Fb').set('x-app-token', token).expect(204);
          await expectDelete(client, device.uuid, 'a/b');
        });

        it('reads broadcast nothing', async () => {
          const { device, token } = await deviceWithToken();
          await kvSet(token, 'k', { v: 1 });
          const client = await connectJoined(combo, token, device.uuid, 1);
          for (const path of [ '/kv/k', '/kv/k/metadata', '/kv', '/kv/_keys', '/kv/_info' ]) {
            await app.httpRequest().get(path).set('x-app-token', token).expect(200);
          }
          await kvSet(token, 'marker', { v: 1 });
          await expectUpsert(client, { uuid: device.uuid, key: 'marker', created: true });
        });

        it('failed writes broadcast nothing', async () => {
          const { device, token } = await deviceWithToken();
          const client = await connectJoined(combo, token, device.uuid, 1);
          const h = () => ({ 'x-app-token': token });
          await app.httpRequest().post('/kv/k').set(h()).expect(400);
          await app.httpRequest().post('/kv/k').set('content-type', 'application/json').set(h()).send('{"broken"').expect(400);
          await app.httpRequest().post(`/kv/${'k'.repeat(192)}`).set(h()).send({ v: 1 }).expect(400);
          await app.httpRequest().post('/kv/k').set('x-app-token', 'nope').send({ v: 1 }).expect(401);
          await app.httpRequest().delete('/kv/missing').set(h()).expect(404);
          await app.httpRequest().post('/kv/_batchimport').set(h()).send({}).expect(400);
          await app.httpRequest().post('/kv/_batchimport').set(h()).send({ ok: { v: 1 }, ['x'.repeat(192)]: { v: 2 } }).expect(400);
          await kvSet(token, 'marker', { v: 1 });
          await expectUpsert(client, { uuid: device.uuid, key: 'marker', created: true });
          await app.httpRequest().get('/kv/ok').set(h()).expect(404);
        });

        it('a socket of device B gets nothing from device A', async () => {
          const a = await deviceWithToken();
          const b = await deviceWithToken();
          const client = await connectJoined(combo, b.token, b.device.uuid, 1);
          await kvSet(a.token, 'k', { v: 1 });
          await app.httpRequest().delete('/kv/k').set('x-app-token', a.token).expect(204);
          await app.httpRequest().post('/kv/_batchimport').set('x-app-token', a.token).send({ x: { v: 1 } }).expect(200);
          await kvSet(b.token, 'mine', { v: 1 });
          await expectUpsert(client, { uuid: b.device.uuid, key: 'mine', created: true });
        });
      });

      describe('[GET /devices/online] device.online() presence', () => {
        it('counts distinct sockets per device, most first, and drops to [] once all disconnect', async () => {
          const a = await deviceWithToken();
          const b = await deviceWithToken();
          const otherA = (await installApp(a.device, { appId: 'other-app' })).token;
          const s1 = await connectJoined(combo, a.token, a.device.uuid, 1);
          assert.deepStrictEqual(await s1.request('join-token', { token: otherA }), { ok: true, uuid: a.device.uuid });
          await connectJoined(combo, otherA, a.device.uuid, 2);
          await connectJoined(combo, b.token, b.device.uuid, 1);
          await connect(combo); // connected but joined nowhere: not counted
          assert.deepStrictEqual(await online(), {
            success: true,
            devices: [
              { uuid: a.device.uuid, connections: 2, name: a.device.name },
              { uuid: b.device.uuid, connections: 1, name: b.device.name },
            ],
          });
          closeAllClients();
          await eventually(async () => assert.deepStrictEqual(await online(), { success: true, devices: [] }));
        });

        it('leave-all takes effect before its ack', async () => {
          const { device, token } = await deviceWithToken();
          const client = await connectJoined(combo, token, device.uuid, 1);
          assert.deepStrictEqual((await online()).devices, [{ uuid: device.uuid, connections: 1, name: device.name }]);
          assert.deepStrictEqual(await client.request('leave-all'), { ok: true });
          assert.deepStrictEqual(await online(), { success: true, devices: [] });
        });
      });

      if (combo.transport === 'polling') {
        describe('[GET /socket.io/] CORS of the polling handshake', () => {
          const eio = combo.client === 'v4' ? 4 : 3;

          it(`EIO=${eio} handshake answers Access-Control-Allow-Origin from FRONTEND_URL (default *)`, async () => {
            const res = await app.httpRequest().get(`/socket.io/?EIO=${eio}&transport=polling`)
              .set('Origin', 'http://classroom.example').expect(200);
            assert.strictEqual(res.headers['access-control-allow-origin'], '*');
            const sid = /"sid":"([^"]+)"/.exec(res.text)?.[1];
            assert.ok(sid, res.text);
            // Close that engine.io session (a "1" close packet) so it does not linger.
            await app.httpRequest().post(`/socket.io/?EIO=${eio}&transport=polling&sid=${sid}`)
              .set('content-type', 'text/plain;charset=UTF-8').send(eio === 4 ? '1' : '1:1').expect(200);
          });

          it('preflight answers with the allowed origin and methods', async () => {
            const res = await app.httpRequest().options(`/socket.io/?EIO=${eio}&transport=polling`)
              .set('Origin', 'http://classroom.example').set('Access-Control-Request-Method', 'POST')
              .expect(204);
            assert.strictEqual(res.headers['access-control-allow-origin'], '*');
            assert.match(String(res.headers['access-control-allow-methods']), /POST/);
          });
        });
      }

      describe('malformed input', () => {
        it('unknown events and odd payloads neither crash the server nor disconnect the socket', async () => {
          app.mockLog('coreLogger');
          app.mockLog('logger');
          const { device, token } = await deviceWithToken();
          const client = await connectJoined(combo, token, device.uuid, 1);
          const odd: unknown[] = [ 1, -0.5, null, true, 'x'.repeat(200000), [], [ 1, [ 2 ]], { token: { $ne: '' } }, { deep: { a: [{}] } }, Buffer.from('bin') ];
          for (const payload of odd) {
            client.send('no-such-event', payload);
            client.send('join-device', payload);
            client.send('kv-key-changed', payload);
            client.send('device-joined', payload);
          }
          client.raw.emit('no-such-event', { token }, () => undefined);
          for (const payload of odd) {
            for (const event of [ 'join-token', 'leave-token' ]) {
              const ack = await client.request(event, payload);
              assert.strictEqual(ack.ok, false, `${event} ${JSON.stringify(payload).slice(0, 40)}`);
              assert.strictEqual(ack.reason, 'missing_token');
            }
            client.send('join-token', payload, payload);
            assert.deepStrictEqual(await client.request('leave-token', payload, payload), { ok: false, reason: 'missing_token' });
          }
          assert.strictEqual(client.connected, true);
          assert.strictEqual(client.disconnectReason, undefined);
          // Still in its room and fully served.
          await kvSet(token, 'k', { v: 1 });
          await expectUpsert(client, { uuid: device.uuid, key: 'k', created: true });
          await app.httpRequest().get('/check').expect(200);
          // Nothing was thrown in an io controller or middleware (Socket.IO 4 would only log it).
          for (const logger of [ 'coreLogger', 'logger' ]) app.notExpectLog(/ERROR|controller execute error/, logger);
        });

        it('a second device\'s socket is not disturbed by another socket\'s garbage', async () => {
          const { device, token } = await deviceWithToken();
          const other = await createDevice();
          const good = await connectJoined(combo, token, device.uuid, 1);
          const bad = await connect(combo, { query: { token: 'x'.repeat(4000), apptoken: other.uuid } });
          assert.deepStrictEqual(await bad.expectNext('join-error'), { by: 'token', reason: 'invalid_token' });
          for (let i = 0; i < 20; i++) bad.send('join-token', { token: `t${i}` });
          bad.close();
          await kvSet(token, 'k', { v: 1 });
          await expectUpsert(good, { uuid: device.uuid, key: 'k', created: true });
        });
      });
    });
  }
});
