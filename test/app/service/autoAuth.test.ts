import assert from 'node:assert';
import { app } from 'egg-mock/bootstrap';
import { createDevice, overrideRateLimits, restoreRateLimits } from '../../support/factories';

const enc = encodeURIComponent;

function login(body: Record<string, unknown>) {
  return app.httpRequest().post('/apps/auth/token').send(body);
}

describe('test/app/service/autoAuth.test.ts', () => {
  afterEach(() => restoreRateLimits());

  describe('match()', () => {
    it('answers which config matched, or why none did, without throttling (the controller counts failures)', async () => {
      const d = await createDevice();
      await app.httpRequest().post(`/auto-auth/devices/${enc(d.uuid)}/auth-configs`).send({ password: 'pw', deviceType: 'teacher' }).expect(201);
      overrideRateLimits({ password: 1 });
      const ctx = app.mockContext();
      const device = await ctx.service.autoAuth.deviceByNamespace(d.uuid);
      for (let i = 0; i < 3; i++) {
        assert.deepStrictEqual(await ctx.service.autoAuth.match(device, 'bad'), { failure: 'wrong_password' });
      }
      const hit = await ctx.service.autoAuth.match(device, 'pw');
      assert.deepStrictEqual([ hit.failure, hit.config?.deviceType ], [ undefined, 'teacher' ]);
      const open = await ctx.service.autoAuth.match(device, null);
      assert.deepStrictEqual([ open.failure, open.config?.deviceType, open.config?.password ], [ undefined, 'classroom', null ]);
      // The service counted nothing: the first HTTP failure is the first one counted.
      await login({ namespace: d.uuid, password: 'pw', appId: 'cw' }).expect(201);
      await login({ namespace: d.uuid, password: 'bad', appId: 'cw' }).expect(401);
      await login({ namespace: d.uuid, password: 'pw', appId: 'cw' }).expect(429);
    });

    it('password_required without a password once the device has a device password', async () => {
      const d = await createDevice({ password: 'device-pw' });
      const ctx = app.mockContext();
      const device = await ctx.service.autoAuth.deviceByNamespace(d.uuid);
      assert.deepStrictEqual(await ctx.service.autoAuth.match(device, null), { failure: 'password_required' });
    });
  });

  describe('deviceByNamespace()', () => {
    it('throws the 404 of an unknown namespace', async () => {
      const ctx = app.mockContext();
      await assert.rejects(ctx.service.autoAuth.deviceByNamespace('nobody'), { status: 404, message: '设备不存在或 namespace 不正确' });
    });
  });
});
