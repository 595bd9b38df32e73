import assert from 'node:assert';
import { REJOIN_BURST } from '../../../app/lib/realtime';
import crypto from 'node:crypto';
import { app, mm } from 'egg-mock/bootstrap';
import { deviceWithToken, overrideRateLimits, restoreRateLimits } from '../../support/factories';
import { assertTooMany } from '../../support/assertions';
import {
  closeAllClients, COMBINATIONS, connect, connectJoined, eventually, joinedPayload, openClient, startServer, stopServer, TestClient, withTimeout,
} from '../../support/socket';

/**
 * The bounds of the realtime channel (issue 10): packets per socket
 * (io/middleware/packetLimit.ts), failed token lookups per client IP on join-token and
 * leave-token (AppInstallService.lookupToken), connections per client IP (app.ts,
 * engine.io allowRequest), for every client generation and transport.
 */

const randomToken = () => crypto.randomBytes(32).toString('hex');

/** Counts the database queries on app_installs (token lookups) while `fn` runs. */
async function countingLookups<T>(fn: (lookups: () => number) => Promise<T>): Promise<T> {
  let n = 0;
  app.model.addHook('afterQuery', 'limitsLookups', (_options, query) => {
    if (((query as unknown as { sql?: string }).sql ?? '').includes('app_installs')) n += 1;
  });
  try {
    return await fn(() => n);
  } finally {
    app.model.removeHook('afterQuery', 'limitsLookups');
  }
}

/**
 * Counts the egg contexts egg-socket.io creates while `fn` runs (one per packet it handles,
 * on the socket's handshake request); anonymous contexts of background work are not counted.
 */
async function countingContexts<T>(fn: (contexts: () => number) => Promise<T>): Promise<T> {
  let n = 0;
  const original = app.createContext;
  app.createContext = function(this: unknown, ...args: Parameters<typeof original>) {
    if (String((args[0] as { url?: string } | undefined)?.url ?? '').startsWith('/socket.io')) n += 1;
    return original.apply(this, args);
  } as typeof original;
  try {
    return await fn(() => n);
  } finally {
    app.createContext = original;
  }
}

/** Fails unless the client's connection attempt is refused. */
async function expectRefusedConnection(client: TestClient) {
  const err = await client.waitConnected().then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof Error, 'the connection was accepted');
  assert.doesNotMatch(err.message, /timed out/);
  assert.strictEqual(client.connected, false);
}

