import assert from 'node:assert';
import fs from 'node:fs';
import path from 'node:path';
import { app, mm } from 'egg-mock/bootstrap';
import { MAX_PENDING_OPERATIONS } from '../../../app/lib/realtime';
import {
  createDevice, deviceWithToken, installApp, ISO_MS, overrideRateLimits, restoreRateLimits, TestDevice,
} from '../../support/factories';
import {
  ClientVersion, closeAllClients, COMBINATIONS, eventually, joinedPayload, openClient, startServer, stopServer, TestClient, TransportName,
} from '../../support/socket';

/**
 * CONTRACT.md §6.3 (`joined` tokenInfo) and §6.4 (send-event, get-event-history), for
 * socket.io-client 4.x and 2.x over websocket and polling. Absence of an event is never
 * asserted by waiting: a later event is sent through the same path, and once it has
 * arrived the earlier one can no longer come (one socket receives in emission order).
 */

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const CHROME_WINDOWS = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36';
const IPHONE_SAFARI = 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1';

/** senderInfo / tokenInfo of a factory token (test-app, no deviceType, writable, no note) on a Node client. */
const FACTORY_SENDER = { appId: 'test-app', deviceType: null, deviceName: 'Unknown Device', isReadOnly: false, note: null };

/** The in-process server's URL (set in before()). */
const server = { url: '' };

/** An install with a token kind (deviceType, read-only) and note, as auto-auth and the install route create them. */
async function installKind(device: TestDevice, opts: { appId?: string; note?: string | null; deviceType?: string | null; isReadOnly?: boolean }) {
  const ctx = app.createAnonymousContext();
  const row = await ctx.service.appInstall.install({ id: device.id } as any, opts.appId ?? 'test-app', opts.note ?? null,
    { deviceType: opts.deviceType ?? null, isReadOnly: opts.isReadOnly ?? false } as any);
  return row.token as string;
}

/** A client joined with `token` through the handshake (waits for `joined`; earlier events are skipped). */
async function joined(version: ClientVersion, transport: TransportName, token: string, userAgent?: string): Promise<TestClient> {
  const client = openClient(server.url, { version, transport, token, userAgent });
  await client.waitFor('joined');
  return client;
}

/**
 * get-event-history answered with the ack `{ok:true}` and one `event-history`: returns
 * that event's payload. `args` as emitted (none: no payload at all).
 */
async function historyOf(client: TestClient, ...args: unknown[]) {
  const from = client.mark();
  assert.deepStrictEqual(await client.request('get-event-history', ...args), { ok: true }, JSON.stringify(args));
  const answers = client.payloads('event-history', from);
  assert.strictEqual(answers.length, 1, `one event-history before the ack: ${JSON.stringify(client.events.slice(from)).slice(0, 500)}`);
  assert.deepStrictEqual(client.named('event-history-error', from), []);
  return answers[0];
}

/** Asks for the history and expects a refusal: `event-history-error {reason}`, then the ack `{ok:false, reason}`. */
async function expectHistoryError(client: TestClient, reason: string, ...args: unknown[]) {
  const from = client.mark();
  assert.deepStrictEqual(await client.request('get-event-history', ...args), { ok: false, reason }, JSON.stringify(args));
  assert.deepStrictEqual(client.payloads('event-history-error', from), [{ reason }], JSON.stringify(args));
  assert.deepStrictEqual(client.named('event-history', from), []);
}

/** The server side of a connected client (in-process server). */
function serverSocketOf(client: TestClient) {
  const socket = app.io.of('/').sockets.get(client.id);
  assert.ok(socket, 'the server knows the client\'s socket');
  return socket;
}

async function kvSet(token: string, key: string, value: unknown) {
  return (await app.httpRequest().post(`/kv/${encodeURIComponent(key)}`).set('x-app-token', token).send(value as object).expect(200)).body;
}

/** Sends and expects a refusal: `event-error` to the sender, then the ack `{ok:false, reason}`. */
async function expectRefused(client: TestClient, reason: string, ...args: unknown[]) {
  const from = client.mark();
  const ack = await client.request('send-event', ...args);
  const label = JSON.stringify(args).slice(0, 120);
  assert.deepStrictEqual(ack, { ok: false, reason }, label);
  const errors = client.payloads('event-error', from);
  assert.deepStrictEqual(errors, [ reason === 'content_too_large' ? { reason, maxSize: 10240 } : { reason } ], label);
}

/** Sends and expects success: returns the ack's eventId and the `event-sent` payload. */
async function expectSent(client: TestClient, payload: unknown) {
  const from = client.mark();
  const ack = await client.request('send-event', payload);
  assert.strictEqual(ack.ok, true, JSON.stringify(ack));
  assert.deepStrictEqual(Object.keys(ack), [ 'ok', 'eventId' ]);
  assert.match(ack.eventId, UUID_V7);
  const sent = client.payloads('event-sent', from);
  assert.strictEqual(sent.length, 1, `event-sent before the ack: ${JSON.stringify(client.events.slice(from))}`);
  assert.strictEqual(sent[0].eventId, ack.eventId);
  return { eventId: ack.eventId as string, sent: sent[0] };
}

/**
 * Runs `fn` while the database has no device log (renamed away, then back): every read and
 * write of the store fails inside the real database.
 */
async function withoutDeviceLog<T>(fn: () => Promise<T>): Promise<T> {
  await app.model.query('ALTER TABLE device_log RENAME TO device_log_away');
  try {
    return await fn();
  } finally {
    await app.model.query('ALTER TABLE device_log_away RENAME TO device_log');
  }
}

