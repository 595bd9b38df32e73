import assert from 'node:assert';
import type { Context } from 'egg';
import { app } from 'egg-mock/bootstrap';
import { HttpError } from '../../../app/lib/errors';
import { failOpen, failureThrottle, tooManyAttempts } from '../../../app/lib/throttle';
import { createDevice, overrideRateLimits, restoreRateLimits } from '../../support/factories';

/** A context whose shared state is unreachable (every call rejects as ioredis does when Redis is down). */
function unreachableCtx(warnings: unknown[][]) {
  const down = () => Promise.reject(new Error('Connection is closed.'));
  return {
    app: { settings: { rateLimit: { password: 1, passwordTarget: 1, windowMs: 60000 } }, sharedState: { ratePeek: down, rateHit: down } },
    logger: { warn: (...args: unknown[]) => warnings.push(args) },
  } as unknown as Context;
}

describe('test/app/lib/throttle.test.ts', () => {
  afterEach(() => restoreRateLimits());

  describe('failureThrottle()', () => {
    it('lets attempts through until the limit of failures, then check() throws the 429 with its headers', async () => {
      overrideRateLimits({ password: 2 });
      const ctx = app.mockContext();
      const throttle = failureThrottle(ctx, 'test', 'ip', 'thing');
      await throttle.check();
      await throttle.fail();
      await throttle.check();
      await throttle.fail();
      const err = await throttle.check().then(() => undefined, (e: unknown) => e);
      assert.ok(err instanceof HttpError);
      assert.strictEqual(err.status, 429);
      assert.strictEqual(err.message, '密码尝试次数过多，请稍后再试');
      assert.strictEqual(err.code, 'TOO_MANY_ATTEMPTS');
      const retryAfter = Number(err.headers?.['Retry-After']);
      assert.ok(retryAfter >= 1 && retryAfter <= 60);
      assert.deepStrictEqual(err.details, { limit: 2, windowSeconds: 60, retryAfter });
      // Other ids and buckets are counted apart.
      await failureThrottle(ctx, 'test', 'ip', 'other').check();
      await failureThrottle(ctx, 'other', 'ip', 'thing').check();
    });

    it('does nothing when RATE_LIMIT_PASSWORD is 0', async () => {
      overrideRateLimits({ password: 0, passwordTarget: 0 });
      const throttle = failureThrottle(app.mockContext(), 'test', 'ip', 'off');
      for (let i = 0; i < 5; i++) await throttle.fail();
      await throttle.check();
    });

    it('fails open: with shared state unreachable, check() and fail() pass and a warning is logged', async () => {
      const warnings: unknown[][] = [];
      const throttle = failureThrottle(unreachableCtx(warnings), 'pwfail', 'ip', 'x');
      await throttle.check();
      await throttle.fail();
      await throttle.check();
      assert.strictEqual(warnings.length, 6); // both bounds, each call
      assert.deepStrictEqual(warnings[0], [ '[%s] shared state unavailable, not throttling: %s', 'throttle:pwfail', 'Connection is closed.' ]);
    });
  });

  describe('per target, from every IP together (issue 10, item 9)', () => {
    let proxy: boolean;
    beforeEach(() => {
      proxy = app.config.proxy;
      app.config.proxy = true;
    });
    afterEach(() => {
      app.config.proxy = proxy;
    });

    const rename = (uuid: string, ip: string, password: string) => app.httpRequest().put(`/devices/${encodeURIComponent(uuid)}/name`)
      .set('x-forwarded-for', ip).set('x-device-password', password).send({ name: 'n' });
    const login = (namespace: string, ip: string, password: string) => app.httpRequest().post('/apps/auth/token')
      .set('x-forwarded-for', ip).send({ namespace, password, appId: 'cw' });

    it('429 for every address, the right password included, once RATE_LIMIT_PASSWORD_TARGET failures on one device came from many addresses; other devices are unaffected', async () => {
      overrideRateLimits({ password: 3, passwordTarget: 5 });
      const d = await createDevice({ password: 'right' });
      const other = await createDevice({ password: 'right' });
      // Five addresses, one failure each: under the per-IP limit everywhere.
      for (let i = 1; i <= 5; i++) await rename(d.uuid, `198.51.100.${i}`, 'wrong').expect(401);
      const res = await rename(d.uuid, '198.51.100.99', 'right').expect(429);
      assert.strictEqual(res.body.code, 'TOO_MANY_ATTEMPTS');
      assert.deepStrictEqual(res.body.details, { limit: 5, windowSeconds: 60, retryAfter: Number(res.headers['retry-after']) });
      await rename(d.uuid, '198.51.100.1', 'right').expect(429);
      await rename(other.uuid, '198.51.100.1', 'right').expect(200);
    });

    it('429 for namespace logins once RATE_LIMIT_PASSWORD_TARGET failures on one namespace came from many addresses', async () => {
      overrideRateLimits({ password: 3, passwordTarget: 4 });
      const d = await createDevice();
      await app.httpRequest().post(`/auto-auth/devices/${encodeURIComponent(d.uuid)}/auth-configs`).send({ password: 'class-pw' }).expect(201);
      for (let i = 1; i <= 4; i++) await login(d.uuid, `203.0.113.${i}`, 'wrong').expect(401);
      await login(d.uuid, '203.0.113.50', 'class-pw').expect(429);
    });

    it('0 disables the per-target bound (the per-IP bound still holds)', async () => {
      overrideRateLimits({ password: 3, passwordTarget: 0 });
      const d = await createDevice({ password: 'right' });
      for (let i = 1; i <= 8; i++) await rename(d.uuid, `198.51.100.${i}`, 'wrong').expect(401);
      await rename(d.uuid, '198.51.100.99', 'right').expect(200);
    });
  });

  describe('failOpen()', () => {
    it('answers the operation\'s result, or undefined when it fails', async () => {
      const warnings: unknown[][] = [];
      const ctx = unreachableCtx(warnings);
      assert.strictEqual(await failOpen(ctx, 'l', async () => 7), 7);
      assert.strictEqual(await failOpen(ctx, 'l', () => Promise.reject(new Error('down'))), undefined);
      assert.strictEqual(warnings.length, 1);
    });
  });

  describe('tooManyAttempts()', () => {
    it('is the contract\'s 429: RateLimit-Policy, RateLimit and Retry-After (at least 1 s)', () => {
      const e = tooManyAttempts(10, 60000, 200);
      assert.deepStrictEqual(e.headers, { 'RateLimit-Policy': '10;w=60', RateLimit: 'limit=10, remaining=0, reset=1', 'Retry-After': '1' });
      assert.deepStrictEqual(e.details, { limit: 10, windowSeconds: 60, retryAfter: 1 });
    });

    it('for failed token lookups it is the rate limits\' 429 (RATE_LIMITED), counted against RATE_LIMIT_TOKEN_FAILURES', async () => {
      const e = tooManyAttempts(30, 60000, 5000, 'token');
      assert.deepStrictEqual([ e.status, e.message, e.code ], [ 429, '请求过于频繁，请稍后再试', 'RATE_LIMITED' ]);
      overrideRateLimits({ tokenFailures: 1, password: 5 });
      const throttle = failureThrottle(app.mockContext(), 'test', 'ip', undefined, 'token');
      await throttle.check();
      await throttle.fail();
      const err = await throttle.check().then(() => undefined, (x: unknown) => x);
      assert.ok(err instanceof HttpError);
      assert.deepStrictEqual([ err.code, (err.details as { limit: number }).limit ], [ 'RATE_LIMITED', 1 ]);
    });
  });
});
