import assert from 'node:assert';
import { app } from 'egg-mock/bootstrap';
import { deviceWithToken, installApp, overrideRateLimits, restoreRateLimits } from '../../support/factories';
import { assertTooMany } from '../../support/assertions';

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
});