/** The relayed event `name` with `eventId` as `client` received it. */
function received(client: TestClient, name: string, eventId: string, since = 0) {
  return client.waitFor(name, p => p?.eventId === eventId, { since });
}

describe('test/app/io/event.test.ts', () => {
  before(async () => {
    server.url = await startServer();
  });
  afterEach(() => {
    closeAllClients();
    restoreRateLimits();
  });
  after(() => stopServer());

  for (const combo of COMBINATIONS) {
    const { client: version, transport } = combo;
    // Receivers of the other generation, whatever the sender is.
    const other: ClientVersion = version === 'v4' ? 'v2' : 'v4';

    describe(combo.title, () => {
      describe('[joined] lib/realtime join() tokenInfo', () => {
        it('carries token and tokenInfo {isReadOnly, deviceType, deviceName, userAgent} parsed from the User-Agent', async () => {
          const device = await createDevice();
          const cases: Array<[string | undefined, string, string]> = [
            [ CHROME_WINDOWS, CHROME_WINDOWS, 'Windows 10 (Chrome 120)' ],
            [ IPHONE_SAFARI, IPHONE_SAFARI, 'Apple iPhone (Mobile Safari 17)' ],
            [ 'Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/116.0.0.0 Mobile Safari/537.36',
              'Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/116.0.0.0 Mobile Safari/537.36',
              'Samsung SM-S918B (Chrome 116)' ],
            // A Node client as it comes (websocket: no header; polling: xmlhttprequest-ssl's), and an empty header.
            [ undefined, transport === 'polling' ? 'node-XMLHttpRequest' : '', 'Unknown Device' ],
            [ '', '', 'Unknown Device' ],
          ];
          const plain = await installKind(device, {});
          for (const [ userAgent, echoed, deviceName ] of cases) {
            const client = openClient(server.url, { version, transport, token: plain, userAgent });
            assert.deepStrictEqual(await client.waitFor('joined'), {
              by: 'token', uuid: device.uuid, token: plain,
              tokenInfo: { isReadOnly: false, deviceType: null, deviceName, userAgent: echoed },
            }, String(userAgent));
            client.close();
          }
        });

        it('deviceName ends with " - <note>" when the token has a note; deviceType and isReadOnly are the token\'s', async () => {
          const device = await createDevice();
          const student = await installKind(device, { note: '张三', deviceType: 'student', isReadOnly: true });
          const client = openClient(server.url, { version, transport, token: student, userAgent: CHROME_WINDOWS });
          assert.deepStrictEqual(await client.waitFor('joined'), {
            by: 'token', uuid: device.uuid, token: student,
            tokenInfo: { isReadOnly: true, deviceType: 'student', deviceName: 'Windows 10 (Chrome 120) - 张三', userAgent: CHROME_WINDOWS },
          });
          // join-token answers the same way, with that token's own note and kind.
          const teacher = await installKind(device, { note: 'Ms Li', deviceType: 'teacher' });
          const from = client.mark();
          assert.deepStrictEqual(await client.request('join-token', { token: teacher }), { ok: true, uuid: device.uuid });
          assert.deepStrictEqual(client.payloads('joined', from), [{
            by: 'token', uuid: device.uuid, token: teacher,
            tokenInfo: { isReadOnly: false, deviceType: 'teacher', deviceName: 'Windows 10 (Chrome 120) - Ms Li', userAgent: CHROME_WINDOWS },
          }]);
        });
      });

      describe('[send-event] io/controller/event send()', () => {
        it('every event-error reason, in the contract\'s order (each payload also fails a later check)', async () => {
          const { device, token } = await deviceWithToken();
          const readOnly = await installKind(device, { isReadOnly: true });
          const loner = openClient(server.url, { version, transport });
          await loner.waitConnected();
          const big = { s: 'x'.repeat(20000) };
          // Not joined, and read-only would not matter: the payload's shape is checked first.
          for (const args of [[], [ null ], [ 42 ], [ 'chat' ], [ true ], [[{ type: 'chat', content: {} }]], [ Buffer.from('x') ]]) {
            await expectRefused(loner, 'invalid_data_format', ...args);
          }
          for (const type of [ undefined, '', '   ', 42, null, [ 'chat' ], { a: 1 }, 'x'.repeat(101), ` ${'y'.repeat(101)} `, '\ud800', 'a\u0000b', 'line\nbreak', '\u007f' ]) {
            await expectRefused(loner, 'invalid_event_type', { type, content: [] });
          }
          for (const content of [[], [ 1 ], 'text', 42, true, undefined, Buffer.from('bin') ]) {
            await expectRefused(loner, 'content_must_be_object_or_null', { type: 'chat', content });
          }
          await expectRefused(loner, 'content_must_be_object_or_null', { type: 'kv-key-changed' }); // no content at all
          await expectRefused(loner, 'not_joined_any_device', { type: 'kv-key-changed', content: big });

          const ro = await joined(version, transport, readOnly);
          await expectRefused(ro, 'readonly_token_cannot_send_events', { type: 'kv-key-changed', content: big });

          overrideRateLimits({ events: 1 });
          const sender = await joined(version, transport, token);
          const watcher = await joined(other, 'websocket', token);
          await expectRefused(sender, 'content_too_large', { type: 'kv-key-changed', content: big });
          await expectRefused(sender, 'reserved_event_type', { type: ' kv-key-changed ', content: {} });
          await expectSent(sender, { type: 'chat', content: { n: 1 } }); // the one send-event the quota allows
          await expectRefused(sender, 'reserved_event_type', { type: 'joined', content: {} }); // checked before the quota
          await expectRefused(sender, 'rate_limited', { type: 'chat', content: { n: 2 } });
          restoreRateLimits();
          const last = await expectSent(sender, { type: 'chat', content: { n: 3 } });
          // Refusals relayed nothing: the watcher's chats are n:1 then n:3, and no reserved name reached it.
          await received(watcher, 'chat', last.eventId);
          assert.deepStrictEqual(watcher.payloads('chat').map(p => p.content), [{ n: 1 }, { n: 3 }]);
          assert.deepStrictEqual(watcher.named('kv-key-changed'), []);
          assert.deepStrictEqual(watcher.named('event-error'), []);
        });

        it('reserved names are refused (every name this server and Socket.IO emit), after trimming; other spellings are not', async () => {
          const { token } = await deviceWithToken();
          const sender = await joined(version, transport, token);
          const reserved = [
            'connect', 'connect_error', 'disconnect', 'disconnecting', 'error', 'ping', 'pong', 'newListener', 'removeListener',
            'message', 'reconnect', 'reconnect_attempt', 'reconnecting', 'reconnect_error', 'reconnect_failed', 'connecting',
            'connect_timeout', 'joined', 'join-error', 'device-joined', 'device-left', 'left', 'kv-key-changed', 'event-sent',
            'event-error', 'event-history', 'event-history-error', 'resync-required',
          ];
          for (const type of reserved) {
            await expectRefused(sender, 'reserved_event_type', { type, content: null });
            await expectRefused(sender, 'reserved_event_type', { type: `\t${type}  `, content: null });
          }
          for (const type of [ 'KV-KEY-CHANGED', 'Joined', 'kv-key-changed-2', 'my-error' ]) await expectSent(sender, { type, content: null });
          // 100 characters after trimming (code points: 100 emoji are 200 UTF-16 units) is the longest name.
          for (const type of [ ` ${'z'.repeat(100)}\n`, '😀'.repeat(100) ]) {
            const { sent } = await expectSent(sender, { type, content: null });
            assert.strictEqual(sent.eventName, type.trim());
          }
        });

        it('delivers {eventId, content, timestamp, senderId, senderInfo} to every other socket of the device (both tokens, both generations), ' +
          'not to the sender, not to other devices; the sender gets event-sent and the ack {ok:true, eventId}', async () => {
          const { device, token } = await deviceWithToken();
          const otherToken = (await installApp(device, { appId: 'other-app' })).token;
          const elsewhere = await deviceWithToken();
          const sender = await joined(version, transport, token);
          const receivers = [
            await joined('v4', 'websocket', token),
            await joined('v2', 'polling', otherToken),
            await joined('v2', 'websocket', otherToken),
            await joined('v4', 'polling', token),
          ];
          const outsider = await joined(version, transport, elsewhere.token);

          const { eventId, sent } = await expectSent(sender, { type: '  notification  ', content: { text: '下课', urgent: true } });
          const expected = { eventId, content: { text: '下课', urgent: true }, timestamp: sent.timestamp, senderId: sender.id, senderInfo: FACTORY_SENDER };
          assert.match(sent.timestamp, ISO_MS);
          assert.deepStrictEqual(sent, { eventId, eventName: 'notification', timestamp: sent.timestamp, targetDevices: 1, senderInfo: FACTORY_SENDER });
          for (const r of receivers) {
            assert.deepStrictEqual(await received(r, 'notification', eventId), expected);
            assert.strictEqual(r.named('notification').length, 1);
          }
          // A reply from a receiver reaches the sender and the outsider's own device event reaches the outsider:
          // neither got the first event.
          const reply = await expectSent(receivers[1], { type: 'notification', content: { text: 'ok' } });
          await received(sender, 'notification', reply.eventId);
          assert.deepStrictEqual(sender.named('notification').map(e => e.args[0].eventId), [ reply.eventId ]);
          const own = await expectSent(await joined('v4', 'websocket', elsewhere.token), { type: 'notification', content: null });
          await received(outsider, 'notification', own.eventId);
          assert.deepStrictEqual(outsider.named('notification').map(e => e.args[0].eventId), [ own.eventId ]);
        });

        it('content null is relayed; 10240 characters of content JSON pass, 10241 are content_too_large', async () => {
          const { token } = await deviceWithToken();
          const sender = await joined(version, transport, token);
          const receiver = await joined(other, transport, token);
          const nul = await expectSent(sender, { type: 'ping-all', content: null });
          assert.strictEqual((await received(receiver, 'ping-all', nul.eventId)).content, null);
          const exact = { s: 'é'.repeat(10240 - 8) }; // '{"s":""}' is 8 characters
          assert.strictEqual(JSON.stringify(exact).length, 10240);
          const ok = await expectSent(sender, { type: 'big', content: exact });
          assert.deepStrictEqual((await received(receiver, 'big', ok.eventId)).content, exact);
          await expectRefused(sender, 'content_too_large', { type: 'big', content: { s: 'é'.repeat(10240 - 7) } });
        });

        it('a read-only token receives relayed events but cannot send', async () => {
          const { device, token } = await deviceWithToken();
          const readOnly = await installKind(device, { isReadOnly: true, deviceType: 'parent' });
          const viewer = await joined(version, transport, readOnly);
          const sender = await joined(other, 'websocket', token);
          const { eventId } = await expectSent(sender, { type: 'homework', content: { due: 'Friday' } });
          assert.deepStrictEqual((await received(viewer, 'homework', eventId)).content, { due: 'Friday' });
          await expectRefused(viewer, 'readonly_token_cannot_send_events', { type: 'homework', content: {} });
        });

        it('senderInfo and the read-only rule follow the token joined most recently; a socket in two devices reaches both once', async () => {
          const a = await createDevice();
          const b = await createDevice();
          const tokenA = await installKind(a, { appId: 'screen', note: null, deviceType: 'classroom' });
          const teacherB = await installKind(b, { appId: 'teacher-app', note: 'Ms Li', deviceType: 'teacher' });
          const readOnlyB = await installKind(b, { appId: 'parent-app', note: '张三 家长', deviceType: 'parent', isReadOnly: true });
          const sender = await joined(version, transport, tokenA, CHROME_WINDOWS);
          const inA = await joined(other, 'websocket', tokenA);
          const inB = await joined(other, 'websocket', teacherB);
          const inBoth = await joined('v4', 'websocket', tokenA);
          assert.deepStrictEqual(await inBoth.request('join-token', { token: teacherB }), { ok: true, uuid: b.uuid });

          const screen = { appId: 'screen', deviceType: 'classroom', deviceName: 'Windows 10 (Chrome 120)', isReadOnly: false, note: null };
          const first = await expectSent(sender, { type: 'chat', content: { n: 1 } });
          assert.deepStrictEqual(first.sent.senderInfo, screen);
          assert.strictEqual(first.sent.targetDevices, 1);

          assert.deepStrictEqual(await sender.request('join-token', { token: teacherB }), { ok: true, uuid: b.uuid });
          const teacher = { appId: 'teacher-app', deviceType: 'teacher', deviceName: 'Windows 10 (Chrome 120) - Ms Li', isReadOnly: false, note: 'Ms Li' };
          const second = await expectSent(sender, { type: 'chat', content: { n: 2 } });
          assert.deepStrictEqual(second.sent, { eventId: second.eventId, eventName: 'chat', timestamp: second.sent.timestamp, targetDevices: 2, senderInfo: teacher });
          for (const r of [ inA, inB, inBoth ]) assert.deepStrictEqual((await received(r, 'chat', second.eventId)).senderInfo, teacher);

          // Rejoining device A with its token makes that token the current one again.
          assert.deepStrictEqual(await sender.request('join-token', { token: tokenA }), { ok: true, uuid: a.uuid });
          assert.deepStrictEqual((await expectSent(sender, { type: 'chat', content: { n: 3 } })).sent.senderInfo, screen);

          // A read-only token joined last: refused, although the socket also holds writable tokens.
          assert.deepStrictEqual(await sender.request('join-token', { token: readOnlyB }), { ok: true, uuid: b.uuid });
          await expectRefused(sender, 'readonly_token_cannot_send_events', { type: 'chat', content: { n: 4 } });
          // Leaving device B drops its tokens: the device A token is current again, one target device.
          assert.deepStrictEqual(await sender.request('leave-token', { token: readOnlyB }), { ok: true, uuid: b.uuid });
          const fifth = await expectSent(sender, { type: 'chat', content: { n: 5 } });
          assert.deepStrictEqual([ fifth.sent.senderInfo, fifth.sent.targetDevices ], [ screen, 1 ]);

          await received(inA, 'chat', fifth.eventId);
          await received(inBoth, 'chat', fifth.eventId);
          assert.deepStrictEqual(inA.payloads('chat').map(p => p.content.n), [ 1, 2, 3, 5 ]);
          assert.deepStrictEqual(inBoth.payloads('chat').map(p => p.content.n), [ 1, 2, 3, 5 ], 'once per event although in both rooms');
          const lastB = await expectSent(await joined('v4', 'websocket', teacherB), { type: 'chat', content: { n: 6 } });
          await received(inB, 'chat', lastB.eventId);
          assert.deepStrictEqual(inB.payloads('chat').map(p => p.content.n), [ 2, 3, 6 ]);
        });

        it('a new note (set-student-name, then PUT note) shows in senderInfo and requestedBy at once, without rejoining', async () => {
          // 1.3's flow: a phone logs in by namespace with a student token, picks its name, sends a read receipt.
          const device = await createDevice();
          const screenToken = await installKind(device, { appId: 'screen', deviceType: 'classroom' });
          const student = await installKind(device, { appId: 'phone', deviceType: 'student' });
          await kvSet(screenToken, 'classworks-list-main', [{ id: 1, name: '张三' }]);
          const phone = await joined(version, transport, student, IPHONE_SAFARI);
          const screen = await joined(other, 'websocket', screenToken);
          const anonymous = { appId: 'phone', deviceType: 'student', deviceName: 'Apple iPhone (Mobile Safari 17)', isReadOnly: false, note: null };
          assert.deepStrictEqual((await expectSent(phone, { type: 'read-receipt', content: { n: 1 } })).sent.senderInfo, anonymous);

          await app.httpRequest().post(`/apps/tokens/${student}/set-student-name`).send({ name: '张三' }).expect(200);
          const named = { ...anonymous, deviceName: 'Apple iPhone (Mobile Safari 17) - 张三', note: '张三' };
          const receipt = await expectSent(phone, { type: 'read-receipt', content: { n: 2 } });
          assert.deepStrictEqual(receipt.sent.senderInfo, named);
          assert.deepStrictEqual((await received(screen, 'read-receipt', receipt.eventId)).senderInfo, named);
          assert.deepStrictEqual((await historyOf(phone)).requestedBy, { deviceType: 'student', deviceName: named.deviceName, isReadOnly: false });

          // Cleared again: back to the bare name.
          await app.httpRequest().put(`/apps/tokens/${student}/note`).send({ note: null }).expect(200);
          assert.deepStrictEqual((await expectSent(phone, { type: 'read-receipt', content: { n: 3 } })).sent.senderInfo, anonymous);
          assert.deepStrictEqual((await historyOf(phone)).requestedBy, { deviceType: 'student', deviceName: anonymous.deviceName, isReadOnly: false });
        });

        it('after its token is revoked the socket is in no room: not_joined_any_device', async () => {
          const { device, install, token } = await deviceWithToken();
          const sender = await joined(version, transport, token);
          await expectSent(sender, { type: 'chat', content: {} });
          await app.httpRequest().delete(`/apps/devices/${encodeURIComponent(device.uuid)}/uninstall/${install.id}`).expect(204);
          await sender.waitFor('left');
          await expectRefused(sender, 'not_joined_any_device', { type: 'chat', content: {} });
        });

        it('rate_limited after RATE_LIMIT_EVENTS send-events of one token in the window, whichever socket sends; other tokens are not affected', async () => {
          overrideRateLimits({ events: 3 });
          const { device, token } = await deviceWithToken();
          const otherToken = (await installApp(device, { appId: 'other-app' })).token;
          const one = await joined(version, transport, token);
          const two = await joined(other, 'websocket', token);
          const three = await joined(version, transport, otherToken);
          await expectSent(one, { type: 'chat', content: null });
          await expectSent(two, { type: 'chat', content: null });
          await expectSent(one, { type: 'chat', content: null });
          await expectRefused(two, 'rate_limited', { type: 'chat', content: null });
          await expectRefused(one, 'rate_limited', { type: 'chat', content: null });
          await expectSent(three, { type: 'chat', content: null });
          overrideRateLimits({ events: 0 }); // 0 disables
          await expectSent(one, { type: 'chat', content: null });
        });

        it('without an ack callback: the same events (event-sent, event-error)', async () => {
          const { token } = await deviceWithToken();
          const sender = await joined(version, transport, token);
          sender.send('send-event', { type: 'chat', content: { a: 1 } });
          const sent = await sender.waitFor('event-sent');
          assert.deepStrictEqual(Object.keys(sent), [ 'eventId', 'eventName', 'timestamp', 'targetDevices', 'senderInfo' ]);
          sender.send('send-event', { type: 'event-sent', content: null });
          assert.deepStrictEqual(await sender.waitFor('event-error'), { reason: 'reserved_event_type' });
        });

        it('database failure while recording: event-error internal_error, ack {ok:false}, nothing relayed', async () => {
          const { token } = await deviceWithToken();
          const sender = await joined(version, transport, token);
          const receiver = await joined(other, 'websocket', token);
          // The real database refuses the write (the device log is away), nothing is mocked.
          await withoutDeviceLog(() => expectRefused(sender, 'internal_error', { type: 'chat', content: { lost: true } }));
          const { eventId } = await expectSent(sender, { type: 'chat', content: { lost: false } });
          await received(receiver, 'chat', eventId);
          assert.deepStrictEqual(receiver.payloads('chat').map(p => p.content), [{ lost: false }]);
          assert.deepStrictEqual(sender.named('event-sent').length, 1);
        });
      });

      describe('[get-event-history] io/controller/event history()', () => {
        it('event-history {devices:{uuid:[records]}, timestamp, requestedBy}: relayed events as delivered plus type and recordedAt, ' +
          'interleaved with kv-key-changed records of writes, oldest first; the ack is {ok:true} only', async () => {
          const { device, token } = await deviceWithToken();
          const teacher = await installKind(device, { appId: 'teacher-app', note: 'Ms Li', deviceType: 'teacher' });
          const sender = await joined(version, transport, token);
          const reader = await joined(other, transport, teacher, IPHONE_SAFARI);
          const w1 = await kvSet(token, 'a', { v: 1 });
          const e1 = await expectSent(sender, { type: 'chat', content: { text: 'hi' } });
          const delivered1 = await received(reader, 'chat', e1.eventId);
          await app.httpRequest().delete('/kv/a').set('x-app-token', token).expect(204);
          const del = await reader.waitFor('kv-key-changed', p => p.action === 'delete');
          await app.httpRequest().post('/kv/_batchimport').set('x-app-token', token).send({ b: [ 1 ], c: {} }).expect(200);
          const e2 = await expectSent(sender, { type: 'notice', content: null });
          const delivered2 = await received(reader, 'notice', e2.eventId);
          const batch = reader.payloads('kv-key-changed').filter(p => p.batch);

          const history = [ await historyOf(reader, {}) ];
          assert.match(history[0].timestamp, ISO_MS);
          const records = [
            { uuid: device.uuid, key: 'a', action: 'upsert', created: true, updatedAt: w1.updatedAt, revision: 1, type: 'kv-key-changed', recordedAt: w1.updatedAt },
            { ...delivered1, type: 'chat', recordedAt: delivered1.timestamp },
            { ...del, type: 'kv-key-changed', recordedAt: del.deletedAt },
            ...batch.map(p => ({ ...p, type: 'kv-key-changed', recordedAt: p.updatedAt })),
            { ...delivered2, type: 'notice', recordedAt: delivered2.timestamp },
          ];
          assert.strictEqual(batch.length, 2);
          assert.deepStrictEqual(history[0], {
            devices: { [device.uuid]: records },
            timestamp: history[0].timestamp,
            requestedBy: { deviceType: 'teacher', deviceName: 'Apple iPhone (Mobile Safari 17) - Ms Li', isReadOnly: false },
          });
          assert.deepStrictEqual(records.map(r => (r.type === 'kv-key-changed' ? r.revision : r.type)), [ 1, 'chat', 2, 3, 4, 'notice' ]);
        });

        it('limit and offset are never refused (clamped, as 1.3 clients expect); not joined: not_joined_any_device', async () => {
          const { device, token } = await deviceWithToken();
          const loner = openClient(server.url, { version, transport });
          await loner.waitConnected();
          // What this server refused as invalid_parameters before: out of range, fractions, numeric strings, junk, no object.
          const odd: unknown[][] = [
            [{ limit: 0 }], [{ limit: 2000 }], [{ limit: 1.5 }], [{ limit: '10' }], [{ limit: null }], [{ limit: -1 }], [{ limit: 'all' }],
            [{ offset: -1 }], [{ offset: 0.5 }], [{ offset: '0' }], [{ offset: 1e300 }], [{ offset: {} }], [ 42 ], [ 'all' ], [[]], [ true ],
          ];
          for (const args of [ ...odd, [], [ null ], [{}], [{ limit: 1000, offset: 5 }]]) await expectHistoryError(loner, 'not_joined_any_device', ...args);
          const member = await joined(version, transport, token);
          for (const args of odd) assert.deepStrictEqual(Object.keys((await historyOf(member, ...args)).devices), [ device.uuid ]);
          // No ack: the event alone.
          const from = member.mark();
          member.send('get-event-history', { limit: 0 });
          assert.deepStrictEqual(Object.keys((await member.waitFor('event-history', undefined, { since: from })).devices), [ device.uuid ]);
        });

        it('rate_limited after RATE_LIMIT_HISTORY requests of one token in the window, whichever socket asks; other tokens are not affected', async () => {
          overrideRateLimits({ history: 2 });
          const { device, token } = await deviceWithToken();
          const otherToken = (await installApp(device, { appId: 'other-app' })).token;
          const one = await joined(version, transport, token);
          const two = await joined(other, 'websocket', token);
          const three = await joined(version, transport, otherToken);
          await historyOf(one);
          await historyOf(two, { limit: 1 });
          await expectHistoryError(one, 'rate_limited', {});
          await expectHistoryError(two, 'rate_limited');
          await historyOf(three);
          // Not joined is answered first and counts nothing.
          const loner = openClient(server.url, { version, transport });
          await loner.waitConnected();
          await expectHistoryError(loner, 'not_joined_any_device');
          overrideRateLimits({ history: 0 }); // 0 disables
          await historyOf(one);
          // Relaying has its own quota.
          await expectSent(one, { type: 'chat', content: null });
        });

        it(`a socket with ${MAX_PENDING_OPERATIONS} operations pending: joins and leaves answer too_many_requests (ack only), ` +
          'send-event event-error rate_limited, get-event-history event-history-error rate_limited, at once; then it works again', async () => {
          const { device, token } = await deviceWithToken();
          const client = await joined(version, transport, token);
          const socket = serverSocketOf(client);
          // Fill the socket's queue with operations that wait for the test.
          let release = () => undefined as void;
          const gate = new Promise<void>(resolve => {
            release = resolve;
          });
          const fill = Array.from({ length: MAX_PENDING_OPERATIONS },
            () => app.realtime.serial(socket, () => gate.then(() => 'ran'), () => 'refused'));
          const from = client.mark();
          try {
            for (const [ event, args ] of [[ 'join-token', [{ token }]], [ 'leave-token', [{ token }]], [ 'leave-all', []]] as const) {
              assert.deepStrictEqual(await client.request(event, ...args), { ok: false, reason: 'too_many_requests' }, event);
            }
            await expectRefused(client, 'rate_limited', { type: 'chat', content: null });
            await expectHistoryError(client, 'rate_limited', {});
            assert.deepStrictEqual(client.events.slice(from).map(e => [ e.event, e.args ]),
              [[ 'event-error', [{ reason: 'rate_limited' }]], [ 'event-history-error', [{ reason: 'rate_limited' }]]]);
          } finally {
            release();
          }
          assert.deepStrictEqual(await Promise.all(fill), Array(MAX_PENDING_OPERATIONS).fill('ran'));
          // Nothing was joined or left meanwhile; the queue takes operations again.
          await expectSent(client, { type: 'chat', content: null });
          assert.deepStrictEqual(Object.keys((await historyOf(client)).devices), [ device.uuid ]);
          assert.deepStrictEqual(await client.request('leave-all'), { ok: true });
        });

        it('database failure: event-history-error internal_error', async () => {
          const { token } = await deviceWithToken();
          const member = await joined(version, transport, token);
          const from = member.mark();
          await withoutDeviceLog(async () => {
            assert.deepStrictEqual(await member.request('get-event-history'), { ok: false, reason: 'internal_error' });
          });
          assert.deepStrictEqual(member.payloads('event-history-error', from), [{ reason: 'internal_error' }]);
        });
      });
    });
  }

  describe('[get-event-history] limit and offset', () => {
    /** Records `n` relayed events for the device straight into the store (numbered 1..n, oldest first). */
    async function seed(device: TestDevice, n: number) {
      const ctx = app.createAnonymousContext();
      const base = Date.parse('2025-10-25T08:00:00.000Z');
      for (let i = 1; i <= n; i++) {
        const at = new Date(base + i * 1000);
        await ctx.service.changes.recordEvent([ device.id ], 'seq', { n: i, timestamp: at.toISOString() }, at);
      }
    }

    async function history(client: TestClient, uuid: string, params?: unknown) {
      const answer = params === undefined ? await historyOf(client) : await historyOf(client, params);
      return (answer.devices[uuid] as Array<{ n: number; type: string; recordedAt: string }>).map(r => r.n);
    }

    const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

    it('the most recent `limit` (default 50) after skipping the `offset` most recent (default 0), oldest first', async () => {
      const { device, token } = await deviceWithToken();
      await seed(device, 60);
      const client = await joined('v4', 'websocket', token);
      assert.deepStrictEqual(await history(client, device.uuid), range(11, 60));
      assert.deepStrictEqual(await history(client, device.uuid, {}), range(11, 60));
      assert.deepStrictEqual(await history(client, device.uuid, { limit: 5 }), range(56, 60));
      assert.deepStrictEqual(await history(client, device.uuid, { limit: 5, offset: 3 }), range(53, 57));
      assert.deepStrictEqual(await history(client, device.uuid, { offset: 10 }), range(1, 50));
      assert.deepStrictEqual(await history(client, device.uuid, { offset: 58 }), [ 1, 2 ]);
      assert.deepStrictEqual(await history(client, device.uuid, { offset: 60 }), []);
      assert.deepStrictEqual(await history(client, device.uuid, { limit: 1000 }), range(1, 60));
      assert.deepStrictEqual(await history(client, device.uuid, { limit: 1 }), [ 60 ]);
      // Clamped, never refused: integer-like numbers and numeric strings; anything else is the default.
      const clamped: Array<[unknown, number[]]> = [
        [{ limit: '5' }, range(56, 60) ], [{ limit: ' 7 ' }, range(54, 60) ], [{ limit: 2000 }, range(1, 60) ], [{ limit: 0 }, [ 60 ]],
        [{ limit: -3 }, [ 60 ]], [{ limit: 2.9 }, [ 59, 60 ]], [{ limit: '2.9' }, [ 59, 60 ]], [{ limit: 1e300 }, range(1, 60) ],
        [{ limit: null }, range(11, 60) ], [{ limit: 'many' }, range(11, 60) ], [{ limit: [ 5 ] }, range(11, 60) ], [{ limit: '' }, range(11, 60) ],
        [{ offset: '58' }, [ 1, 2 ]], [{ limit: '2', offset: '3' }, [ 56, 57 ]], [{ offset: -1 }, range(11, 60) ], [{ offset: 0.5 }, range(11, 60) ],
        [{ offset: 1e300 }, []], [{ offset: 'x' }, range(11, 60) ], [ 42, range(11, 60) ], [ 'all', range(11, 60) ], [[], range(11, 60) ],
      ];
      for (const [ params, expected ] of clamped) assert.deepStrictEqual(await history(client, device.uuid, params), expected, JSON.stringify(params));
      const one = (await historyOf(client, { limit: 1 })).devices[device.uuid][0];
      assert.deepStrictEqual(one, { n: 60, timestamp: '2025-10-25T08:01:00.000Z', type: 'seq', recordedAt: '2025-10-25T08:01:00.000Z' });
    });

    it('one list per device the socket joined, each with its own records; a device without history has []', async () => {
      const a = await deviceWithToken();
      const b = await deviceWithToken();
      const c = await deviceWithToken();
      await seed(a.device, 3);
      await seed(b.device, 2);
      const client = await joined('v2', 'websocket', a.token);
      for (const t of [ b.token, c.token ]) assert.strictEqual((await client.request('join-token', { token: t })).ok, true);
      const answer = await historyOf(client, { limit: 2 });
      assert.deepStrictEqual(Object.keys(answer.devices).sort(), [ a.device.uuid, b.device.uuid, c.device.uuid ].sort());
      assert.deepStrictEqual(answer.devices[a.device.uuid].map((r: { n: number }) => r.n), [ 2, 3 ]);
      assert.deepStrictEqual(answer.devices[b.device.uuid].map((r: { n: number }) => r.n), [ 1, 2 ]);
      assert.deepStrictEqual(answer.devices[c.device.uuid], []);
      // requestedBy: the token joined most recently.
      assert.deepStrictEqual(answer.requestedBy, { deviceType: null, deviceName: 'Unknown Device', isReadOnly: false });
    });
  });

  describe('[token-updated] lib/realtime refreshToken()', () => {
    // The spy below only counts the real lookups (it calls through); it is removed after the test.
    afterEach(() => mm.restore());

    it('a note changed on another worker (bus message only): every socket here joined with the token takes it, from one lookup', async () => {
      const device = await createDevice();
      const teacher = await installKind(device, { appId: 'teacher-app', deviceType: 'teacher', note: 'old' });
      const a = await joined('v4', 'websocket', teacher);
      const b = await joined('v2', 'polling', teacher);
      const proto = Object.getPrototypeOf(app.createAnonymousContext().service.appInstall);
      const resolveToken = proto.resolveToken;
      let lookups = 0;
      mm(proto, 'resolveToken', function(this: unknown, t: string) {
        if (t === teacher) lookups += 1;
        return resolveToken.call(this, t);
      });
      // What another worker's set-teacher-name does: write the row, announce it.
      await app.model.AppInstall.update({ note: 'Ms Li' }, { where: { token: teacher } });
      await app.sharedState.publish({ type: 'token-updated', token: teacher });
      const channels = [ a, b ].map(c => serverSocketOf(c));
      await eventually(() => assert.deepStrictEqual(channels.map(s => app.realtime.channelOf(s)?.token.note), [ 'Ms Li', 'Ms Li' ]));
      assert.strictEqual(lookups, 1);
      const sent = await expectSent(b, { type: 'chat', content: null });
      const info = { appId: 'teacher-app', deviceType: 'teacher', deviceName: 'Unknown Device - Ms Li', isReadOnly: false, note: 'Ms Li' };
      assert.deepStrictEqual(sent.sent.senderInfo, info);
      assert.deepStrictEqual((await received(a, 'chat', sent.eventId)).senderInfo, info);
    });

    it('the token now belongs to another device (an import replaced it): its sockets leave the old device\'s room (left token_revoked)', async () => {
      const from = await createDevice();
      const to = await createDevice();
      const token = await installKind(from, { appId: 'moved-app' });
      const client = await joined('v4', 'websocket', token);
      const mark = client.mark();
      // What the import's overwrite does: the token's row now names the other device; then the bus message.
      const toRow = await app.model.Device.findOne({ where: { uuid: to.uuid }, raw: true }) as unknown as { id: number };
      await app.model.AppInstall.update({ deviceId: toRow.id }, { where: { token } });
      await app.sharedState.publish({ type: 'token-updated', token });
      assert.deepStrictEqual(await client.waitFor('left', () => true, { since: mark }), { by: 'token', uuid: from.uuid, reason: 'token_revoked' });
      assert.strictEqual(app.realtime.channelOf(serverSocketOf(client)), undefined);
    });
  });

  describe('[logs] no KV token and no event content in the log files', () => {
    /** Every log file of the app (path → its size now). */
    function logFiles(): Map<string, number> {
      const dir = app.config.logger.dir;
      return new Map(fs.readdirSync(dir).filter(f => f.endsWith('.log')).map(f => [ path.join(dir, f), fs.statSync(path.join(dir, f)).size ]));
    }

    /** Waits until every file transport has written what was logged so far (a marker written after it is in the file). */
    async function flushed(marker: string) {
      const files: string[] = [];
      for (const logger of app.loggers.values()) {
        const file = logger.get('file') as unknown as { options: { file: string }; log(level: string, args: unknown[], meta: object): void } | undefined;
        if (!file) continue;
        file.log('INFO', [ marker ], {});
        files.push(file.options.file);
      }
      await eventually(() => {
        for (const f of files) assert.ok(fs.readFileSync(f, 'utf8').includes(marker), `${f} flushed`);
      });
    }

    it('database failures of send-event, get-event-history and a socket token lookup log one line each, without token or content', async () => {
      const { device, token } = await deviceWithToken();
      const fresh = (await installApp(device, { appId: 'fresh-app' })).token; // never looked up yet: not cached
      // Handshake tokens travel in the query of every request of a polling client.
      const sender = await joined('v4', 'websocket', token);
      const reader = await joined('v2', 'polling', token);
      const secret = `secret-content-${process.pid}-${Date.now()}`;
      const before = logFiles();
      await withoutDeviceLog(async () => {
        await expectRefused(sender, 'internal_error', { type: 'chat', content: { secret } });
        await expectHistoryError(reader, 'internal_error');
      });
      await app.model.query('ALTER TABLE app_installs RENAME TO app_installs_away');
      try {
        assert.deepStrictEqual(await reader.request('join-token', { token: fresh }), { ok: false, reason: 'database_error' });
      } finally {
        await app.model.query('ALTER TABLE app_installs_away RENAME TO app_installs');
      }
      await flushed(`log flush marker ${process.pid}-${Date.now()}`);
      const written = [ ...logFiles() ].map(([ file, size ]) => {
        const start = before.get(file) ?? 0;
        return [ path.basename(file), fs.readFileSync(file).subarray(start, size).toString('utf8') ] as const;
      });
      // No line carries a token or what was sent ...
      for (const [ name, text ] of written) {
        for (const line of text.split('\n')) {
          for (const [ what, value ] of [[ 'token', token ], [ 'looked-up token', fresh ], [ 'event content', secret ]]) {
            assert.ok(!line.includes(value), `${name} has a line with the ${what}: ${line.slice(0, 300)}`);
          }
        }
      }
      // ... yet the failures are logged: one line each, the error's name, code and message.
      const errors = written.find(([ name ]) => name === 'common-error.log')?.[1] ?? '';
      assert.match(errors, /\[events\] recording an event failed: SequelizeDatabaseError/);
      assert.match(errors, /\[events\] reading the event history failed: SequelizeDatabaseError/);
      assert.match(errors, /\[realtime\] token lookup failed: SequelizeDatabaseError/);
    });
  });

  it('the joined payload of the test support matches what the server sends', async () => {
    const { device, token } = await deviceWithToken();
    for (const combo of COMBINATIONS) {
      const client = openClient(server.url, { version: combo.client, transport: combo.transport, token });
      assert.deepStrictEqual(await client.waitFor('joined'), joinedPayload(device.uuid, token, combo.transport));
      client.close();
    }
  });
});
