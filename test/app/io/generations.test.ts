import assert from 'node:assert';
import { app } from 'egg-mock/bootstrap';
import { createDevice, installApp } from '../../support/factories';
import { closeAllClients, openClient, startServer, stopServer, TestClient } from '../../support/socket';

/**
 * Both client generations at once, on one device of one server (CONTRACT.md Part II
 * preamble): a ClassworksKV 1.1 client (device password, x-app-token, socket.io-client 2.x,
 * flat kv-key-changed) and 1.3 clients (namespace login with the class password, Bearer,
 * socket.io-client 4.x, a read-only token, send-event) see each other's writes and events.
 */
describe('test/app/io/generations.test.ts', () => {
  let url: string;
  before(async () => {
    url = await startServer();
  });
  after(() => stopServer());
  afterEach(() => closeAllClients());

  async function joined(client: TestClient) {
    const payload = await client.waitFor('joined');
    return payload as { by: string; uuid: string; token: string; tokenInfo: Record<string, unknown> };
  }

  it('a 1.1 client and 1.3 clients on the same device see each other\'s writes and relayed events', async () => {
    // The 1.1 side: a device with a device password, a token installed with it.
    const device = await createDevice({ uuid: 'gen-room-1', name: 'Room 1', password: 'device-pass' });
    const legacy = await installApp(device, { appId: 'classworks-1.1', password: 'device-pass' });

    // The admin sets the namespace and a class password for the 1.3 screens (device credentials).
    await app.httpRequest().put('/auto-auth/devices/gen-room-1/namespace').set('x-device-password', 'device-pass')
      .send({ namespace: 'class-7a' })
      .expect(200);
    await app.httpRequest().post('/auto-auth/devices/gen-room-1/auth-configs').set('x-device-password', 'device-pass')
      .send({ password: 'class-pass', deviceType: 'teacher' })
      .expect(201);
    await app.httpRequest().post('/auto-auth/devices/gen-room-1/auth-configs').set('x-device-password', 'device-pass')
      .send({ password: 'parents-pass', deviceType: 'parent', isReadOnly: true })
      .expect(201);

    // The default open config grants nothing: the device has a password.
    const open = await app.httpRequest().post('/apps/auth/token').send({ namespace: 'class-7a', appId: 'classworks' })
      .expect(401);
    assert.deepStrictEqual(open.body, { success: false, message: '需要提供密码', details: null });

    // The 1.3 side: namespace login, a writable teacher token and a read-only parent token.
    const teacher = await app.httpRequest().post('/apps/auth/token').send({ namespace: 'class-7a', password: 'class-pass', appId: 'classworks' })
      .expect(201);
    assert.deepStrictEqual([ teacher.body.success, teacher.body.deviceType, teacher.body.isReadOnly ], [ true, 'teacher', false ]);
    const parent = await app.httpRequest().post('/apps/auth/token').send({ namespace: 'class-7a', password: 'parents-pass', appId: 'classworks' })
      .expect(201);
    assert.deepStrictEqual([ parent.body.deviceType, parent.body.isReadOnly ], [ 'parent', true ]);

    // Sockets: the 1.1 screen on socket.io-client 2.x (join-token), the 1.3 screens on 4.x (handshake token).
    const oldScreen = openClient(url, { version: 'v2', transport: 'polling' });
    await oldScreen.waitConnected();
    oldScreen.send('join-token', { token: legacy.token });
    assert.strictEqual((await joined(oldScreen)).uuid, 'gen-room-1');
    const newScreen = openClient(url, { version: 'v4', token: teacher.body.token });
    const newJoined = await joined(newScreen);
    assert.deepStrictEqual([ newJoined.uuid, newJoined.token, newJoined.tokenInfo.deviceType, newJoined.tokenInfo.isReadOnly ], [ 'gen-room-1', teacher.body.token, 'teacher', false ]);
    const parentScreen = openClient(url, { version: 'v4', token: parent.body.token });
    assert.strictEqual((await joined(parentScreen)).tokenInfo.isReadOnly, true);

    // A 1.1 write (x-app-token) reaches the 1.3 screens, flat, with its revision.
    const m1 = newScreen.mark();
    const w1 = await app.httpRequest().post('/kv/homework').set('x-app-token', legacy.token).send({ text: '1.1' })
      .expect(200);
    const seen1 = await newScreen.waitFor('kv-key-changed', p => p.key === 'homework', { since: m1 });
    assert.deepStrictEqual(seen1, { uuid: 'gen-room-1', key: 'homework', action: 'upsert', created: true, updatedAt: w1.body.updatedAt, revision: 1 });
    await parentScreen.waitFor('kv-key-changed', p => p.key === 'homework');

    // A 1.3 write (Bearer) reaches the 1.1 screen, and both read the same value.
    const w2 = await app.httpRequest().post('/kv/homework').set('Authorization', `Bearer ${teacher.body.token}`).send({ text: '1.3' })
      .expect(200);
    const seen2 = await oldScreen.waitFor('kv-key-changed', p => p.revision === 2);
    assert.deepStrictEqual(seen2, { uuid: 'gen-room-1', key: 'homework', action: 'upsert', created: false, updatedAt: w2.body.updatedAt, revision: 2 });
    const read = await app.httpRequest().get('/kv/homework').set('x-app-token', legacy.token).expect(200);
    assert.deepStrictEqual(read.body, { text: '1.3' });

    // The 1.3 batch import answer serves both generations' readers.
    const batch = await app.httpRequest().post('/kv/_batchimport').set('Authorization', `Bearer ${teacher.body.token}`)
      .send({ a: { x: 1 }, homework: [] })
      .expect(200);
    assert.deepStrictEqual(batch.body.results, [{ key: 'a', created: true }, { key: 'homework', created: false }]);
    assert.strictEqual(batch.body.code, 200);
    assert.deepStrictEqual(batch.body.data.results, [{ key: 'a', isNew: true }, { key: 'homework', isNew: false }]);
    await oldScreen.waitFor('kv-key-changed', p => p.key === 'homework' && p.batch === true);

    // The read-only parent token reads, but cannot write; nothing reaches the screens.
    const denied = await app.httpRequest().post('/kv/homework').set('Authorization', `Bearer ${parent.body.token}`).send({ text: 'parent' })
      .expect(403);
    assert.deepStrictEqual(denied.body, { success: false, message: '当前token为只读模式,无法修改数据', details: null });
    await app.httpRequest().get('/kv/homework').set('Authorization', `Bearer ${parent.body.token}`).expect(200, []);

    // A 1.3 notification (send-event) reaches the 1.1 screen and the parent screen, not the sender.
    const m2 = oldScreen.mark();
    const ack = await newScreen.request('send-event', { type: 'notification', content: { text: '放学了' } });
    assert.strictEqual(ack.ok, true);
    const notice = await oldScreen.waitFor('notification', () => true, { since: m2 });
    assert.deepStrictEqual(notice.content, { text: '放学了' });
    assert.strictEqual(notice.eventId, ack.eventId);
    assert.deepStrictEqual(notice.senderInfo.deviceType, 'teacher');
    await parentScreen.waitFor('notification', p => p.eventId === ack.eventId);
    const sent = await newScreen.waitFor('event-sent', p => p.eventId === ack.eventId);
    assert.strictEqual(sent.targetDevices, 1);
    assert.deepStrictEqual(newScreen.named('notification'), []);

    // The read-only parent screen cannot send.
    const refused = await parentScreen.request('send-event', { type: 'chat', content: { text: 'hi' } });
    assert.deepStrictEqual(refused, { ok: false, reason: 'readonly_token_cannot_send_events' });

    // The 1.1 token keeps working for the 1.1 routes on the same device.
    const info = await app.httpRequest().get('/kv/_info').set('x-app-token', legacy.token).expect(200);
    assert.strictEqual(info.body.device.uuid, 'gen-room-1');
    assert.strictEqual(info.body.hasAccount, false);
    const tokens = await app.httpRequest().get('/apps/tokens?uuid=gen-room-1').set('x-device-password', 'device-pass').expect(200);
    assert.deepStrictEqual(tokens.body.tokens.map((t: { appId: string }) => t.appId).sort(), [ 'classworks', 'classworks', 'classworks-1.1' ]);
  });
});
