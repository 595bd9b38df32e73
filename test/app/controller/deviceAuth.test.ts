import assert from 'node:assert';
import { setTimeout as sleep } from 'node:timers/promises';
import { app } from 'egg-mock/bootstrap';
import { deviceWithToken, createDevice, installApp } from '../../support/factories';

const err = (message: string, details: unknown = null) => ({ success: false, message, details });
const EXPIRED = '设备代码不存在或已过期';

async function newCode(): Promise<string> {
  const res = await app.httpRequest().post('/auth/device/code').expect(200);
  return res.body.device_code;
}

describe('test/app/controller/deviceAuth.test.ts', () => {
  describe('[POST /auth/device/code] create()', () => {
    it('200 with {device_code: 1234-ABCD, expires_in: 900, message}', async () => {
      const res = await app.httpRequest().post('/auth/device/code').expect(200).expect('Content-Type', /application\/json/);
      assert.match(res.body.device_code, /^\d{4}-[A-Z]{4}$/);
      assert.deepStrictEqual(res.body, { device_code: res.body.device_code, expires_in: 900, message: '请在前端输入此代码进行授权' });
    });

    it('200 with a different code each time', async () => {
      const codes = new Set<string>();
      for (let i = 0; i < 10; i++) {
        const code = await newCode();
        assert.match(code, /^\d{4}-[A-Z]{4}$/);
        codes.add(code);
      }
      assert.strictEqual(codes.size, 10);
    });
  });

  describe('[POST /auth/device/bind] bind()', () => {
    it('200 令牌已成功绑定到设备代码 for a live code and an installed token', async () => {
      const { token } = await deviceWithToken();
      const code = await newCode();
      const res = await app.httpRequest().post('/auth/device/bind').send({ device_code: code, token }).expect(200);
      assert.deepStrictEqual(res.body, { success: true, message: '令牌已成功绑定到设备代码' });
    });

    it('400 请提供 device_code 和 token when either is missing or empty', async () => {
      const { token } = await deviceWithToken();
      const code = await newCode();
      for (const body of [{}, { device_code: code }, { token }, { device_code: '', token }, { device_code: code, token: '' }, { device_code: 1, token }]) {
        const res = await app.httpRequest().post('/auth/device/bind').send(body).expect(400);
        assert.deepStrictEqual(res.body, err('请提供 device_code 和 token'));
      }
      const status = await app.httpRequest().get('/auth/device/status').query({ device_code: code }).expect(200);
      assert.strictEqual(status.body.has_token, false);
    });

    it('400 无效的令牌 for a token that is not installed (the code stays unbound)', async () => {
      const code = await newCode();
      const res = await app.httpRequest().post('/auth/device/bind').send({ device_code: code, token: 'f'.repeat(64) }).expect(400);
      assert.deepStrictEqual(res.body, err('无效的令牌'));
      const status = await app.httpRequest().get('/auth/device/status').query({ device_code: code }).expect(200);
      assert.strictEqual(status.body.has_token, false);
    });

    it('400 无效的令牌 for a token that was uninstalled', async () => {
      const d = await createDevice();
      const inst = await installApp(d);
      await app.httpRequest().delete(`/apps/devices/${d.uuid}/uninstall/${inst.id}`).expect(204);
      const code = await newCode();
      const res = await app.httpRequest().post('/auth/device/bind').send({ device_code: code, token: inst.token }).expect(400);
      assert.deepStrictEqual(res.body, err('无效的令牌'));
    });

    it('400 设备代码不存在或已过期 for an unknown code with a valid token', async () => {
      const { token } = await deviceWithToken();
      const res = await app.httpRequest().post('/auth/device/bind').send({ device_code: '0000-ZZZZ', token }).expect(400);
      assert.deepStrictEqual(res.body, err(EXPIRED));
    });

    it('400 设备代码不存在或已过期 for a code already consumed', async () => {
      const { token } = await deviceWithToken();
      const code = await newCode();
      await app.httpRequest().post('/auth/device/bind').send({ device_code: code, token }).expect(200);
      await app.httpRequest().get('/auth/device/token').query({ device_code: code }).expect(200);
      const res = await app.httpRequest().post('/auth/device/bind').send({ device_code: code, token }).expect(400);
      assert.deepStrictEqual(res.body, err(EXPIRED));
    });

    it('200 for a code typed in lower case or with surrounding spaces', async () => {
      const { token } = await deviceWithToken();
      const code = await newCode();
      await app.httpRequest().post('/auth/device/bind').send({ device_code: ` ${code.toLowerCase()} `, token }).expect(200);
      const res = await app.httpRequest().get('/auth/device/token').query({ device_code: code }).expect(200);
      assert.deepStrictEqual(res.body, { status: 'success', token });
    });
  });

  describe('[GET /auth/device/token] token()', () => {
    it('200 pending with expires_in (seconds left) before the code is bound', async () => {
      const code = await newCode();
      const res = await app.httpRequest().get('/auth/device/token').query({ device_code: code }).expect(200);
      assert.deepStrictEqual(Object.keys(res.body).sort(), [ 'expires_in', 'message', 'status' ]);
      assert.strictEqual(res.body.status, 'pending');
      assert.strictEqual(res.body.message, '等待用户授权');
      assert.ok(Number.isInteger(res.body.expires_in) && res.body.expires_in > 0 && res.body.expires_in <= 900, String(res.body.expires_in));
    });

    it('200 success with the token once bound; the code is consumed (then expired)', async () => {
      const { token } = await deviceWithToken();
      const code = await newCode();
      await app.httpRequest().post('/auth/device/bind').send({ device_code: code, token }).expect(200);
      const res = await app.httpRequest().get('/auth/device/token').query({ device_code: code }).expect(200);
      assert.deepStrictEqual(res.body, { status: 'success', token });
      const again = await app.httpRequest().get('/auth/device/token').query({ device_code: code }).expect(200);
      assert.deepStrictEqual(again.body, { status: 'expired', message: EXPIRED });
      const status = await app.httpRequest().get('/auth/device/status').query({ device_code: code }).expect(200);
      assert.deepStrictEqual(status.body, { device_code: code, exists: false, message: EXPIRED });
    });

    it('200 expired for an unknown code', async () => {
      const res = await app.httpRequest().get('/auth/device/token').query({ device_code: '1234-ABCD' }).expect(200);
      assert.deepStrictEqual(res.body, { status: 'expired', message: EXPIRED });
    });

    it('200 expired once the code outlived its lifetime', async () => {
      await app.sharedState.deviceCodeCreate('4321-WXYZ', 20, Date.now());
      await sleep(60);
      const res = await app.httpRequest().get('/auth/device/token').query({ device_code: '4321-WXYZ' }).expect(200);
      assert.deepStrictEqual(res.body, { status: 'expired', message: EXPIRED });
      const status = await app.httpRequest().get('/auth/device/status').query({ device_code: '4321-WXYZ' }).expect(200);
      assert.deepStrictEqual(status.body, { device_code: '4321-WXYZ', exists: false, message: EXPIRED });
    });

    it('400 请提供 device_code without a device_code', async () => {
      for (const q of [{}, { device_code: '' }]) {
        const res = await app.httpRequest().get('/auth/device/token').query(q).expect(400);
        assert.deepStrictEqual(res.body, err('请提供 device_code'));
      }
    });
  });

  describe('[GET /auth/device/status] status()', () => {
    it('200 {device_code, exists:true, has_token:false, expires_in, created_at(epoch ms)} for a fresh code', async () => {
      const before = Date.now();
      const code = await newCode();
      const after = Date.now();
      const res = await app.httpRequest().get('/auth/device/status').query({ device_code: code }).expect(200);
      assert.deepStrictEqual(Object.keys(res.body).sort(), [ 'created_at', 'device_code', 'exists', 'expires_in', 'has_token' ]);
      assert.strictEqual(res.body.device_code, code);
      assert.strictEqual(res.body.exists, true);
      assert.strictEqual(res.body.has_token, false);
      assert.ok(Number.isInteger(res.body.expires_in) && res.body.expires_in > 0 && res.body.expires_in <= 900);
      assert.ok(Number.isInteger(res.body.created_at) && res.body.created_at >= before && res.body.created_at <= after);
    });

    it('200 with has_token:true after bind (status does not consume the code)', async () => {
      const { token } = await deviceWithToken();
      const code = await newCode();
      await app.httpRequest().post('/auth/device/bind').send({ device_code: code, token }).expect(200);
      const res = await app.httpRequest().get('/auth/device/status').query({ device_code: code }).expect(200);
      assert.strictEqual(res.body.exists, true);
      assert.strictEqual(res.body.has_token, true);
      assert.ok(!('token' in res.body));
      const consumed = await app.httpRequest().get('/auth/device/token').query({ device_code: code }).expect(200);
      assert.deepStrictEqual(consumed.body, { status: 'success', token });
    });

    it('200 {device_code, exists:false, message} for an unknown code', async () => {
      const res = await app.httpRequest().get('/auth/device/status').query({ device_code: '9999-QQQQ' }).expect(200);
      assert.deepStrictEqual(res.body, { device_code: '9999-QQQQ', exists: false, message: EXPIRED });
    });

    it('400 请提供 device_code without a device_code', async () => {
      const res = await app.httpRequest().get('/auth/device/status').expect(400);
      assert.deepStrictEqual(res.body, err('请提供 device_code'));
    });
  });
});
