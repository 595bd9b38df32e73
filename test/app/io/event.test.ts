import assert from 'node:assert';
import { app } from 'egg-mock/bootstrap';
import {
  createDevice, deviceWithToken, installApp, ISO_MS, overrideRateLimits, restoreRateLimits, TestDevice,
} from '../../support/factories';
import {
  ClientVersion, closeAllClients, COMBINATIONS, joinedPayload, openClient, startServer, stopServer, TestClient, TransportName,
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

/** The relayed event `name` with `eventId` as `client` received it. */
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
          'interleaved with kv-key-changed records of writes, oldest first; ack {ok:true, ...}', async () => {
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

          const from = reader.mark();
          const ack = await reader.request('get-event-history', {});
          const history = reader.payloads('event-history', from);
          assert.strictEqual(history.length, 1);
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
          assert.deepStrictEqual(ack, { ok: true, ...history[0] });
        });

        it('invalid parameters: event-history-error invalid_parameters (checked before joining); not joined: not_joined_any_device', async () => {
          const { token } = await deviceWithToken();
          const loner = openClient(server.url, { version, transport });
          await loner.waitConnected();
          const bad: unknown[][] = [
            [{ limit: 0 }], [{ limit: 1001 }], [{ limit: 1.5 }], [{ limit: '10' }], [{ limit: null }], [{ limit: -1 }],
            [{ offset: -1 }], [{ offset: 0.5 }], [{ offset: '0' }], [{ offset: 1e300 }], [ 42 ], [ 'all' ], [[]], [ true ],
          ];
          const expectHistoryError = async (client: TestClient, reason: string, args: unknown[]) => {
            const from = client.mark();
            assert.deepStrictEqual(await client.request('get-event-history', ...args), { ok: false, reason }, JSON.stringify(args));
            assert.deepStrictEqual(client.payloads('event-history-error', from), [{ reason }], JSON.stringify(args));
          };
          for (const args of bad) await expectHistoryError(loner, 'invalid_parameters', args);
          for (const args of [[], [ null ], [{}], [{ limit: 1000, offset: 5 }]]) await expectHistoryError(loner, 'not_joined_any_device', args);
          const member = await joined(version, transport, token);
          for (const args of bad) await expectHistoryError(member, 'invalid_parameters', args);
          // No ack: the event alone.
          const from = member.mark();
          member.send('get-event-history', { limit: 0 });
          assert.deepStrictEqual(await member.waitFor('event-history-error', undefined, { since: from }), { reason: 'invalid_parameters' });
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
      const ack = params === undefined ? await client.request('get-event-history') : await client.request('get-event-history', params);
      assert.strictEqual(ack.ok, true, JSON.stringify(ack));
      return (ack.devices[uuid] as Array<{ n: number; type: string; recordedAt: string }>).map(r => r.n);
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
      const one = (await client.request('get-event-history', { limit: 1 })).devices[device.uuid][0];
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
      const ack = await client.request('get-event-history', { limit: 2 });
      assert.deepStrictEqual(Object.keys(ack.devices).sort(), [ a.device.uuid, b.device.uuid, c.device.uuid ].sort());
      assert.deepStrictEqual(ack.devices[a.device.uuid].map((r: { n: number }) => r.n), [ 2, 3 ]);
      assert.deepStrictEqual(ack.devices[b.device.uuid].map((r: { n: number }) => r.n), [ 1, 2 ]);
      assert.deepStrictEqual(ack.devices[c.device.uuid], []);
      // requestedBy: the token joined most recently.
      assert.deepStrictEqual(ack.requestedBy, { deviceType: null, deviceName: 'Unknown Device', isReadOnly: false });
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
