import assert from 'node:assert';
import crypto from 'node:crypto';
import { app, mm } from 'egg-mock/bootstrap';
import { createDevice, deviceWithToken, installApp, overrideRateLimits, restoreRateLimits } from '../../support/factories';
import { assertTooMany } from '../../support/assertions';
import { tokenQuotaId } from '../../../app/lib/kvToken';

const randomToken = () => crypto.randomBytes(32).toString('hex');

/** Counts the database queries on app_installs (token lookups) while `fn` runs. */
async function countingLookups<T>(fn: (lookups: () => number) => Promise<T>): Promise<T> {
  let n = 0;
  app.model.addHook('afterQuery', 'rateLimitLookups', (_options, query) => {
    if (((query as unknown as { sql?: string }).sql ?? '').includes('app_installs')) n += 1;
  });
  try {
    return await fn(() => n);
  } finally {
    app.model.removeHook('afterQuery', 'rateLimitLookups');
  }
}

describe('test/app/middleware/rateLimit.test.ts', () => {
  afterEach(() => restoreRateLimits());

  describe('per IP on /devices, /apps and /auth (RATE_LIMIT_IP)', () => {
    it('200 with RateLimit headers while under the limit, then 429 JSON with RateLimit-Policy, RateLimit, Retry-After', async () => {
      overrideRateLimits({ ip: 3 });
      for (let i = 1; i <= 3; i++) {
        const res = await app.httpRequest().get('/devices/online').expect(200);
        assert.strictEqual(res.headers['ratelimit-policy'], '3;w=60');
        assert.match(res.headers.ratelimit, new RegExp(`^limit=3, remaining=${3 - i}, reset=\\d+$`));
      }
      assertTooMany(await app.httpRequest().get('/devices/online'), 3, 'requests');
      // Still limited: every further request is refused within the window.
      assertTooMany(await app.httpRequest().post('/devices').send({ uuid: 'late', deviceName: 'n' }), 3, 'requests');
      overrideRateLimits({ ip: 0 });
      await app.httpRequest().get('/devices/late').expect(404);
    });

    it('/devices, /apps and /auth share one bucket; error answers count too', async () => {
      overrideRateLimits({ ip: 3 });
      await app.httpRequest().post('/auth/device/code').expect(200);
      await app.httpRequest().get('/apps/tokens').expect(400);
      await app.httpRequest().get('/devices/nobody').expect(404);
      assertTooMany(await app.httpRequest().get('/auth/device/status').query({ device_code: 'x' }), 3, 'requests');
      assertTooMany(await app.httpRequest().get('/apps/tokens').query({ uuid: 'x' }), 3, 'requests');
    });

    it('/check, / and Socket.IO transport paths are not counted', async () => {
      overrideRateLimits({ ip: 1 });
      for (let i = 0; i < 5; i++) {
        const check = await app.httpRequest().get('/check').expect(200);
        assert.strictEqual(check.headers.ratelimit, undefined);
        await app.httpRequest().get('/').expect(200);
        await app.httpRequest().get('/socket.io/').query({ EIO: '4', transport: 'polling' });
      }
      await app.httpRequest().get('/devices/online').expect(200);
      assertTooMany(await app.httpRequest().get('/devices/online'), 1, 'requests');
    });

    it('/kv requests do not use the per-IP quota', async () => {
      const { token } = await deviceWithToken();
      overrideRateLimits({ ip: 1 });
      for (let i = 0; i < 3; i++) await app.httpRequest().get('/kv/_info').set('x-app-token', token).expect(200);
      // deviceWithToken used 2 requests of the IP quota before the limit was lowered.
      assertTooMany(await app.httpRequest().get('/devices/online'), 1, 'requests');
    });

    it('CORS preflights are not counted, and a 429 still carries CORS headers', async () => {
      overrideRateLimits({ ip: 1 });
      for (let i = 0; i < 3; i++) {
        await app.httpRequest().options('/devices').set('Origin', 'http://example.com')
          .set('Access-Control-Request-Method', 'POST').expect(204);
      }
      await app.httpRequest().get('/devices/online').expect(200);
      const res = await app.httpRequest().get('/devices/online').set('Origin', 'http://example.com');
      assertTooMany(res, 1, 'requests');
      assert.strictEqual(res.headers['access-control-allow-origin'], '*');
      assert.match(res.headers['access-control-expose-headers'], /Retry-After/);
    });

    it('0 disables the limit (no RateLimit headers)', async () => {
      overrideRateLimits({ ip: 0 });
      for (let i = 0; i < 5; i++) {
        const res = await app.httpRequest().get('/devices/online').expect(200);
        assert.strictEqual(res.headers.ratelimit, undefined);
        assert.strictEqual(res.headers['ratelimit-policy'], undefined);
      }
    });
  });

  describe('per KV token: reads, writes, deletes and batch imports (RATE_LIMIT_KV_*)', () => {
    it('reads are limited on their own (GET /kv, /kv/_info, /kv/_keys, /kv/:key)', async () => {
      const { token } = await deviceWithToken();
      overrideRateLimits({ kvRead: 3 });
      await app.httpRequest().get('/kv/_info').set('x-app-token', token).expect(200);
      await app.httpRequest().get('/kv/_keys').set('x-app-token', token).expect(200);
      await app.httpRequest().get('/kv/missing').set('x-app-token', token).expect(404);
      assertTooMany(await app.httpRequest().get('/kv').set('x-app-token', token), 3, 'requests');
      // Other buckets are untouched.
      await app.httpRequest().post('/kv/k').set('x-app-token', token).send({ a: 1 }).expect(200);
      await app.httpRequest().delete('/kv/k').set('x-app-token', token).expect(204);
      await app.httpRequest().post('/kv/_batchimport').set('x-app-token', token).send({ b: {} }).expect(200);
    });

    it('writes are limited on their own; a refused write stores nothing', async () => {
      const { token } = await deviceWithToken();
      overrideRateLimits({ kvWrite: 2 });
      await app.httpRequest().post('/kv/k').set('x-app-token', token).send({ v: 1 }).expect(200);
      await app.httpRequest().post('/kv/k').set('x-app-token', token).send({ v: 2 }).expect(200);
      assertTooMany(await app.httpRequest().post('/kv/k').set('x-app-token', token).send({ v: 3 }), 2, 'requests');
      const read = await app.httpRequest().get('/kv/k').set('x-app-token', token).expect(200);
      assert.deepStrictEqual(read.body, { v: 2 });
      await app.httpRequest().post('/kv/_batchimport').set('x-app-token', token).send({ b: {} }).expect(200);
      await app.httpRequest().delete('/kv/k').set('x-app-token', token).expect(204);
    });

    it('deletes are limited on their own; a refused delete deletes nothing', async () => {
      const { token } = await deviceWithToken();
      await app.httpRequest().post('/kv/a').set('x-app-token', token).send({}).expect(200);
      await app.httpRequest().post('/kv/b').set('x-app-token', token).send({}).expect(200);
      overrideRateLimits({ kvDelete: 1 });
      await app.httpRequest().delete('/kv/a').set('x-app-token', token).expect(204);
      assertTooMany(await app.httpRequest().delete('/kv/b').set('x-app-token', token), 1, 'requests');
      await app.httpRequest().get('/kv/b').set('x-app-token', token).expect(200);
      await app.httpRequest().post('/kv/c').set('x-app-token', token).send({}).expect(200);
    });

    it('batch imports are limited on their own', async () => {
      const { token } = await deviceWithToken();
      overrideRateLimits({ kvBatch: 1 });
      await app.httpRequest().post('/kv/_batchimport').set('x-app-token', token).send({ a: {} }).expect(200);
      assertTooMany(await app.httpRequest().post('/kv/_batchimport').set('x-app-token', token).send({ b: {} }), 1, 'requests');
      await app.httpRequest().get('/kv/b').set('x-app-token', token).expect(404);
      await app.httpRequest().post('/kv/c').set('x-app-token', token).send({}).expect(200);
    });

    it('each token has its own buckets, also two tokens of one device; wherever the token is sent', async () => {
      const { device, token } = await deviceWithToken();
      const other = await installApp(device);
      overrideRateLimits({ kvRead: 2 });
      await app.httpRequest().get('/kv/_info').set('x-app-token', token).expect(200);
      await app.httpRequest().get('/kv/_info').set('Authorization', `Bearer ${token}`).expect(200);
      assertTooMany(await app.httpRequest().get('/kv/_info').query({ token }), 2, 'requests');
      await app.httpRequest().get('/kv/_info').set('x-app-token', other.token).expect(200);
    });

    it('a token inside a JSON body sent as text or form (curl -d) counts against its write quota', async () => {
      const { token } = await deviceWithToken();
      overrideRateLimits({ kvWrite: 2 });
      await app.httpRequest().post('/kv/k').type('text/plain').send(JSON.stringify({ token, v: 1 })).expect(200);
      await app.httpRequest().post('/kv/k').type('form').send(JSON.stringify({ apptoken: token, v: 2 })).expect(200);
      assertTooMany(await app.httpRequest().post('/kv/k').type('text/plain').send(JSON.stringify({ token, v: 3 })), 2, 'requests');
      assertTooMany(await app.httpRequest().post('/kv/k').set('x-app-token', token).send({ v: 4 }), 2, 'requests');
      const read = await app.httpRequest().get('/kv/k').set('x-app-token', token).expect(200);
      assert.deepStrictEqual(read.body, { v: 2 });
    });

    it('requests without a token are answered 401 and not counted', async () => {
      const { token } = await deviceWithToken();
      overrideRateLimits({ kvRead: 1 });
      for (let i = 0; i < 3; i++) await app.httpRequest().get('/kv/_info').expect(401);
      await app.httpRequest().get('/kv/_info').set('x-app-token', token).expect(200);
    });

    it('0 disables a KV limit', async () => {
      const { token } = await deviceWithToken();
      overrideRateLimits({ kvRead: 0, kvWrite: 0 });
      for (let i = 0; i < 5; i++) {
        const res = await app.httpRequest().get('/kv/_info').set('x-app-token', token).expect(200);
        assert.strictEqual(res.headers.ratelimit, undefined);
        await app.httpRequest().post('/kv/k').set('x-app-token', token).send({ i }).expect(200);
      }
    });
  });

  describe('failed token lookups per client IP (RATE_LIMIT_TOKEN_FAILURES)', () => {
    it('401 for unknown tokens until the limit, then 429 RATE_LIMITED before any lookup; no quota counter per random token; a valid token works from another address', async () => {
      const { token } = await deviceWithToken();
      overrideRateLimits({ tokenFailures: 3 });
      mm(app.config, 'proxy', true); // TRUST_PROXY: the client address is the X-Forwarded-For hop
      const sprayer = '203.0.113.7';
      const sprayed: string[] = [];
      await countingLookups(async lookups => {
        for (let i = 0; i < 3; i++) {
          const t = randomToken();
          sprayed.push(t);
          const res = await app.httpRequest().get('/kv/_info').set('x-app-token', t).set('X-Forwarded-For', sprayer).expect(401);
          assert.deepStrictEqual(res.body, { success: false, message: '无效的token', details: null });
        }
        assert.strictEqual(lookups(), 3);
        // Past the limit: every route, every way of sending the token, without a query.
        for (const req of [
          () => app.httpRequest().get('/kv/_info').set('x-app-token', randomToken()),
          () => app.httpRequest().get('/kv').query({ token: randomToken() }),
          () => app.httpRequest().post('/kv/k').set('Authorization', `Bearer ${randomToken()}`).send({ v: 1 }),
          () => app.httpRequest().post('/kv/k').type('text/plain').send(JSON.stringify({ token: randomToken(), v: 1 })),
          () => app.httpRequest().delete('/kv/k').set('x-app-token', randomToken()),
          () => app.httpRequest().post('/kv/_batchimport').set('x-app-token', randomToken()).send({ a: 1 }),
        ]) {
          assertTooMany(await req().set('X-Forwarded-For', sprayer), 3, 'requests');
        }
        assert.strictEqual(lookups(), 3);
        // A valid token, not cached, works from another address (one lookup)...
        app.tokenCache.clear();
        await app.httpRequest().get('/kv/_info').set('x-app-token', token).set('X-Forwarded-For', '198.51.100.1').expect(200);
        assert.strictEqual(lookups(), 4);
        // ...and, cached now, from the sprayer's address too (no lookup).
        await app.httpRequest().get('/kv/_info').set('x-app-token', token).set('X-Forwarded-For', sprayer).expect(200);
        assert.strictEqual(lookups(), 4);
      });
      // The unknown tokens got no quota counter of their own.
      for (const t of sprayed) assert.strictEqual((await app.sharedState.ratePeek('kvRead', tokenQuotaId(t))).count, 0);
      assert.strictEqual((await app.sharedState.ratePeek('kvRead', tokenQuotaId(token))).count, 2);
    });

    it('RATE_LIMIT_TOKEN_FAILURES=0 disables it (401 every time)', async () => {
      overrideRateLimits({ tokenFailures: 0 });
      for (let i = 0; i < 5; i++) await app.httpRequest().get('/kv/_info').set('x-app-token', randomToken()).expect(401);
    });
  });

  describe('one token lookup per request', () => {
    it('a token the worker cannot cache is read once per request: the rate limiter and kvAuth share the answer', async () => {
      const { token } = await deviceWithToken();
      mm(app.tokenCache, 'set', () => undefined); // as with TOKEN_CACHE_TTL_MS=0: every request reads the database
      await countingLookups(async lookups => {
        await app.httpRequest().get('/kv/_info').set('x-app-token', token).expect(200);
        assert.strictEqual(lookups(), 1);
        await app.httpRequest().post('/kv/k').set('x-app-token', token).send({ v: 1 }).expect(200);
        assert.strictEqual(lookups(), 2);
      });
    });

    it('a token revoked between the rate limiter and kvAuth is refused (the limiter\'s answer is not reused after a revocation was heard)', async () => {
      const { device, token, install } = await deviceWithToken();
      // The uninstall lands while the limiter counts the request (its quota hit), after its lookup.
      const hit = app.sharedState.rateHit.bind(app.sharedState);
      let revoked = false;
      mm(app.sharedState, 'rateHit', async (bucket: string, id: string, windowMs: number) => {
        if (!revoked && bucket === 'kvRead') {
          revoked = true;
          await app.httpRequest().delete(`/apps/devices/${encodeURIComponent(device.uuid)}/uninstall/${encodeURIComponent(install.id)}`).expect(204);
        }
        return hit(bucket, id, windowMs);
      });
      overrideRateLimits({ kvRead: 100 });
      const res = await app.httpRequest().get('/kv/_info').set('x-app-token', token).expect(401);
      assert.deepStrictEqual(res.body, { success: false, message: '无效的token', details: null });
    });
  });

  describe('negative token cache (TOKEN_NEGATIVE_CACHE_MS)', () => {
    it('an unknown token is looked up once while remembered, and a retry does not count as another failure', async () => {
      overrideRateLimits({ tokenFailures: 2 });
      const t = randomToken();
      await countingLookups(async lookups => {
        for (let i = 0; i < 5; i++) await app.httpRequest().get('/kv/_info').set('x-app-token', t).expect(401);
        assert.strictEqual(lookups(), 1);
      });
      assert.strictEqual((await app.sharedState.ratePeek('tokenfail', '127.0.0.1')).count, 1);
    });

    it('a token installed after it was looked up (and remembered as unknown) works at once', async () => {
      const t = randomToken();
      await app.httpRequest().get('/kv/_info').set('x-app-token', t).expect(401);
      assert.strictEqual(app.tokenCache.isUnknown(t), true);
      const device = await createDevice();
      // The module object itself (an `import * as` namespace is a copy): AppInstallService reads newToken from it.
      mm(require('../../../app/lib/password'), 'newToken', () => t);
      const install = await installApp(device);
      assert.strictEqual(install.token, t);
      assert.strictEqual(app.tokenCache.isUnknown(t), false);
      await app.httpRequest().post('/kv/k').set('x-app-token', t).send({ v: 1 }).expect(200);
    });
  });
});