describe('test/app/io/limits.test.ts', () => {
  for (const combo of COMBINATIONS) {
    describe(combo.title, () => {
      let url = '';
      before(async () => {
        url = await startServer();
      });
      afterEach(() => {
        closeAllClients();
        restoreRateLimits();
      });
      after(() => stopServer());

      describe('[packets] io/middleware/packetLimit (SOCKET_PACKET_RATE, SOCKET_PACKET_BURST)', () => {
        it('packets beyond the burst are answered at once like a full queue (ack too_many_requests / rate_limited), without an egg context; a burst of refusals in a row disconnects the socket', async () => {
          const { device, token } = await deviceWithToken();
          // One packet a minute after a burst of 8: nothing refills during the test.
          mm(app.config.classworks, 'socketPacketRate', 1 / 60);
          mm(app.config.classworks, 'socketPacketBurst', 8);
          const client = await connectJoined(combo, token, device.uuid, 1);
          const other = await connectJoined(combo, token, device.uuid, 2);
          assert.deepStrictEqual(await client.expectNext('device-joined'), { uuid: device.uuid, connections: 2 });
          await countingContexts(async contexts => {
            // The burst: eight packets handled (one egg context each).
            for (let i = 0; i < 8; i++) {
              assert.deepStrictEqual(await client.request('join-token', { token }), { ok: true, uuid: device.uuid });
              // Rejoins announced to the room while the socket's rejoin budget lasts (§4).
              if (i < REJOIN_BURST) assert.deepStrictEqual(await client.expectNext('device-joined'), { uuid: device.uuid, connections: 2 });
              assert.deepStrictEqual(await client.expectNext('joined'), joinedPayload(device.uuid, token, combo.transport));
            }
            assert.strictEqual(contexts(), 8);
            const from = client.mark();
            for (const [ event, args ] of [[ 'join-token', [{ token }]], [ 'leave-token', [{ token }]], [ 'leave-all', []]] as const) {
              assert.deepStrictEqual(await client.request(event, ...args), { ok: false, reason: 'too_many_requests' }, event);
            }
            assert.deepStrictEqual(await client.request('send-event', { type: 'chat', content: null }), { ok: false, reason: 'rate_limited' });
            assert.deepStrictEqual(await client.request('get-event-history', {}), { ok: false, reason: 'rate_limited' });
            client.send('join-token', { token: randomToken() }); // no ack: nothing answers
            client.send('unknown-event', 1);
            // Seven refusals in a row: still connected, still in its room.
            assert.deepStrictEqual(client.events.slice(from).map(e => [ e.event, e.args ]), [
              [ 'event-error', [{ reason: 'rate_limited' }]],
              [ 'event-history-error', [{ reason: 'rate_limited' }]],
            ]);
            assert.strictEqual(client.connected, true);
            // None of the refused packets reached egg-socket.io.
            assert.strictEqual(contexts(), 8);
            await app.httpRequest().post('/kv/k').set('x-app-token', token).send({ v: 1 }).expect(200); // one HTTP context
            assert.strictEqual((await client.waitFor('kv-key-changed')).key, 'k');
            // The eighth refusal in a row: the server disconnects the flooding socket.
            client.send('leave-all');
            await eventually(() => assert.strictEqual(client.disconnectReason, 'io server disconnect'));
          });
          // It left its room: the other member is told.
          assert.deepStrictEqual(await other.waitFor('device-left'), { uuid: device.uuid, connections: 1 });
        });

        it('SOCKET_PACKET_RATE=0 turns the bound off', async () => {
          const { device, token } = await deviceWithToken();
          mm(app.config.classworks, 'socketPacketRate', 0);
          mm(app.config.classworks, 'socketPacketBurst', 1);
          const client = await connectJoined(combo, token, device.uuid, 1);
          for (let i = 0; i < 5; i++) assert.deepStrictEqual(await client.request('leave-all'), { ok: true });
        });
      });

      describe('[join-token, leave-token] failed token lookups per client IP (RATE_LIMIT_TOKEN_FAILURES)', () => {
        it('unknown tokens: invalid_token until the limit, then too_many_requests (ack only) with no lookup; HTTP from that IP gets the 429 too; held and cached tokens still work', async () => {
          const { device, token } = await deviceWithToken();
          overrideRateLimits({ tokenFailures: 3 });
          await app.httpRequest().get('/kv/_info').set('x-app-token', token).expect(200); // cached now
          const client = await connect(combo);
          await countingLookups(async lookups => {
            for (let i = 0; i < 3; i++) {
              assert.deepStrictEqual(await client.request('join-token', { token: randomToken() }), { ok: false, reason: 'invalid_token' });
              assert.deepStrictEqual(await client.expectNext('join-error'), { by: 'token', reason: 'invalid_token' });
            }
            assert.strictEqual(lookups(), 3);
            const from = client.mark();
            for (let i = 0; i < 5; i++) {
              assert.deepStrictEqual(await client.request('join-token', { token: randomToken() }), { ok: false, reason: 'too_many_requests' });
              assert.deepStrictEqual(await client.request('leave-token', { token: randomToken() }), { ok: false, reason: 'too_many_requests' });
            }
            assertTooMany(await app.httpRequest().get('/kv/_info').set('x-app-token', randomToken()), 3, 'requests');
            // No lookup past the limit, and no event either (the ack answers, as for a full queue).
            assert.strictEqual(lookups(), 3);
            assert.deepStrictEqual(client.events.slice(from), []);
            // A valid token this worker has cached still joins from this address.
            assert.deepStrictEqual(await client.request('join-token', { token }), { ok: true, uuid: device.uuid });
            assert.deepStrictEqual(await client.expectNext('device-joined'), { uuid: device.uuid, connections: 1 });
            assert.deepStrictEqual(await client.expectNext('joined'), joinedPayload(device.uuid, token, combo.transport));
            assert.deepStrictEqual(await client.request('leave-token', { token }), { ok: true, uuid: device.uuid });
            assert.strictEqual(lookups(), 3);
            // A valid token this worker has not cached is refused from this address until the
            // window ends; a handshake join, which has no ack, is told with join-error.
            app.tokenCache.clear();
            const late = await connect(combo, { query: { token } });
            assert.deepStrictEqual(await late.expectNext('join-error'), { by: 'token', reason: 'too_many_requests' });
            assert.strictEqual(lookups(), 3);
          });
        });
      });

      describe('[connections] SOCKET_MAX_PER_IP', () => {
        it('an address holding SOCKET_MAX_PER_IP connections has its next handshake refused; other addresses connect; a closed connection frees its slot', async () => {
          mm(app.config.classworks, 'socketMaxPerIp', 2);
          const opts = { version: combo.client, transport: combo.transport };
          const held = [ openClient(url, { ...opts, localAddress: '127.0.0.21' }), openClient(url, { ...opts, localAddress: '127.0.0.21' }) ];
          for (const c of held) await c.waitConnected();
          await expectRefusedConnection(openClient(url, { ...opts, localAddress: '127.0.0.21' }));
          await expectRefusedConnection(openClient(url, { ...opts, localAddress: '127.0.0.21' }));
          // Another address is not affected.
          const other = openClient(url, { ...opts, localAddress: '127.0.0.22' });
          await other.waitConnected();
          // The held connections still work.
          for (const c of held) assert.deepStrictEqual(await c.request('leave-all'), { ok: true });
          held[0].close();
          await eventually(async () => {
            const again = openClient(url, { ...opts, localAddress: '127.0.0.21' });
            try {
              await withTimeout(again.waitConnected(), 'a freed slot', 2000);
            } catch (err) {
              again.close();
              throw err;
            }
          });
        });
      });
    });
  }
});
