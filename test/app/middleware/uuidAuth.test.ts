import assert from 'node:assert';
import bcrypt from 'bcryptjs';
import { app } from 'egg-mock/bootstrap';
import { createDevice, installApp, overrideRateLimits, restoreRateLimits } from '../../support/factories';

const err = (message: string, details: unknown = null) => ({ success: false, message, details });

/** Stores a hash the way the original server did (bcryptjs), bypassing the API. */
async function setLegacyHash(uuid: string, hash: string) {
  await app.model.Device.update({ password: hash }, { where: { uuid } });
}

describe('test/app/middleware/uuidAuth.test.ts', () => {
  afterEach(() => restoreRateLimits());

  describe('which device: path, header x-device-uuid, query uuid, body uuid', () => {
    it('200 with the device from the path', async () => {
      const d = await createDevice();
      const res = await app.httpRequest().put(`/devices/${d.uuid}/name`).send({ name: 'n' }).expect(200);
      assert.strictEqual(res.body.device.uuid, d.uuid);
    });

    it('200 with the device from the x-device-uuid header (route without :uuid)', async () => {
      const d = await createDevice();
      const res = await app.httpRequest().get('/apps/tokens').set('x-device-uuid', d.uuid).expect(200);
      assert.strictEqual(res.body.deviceUuid, d.uuid);
    });

    it('200 with the device from the query uuid', async () => {
      const d = await createDevice();
      const res = await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid }).expect(200);
      assert.strictEqual(res.body.deviceUuid, d.uuid);
    });

    it('200 with the device from the body uuid', async () => {
      const d = await createDevice();
      const res = await app.httpRequest().get('/apps/tokens').send({ uuid: d.uuid }).expect(200);
      assert.strictEqual(res.body.deviceUuid, d.uuid);
    });

    it('200 when several sources name the same device', async () => {
      const d = await createDevice();
      await app.httpRequest().put(`/devices/${d.uuid}/name`).set('x-device-uuid', d.uuid)
        .query({ uuid: d.uuid }).send({ name: 'n', uuid: d.uuid }).expect(200);
      await app.httpRequest().get('/apps/tokens').set('x-device-uuid', d.uuid).query({ uuid: d.uuid }).expect(200);
    });

    it('400 设备UUID不匹配 when the path and the header name different devices (nothing changes)', async () => {
      const a = await createDevice({ name: 'A' });
      const b = await createDevice({ name: 'B' });
      const res = await app.httpRequest().put(`/devices/${a.uuid}/name`).set('x-device-uuid', b.uuid).send({ name: 'x' }).expect(400);
      assert.deepStrictEqual(res.body, err('设备UUID不匹配', { sources: [ 'path', 'header' ] }));
      for (const d of [ a, b ]) {
        const show = await app.httpRequest().get(`/devices/${d.uuid}`).expect(200);
        assert.strictEqual(show.body.name, d.name);
      }
    });

    it('400 设备UUID不匹配 when the path and the query or the body disagree', async () => {
      const a = await createDevice();
      let res = await app.httpRequest().put(`/devices/${a.uuid}/name`).query({ uuid: 'other' }).send({ name: 'x' }).expect(400);
      assert.deepStrictEqual(res.body, err('设备UUID不匹配', { sources: [ 'path', 'query' ] }));
      res = await app.httpRequest().put(`/devices/${a.uuid}/name`).send({ name: 'x', uuid: 'other' }).expect(400);
      assert.deepStrictEqual(res.body, err('设备UUID不匹配', { sources: [ 'path', 'body' ] }));
    });

    it('400 设备UUID不匹配 when header and query disagree, even if the header device is open', async () => {
      const open = await createDevice();
      const locked = await createDevice({ password: 'pw' });
      const res = await app.httpRequest().get('/apps/tokens').set('x-device-uuid', open.uuid).query({ uuid: locked.uuid }).expect(400);
      assert.deepStrictEqual(res.body, err('设备UUID不匹配', { sources: [ 'header', 'query' ] }));
    });

    it('400 设备UUID不匹配 when query and body disagree', async () => {
      const a = await createDevice();
      const res = await app.httpRequest().get('/apps/tokens').query({ uuid: a.uuid }).send({ uuid: 'other' }).expect(400);
      assert.deepStrictEqual(res.body, err('设备UUID不匹配', { sources: [ 'query', 'body' ] }));
    });

    it('400 设备UUID不匹配 for uuids differing only in case', async () => {
      const a = await createDevice({ uuid: 'case-dev' });
      const res = await app.httpRequest().put(`/devices/${a.uuid}/name`).set('x-device-uuid', 'CASE-DEV').send({ name: 'x' }).expect(400);
      assert.deepStrictEqual(res.body, err('设备UUID不匹配', { sources: [ 'path', 'header' ] }));
    });

    it('400 需要提供设备UUID when no source names a device (empty values count as absent)', async () => {
      let res = await app.httpRequest().get('/apps/tokens').expect(400);
      assert.deepStrictEqual(res.body, err('需要提供设备UUID'));
      res = await app.httpRequest().get('/apps/tokens').set('x-device-uuid', '').query({ uuid: '' }).expect(400);
      assert.deepStrictEqual(res.body, err('需要提供设备UUID'));
    });

    it('404 设备不存在 for an unknown device from any source', async () => {
      let res = await app.httpRequest().get('/apps/tokens').set('x-device-uuid', 'ghost').expect(404);
      assert.deepStrictEqual(res.body, err('设备不存在'));
      res = await app.httpRequest().put('/devices/ghost/name').send({ name: 'x' }).expect(404);
      assert.deepStrictEqual(res.body, err('设备不存在'));
    });
  });

  describe('password: header x-device-password, query password, query currentPassword', () => {
    it('200 for a device without a password, with no credentials or with any password given', async () => {
      const d = await createDevice();
      await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid }).expect(200);
      await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid }).set('x-device-password', 'whatever').expect(200);
    });

    it('200 with the password in the header, in query password, or in query currentPassword', async () => {
      const d = await createDevice({ password: 'pw' });
      await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid }).set('x-device-password', 'pw').expect(200);
      await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid, password: 'pw' }).expect(200);
      await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid, currentPassword: 'pw' }).expect(200);
    });

    it('the header wins over query password, which wins over query currentPassword', async () => {
      const d = await createDevice({ password: 'pw' });
      await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid, password: 'bad' }).set('x-device-password', 'pw').expect(200);
      let res = await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid, password: 'pw' }).set('x-device-password', 'bad').expect(401);
      assert.deepStrictEqual(res.body, err('密码错误'));
      await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid, password: 'pw', currentPassword: 'bad' }).expect(200);
      res = await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid, password: 'bad', currentPassword: 'pw' }).expect(401);
      assert.deepStrictEqual(res.body, err('密码错误'));
    });

    it('401 需要提供密码或JWT token when a protected device gets no password (a body password does not count)', async () => {
      const d = await createDevice({ password: 'pw' });
      let res = await app.httpRequest().put(`/devices/${d.uuid}/name`).send({ name: 'x', password: 'pw' }).expect(401);
      assert.deepStrictEqual(res.body, err('需要提供密码或JWT token'));
      res = await app.httpRequest().put(`/devices/${d.uuid}/name`).set('x-device-password', '').send({ name: 'x' }).expect(401);
      assert.deepStrictEqual(res.body, err('需要提供密码或JWT token'));
    });

    it('401 密码错误 for a wrong password', async () => {
      const d = await createDevice({ password: 'pw' });
      const res = await app.httpRequest().put(`/devices/${d.uuid}/name`).set('x-device-password', 'PW').send({ name: 'x' }).expect(401);
      assert.deepStrictEqual(res.body, err('密码错误'));
    });

    it('200 for a cost-8 bcryptjs hash made by the original server ($2a$ and $2y$ forms)', async () => {
      const d = await createDevice();
      const legacy = bcrypt.hashSync('old-secret', 8);
      assert.match(legacy, /^\$2[ab]\$08\$/);
      await setLegacyHash(d.uuid, legacy);
      await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid }).set('x-device-password', 'old-secret').expect(200);
      const res = await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid }).set('x-device-password', 'old-secre').expect(401);
      assert.deepStrictEqual(res.body, err('密码错误'));
      await setLegacyHash(d.uuid, legacy.replace(/^\$2[ab]\$/, '$2y$'));
      await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid }).set('x-device-password', 'old-secret').expect(200);
    });

    it('a legacy cost-8 device changing its password gets a hash of cost >= 10', async () => {
      const d = await createDevice();
      await setLegacyHash(d.uuid, bcrypt.hashSync('old', 8));
      await app.httpRequest().put(`/devices/${d.uuid}/password`).set('x-device-password', 'old').send({ newPassword: 'new' }).expect(200);
      const row = await app.model.Device.findOne({ where: { uuid: d.uuid }, raw: true }) as unknown as { password: string };
      const cost = Number(/^\$2[aby]\$(\d\d)\$/.exec(row.password)?.[1]);
      assert.ok(cost >= 10, row.password);
      await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid }).set('x-device-password', 'new').expect(200);
    });

    it('401 密码错误 (not 500) when the stored hash is not a bcrypt hash', async () => {
      const d = await createDevice();
      await setLegacyHash(d.uuid, 'plain-text-password');
      const res = await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid }).set('x-device-password', 'plain-text-password').expect(401);
      assert.deepStrictEqual(res.body, err('密码错误'));
    });
  });

  describe('failed-password throttling (RATE_LIMIT_PASSWORD per IP and device)', () => {
    it('429 with JSON body and RateLimit-Policy, RateLimit, Retry-After after the limit of failures, even for the right password', async () => {
      const d = await createDevice({ password: 'pw' });
      overrideRateLimits({ password: 2 });
      for (let i = 0; i < 2; i++) {
        const res = await app.httpRequest().put(`/devices/${d.uuid}/name`).set('x-device-password', 'bad').send({ name: 'x' }).expect(401);
        assert.deepStrictEqual(res.body, err('密码错误'));
      }
      const res = await app.httpRequest().put(`/devices/${d.uuid}/name`).set('x-device-password', 'pw').send({ name: 'x' }).expect(429);
      const retryAfter = Number(res.headers['retry-after']);
      assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 60, res.headers['retry-after']);
      assert.deepStrictEqual(res.body, {
        success: false,
        message: '密码尝试次数过多，请稍后再试',
        details: { limit: 2, windowSeconds: 60, retryAfter },
        code: 'TOO_MANY_ATTEMPTS',
      });
      assert.strictEqual(res.headers['ratelimit-policy'], '2;w=60');
      assert.strictEqual(res.headers.ratelimit, `limit=2, remaining=0, reset=${retryAfter}`);
      const show = await app.httpRequest().get(`/devices/${d.uuid}`).expect(200);
      assert.notStrictEqual(show.body.name, 'x');
    });

    it('successful attempts are not counted', async () => {
      const d = await createDevice({ password: 'pw' });
      overrideRateLimits({ password: 2 });
      for (let i = 0; i < 4; i++) {
        await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid }).set('x-device-password', 'pw').expect(200);
      }
      await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid }).set('x-device-password', 'bad').expect(401);
      await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid }).set('x-device-password', 'pw').expect(200);
    });

    it('is counted per device: another protected device is not throttled', async () => {
      const a = await createDevice({ password: 'pw' });
      const b = await createDevice({ password: 'pw' });
      overrideRateLimits({ password: 1 });
      await app.httpRequest().get('/apps/tokens').query({ uuid: a.uuid }).set('x-device-password', 'bad').expect(401);
      await app.httpRequest().get('/apps/tokens').query({ uuid: a.uuid }).set('x-device-password', 'pw').expect(429);
      await app.httpRequest().get('/apps/tokens').query({ uuid: b.uuid }).set('x-device-password', 'pw').expect(200);
    });

    it('covers every uuidAuth route of the device (failures on one route throttle the others)', async () => {
      const d = await createDevice({ password: 'pw' });
      const inst = await installApp(d, { password: 'pw' });
      overrideRateLimits({ password: 2 });
      await app.httpRequest().get(`/apps/devices/${d.uuid}/apps`).query({ password: 'bad' }).expect(401);
      await app.httpRequest().delete(`/devices/${d.uuid}/password`).query({ currentPassword: 'bad' }).expect(401);
      await app.httpRequest().delete(`/apps/devices/${d.uuid}/uninstall/${inst.id}`).set('x-device-password', 'pw').expect(429);
      await app.httpRequest().get('/kv/_info').set('x-app-token', inst.token).expect(200);
    });

    it('X-Forwarded-For does not escape the throttle when TRUST_PROXY is off', async () => {
      const d = await createDevice({ password: 'pw' });
      overrideRateLimits({ password: 2 });
      for (const ip of [ '10.0.0.1', '10.0.0.2' ]) {
        await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid }).set('X-Forwarded-For', ip).set('x-device-password', 'bad').expect(401);
      }
      await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid }).set('X-Forwarded-For', '10.0.0.3').set('x-device-password', 'pw').expect(429);
    });

    it('0 disables the throttle', async () => {
      const d = await createDevice({ password: 'pw' });
      overrideRateLimits({ password: 0 });
      for (let i = 0; i < 5; i++) {
        await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid }).set('x-device-password', 'bad').expect(401);
      }
      await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid }).set('x-device-password', 'pw').expect(200);
    });
  });
});
