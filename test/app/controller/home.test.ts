import assert from 'node:assert';
import { app } from 'egg-mock/bootstrap';
import { createDevice, deviceWithToken } from '../../support/factories';

const ALLOWED_HEADERS = [ 'x-app-token', 'x-device-uuid', 'x-device-password', 'x-site-key', 'authorization', 'content-type' ];

describe('test/app/controller/home.test.ts', () => {
  describe('[GET /check] check()', () => {
    it('200 with status, message and an epoch-millisecond time', async () => {
      const before = Date.now();
      const res = await app.httpRequest().get('/check').expect(200).expect('Content-Type', /application\/json/);
      assert.deepStrictEqual(Object.keys(res.body).sort(), [ 'message', 'status', 'time' ]);
      assert.strictEqual(res.body.status, 'success');
      assert.strictEqual(res.body.message, 'API is running');
      assert.ok(Number.isInteger(res.body.time) && res.body.time >= before && res.body.time <= Date.now());
    });
  });

  describe('[GET /] index()', () => {
    it('200 with an HTML page titled Classworks 服务端', async () => {
      const res = await app.httpRequest().get('/').expect(200).expect('Content-Type', /text\/html/);
      assert.match(res.text, /<title>Classworks 服务端<\/title>/);
    });
  });

  describe('unknown routes', () => {
    it('404 找不到路径 for an unknown path', async () => {
      const res = await app.httpRequest().get('/nope/here').expect(404);
      assert.deepStrictEqual(res.body, { success: false, message: '找不到路径: /nope/here', details: null });
    });

    it('404 for a known path with an unknown method', async () => {
      const res = await app.httpRequest().patch('/check').expect(404);
      assert.deepStrictEqual(res.body, { success: false, message: '找不到路径: /check', details: null });
    });
  });

  describe('CORS', () => {
    const routes: Array<[string, string]> = [
      [ 'POST', '/kv/some-key' ],
      [ 'GET', '/kv/_info' ],
      [ 'DELETE', '/kv/a%2Fb' ],
      [ 'POST', '/kv/_batchimport' ],
      [ 'POST', '/devices' ],
      [ 'PUT', '/devices/any/password' ],
      [ 'DELETE', '/apps/devices/any/uninstall/id' ],
      [ 'GET', '/apps/tokens' ],
      [ 'POST', '/auth/device/bind' ],
      [ 'GET', '/check' ],
      [ 'GET', '/no/such/route' ],
    ];
    for (const [ method, path ] of routes) {
      it(`204 preflight for ${method} ${path} allowing the contract's headers`, async () => {
        const res = await app.httpRequest().options(path)
          .set('Origin', 'https://classworks.example')
          .set('Access-Control-Request-Method', method)
          .set('Access-Control-Request-Headers', ALLOWED_HEADERS.join(','))
          .expect(204);
        assert.strictEqual(res.headers['access-control-allow-origin'], '*');
        const methods = res.headers['access-control-allow-methods'].split(',').map((m: string) => m.trim());
        assert.ok(methods.includes(method), res.headers['access-control-allow-methods']);
        const headers = res.headers['access-control-allow-headers'].split(',').map((h: string) => h.trim().toLowerCase());
        for (const h of ALLOWED_HEADERS) assert.ok(headers.includes(h), `${h} not in ${res.headers['access-control-allow-headers']}`);
      });
    }

    it('answers a cross-origin GET with Access-Control-Allow-Origin, success or error', async () => {
      let res = await app.httpRequest().get('/check').set('Origin', 'https://classworks.example').expect(200);
      assert.strictEqual(res.headers['access-control-allow-origin'], '*');
      res = await app.httpRequest().get('/devices/nobody').set('Origin', 'https://classworks.example').expect(404);
      assert.strictEqual(res.headers['access-control-allow-origin'], '*');
      res = await app.httpRequest().get('/kv/_info').set('Origin', 'https://classworks.example').expect(401);
      assert.strictEqual(res.headers['access-control-allow-origin'], '*');
    });

    it('exposes RateLimit-Policy, RateLimit and Retry-After to browsers', async () => {
      const res = await app.httpRequest().get('/check').set('Origin', 'https://classworks.example').expect(200);
      const exposed = res.headers['access-control-expose-headers'].split(',').map((h: string) => h.trim().toLowerCase());
      for (const h of [ 'ratelimit-policy', 'ratelimit', 'retry-after' ]) assert.ok(exposed.includes(h), h);
    });
  });

  describe('x-site-key, cookies and CSRF', () => {
    it('accepts and ignores x-site-key on device, app and KV routes', async () => {
      const res = await app.httpRequest().post('/devices').set('x-site-key', 'anything').send({ uuid: 'site-key', deviceName: 'n' }).expect(201);
      assert.strictEqual(res.body.device.uuid, 'site-key');
      await app.httpRequest().post('/apps/devices/site-key/install/a').set('x-site-key', 'other').expect(201);
      const { token } = await deviceWithToken();
      await app.httpRequest().post('/kv/k').set('x-site-key', 'x').set('x-app-token', token).send({ a: 1 }).expect(200);
      const read = await app.httpRequest().get('/kv/k').set('x-site-key', 'x').set('x-app-token', token).expect(200);
      assert.deepStrictEqual(read.body, { a: 1 });
    });

    it('sets no cookie on any answer', async () => {
      const d = await createDevice();
      for (const res of [
        await app.httpRequest().get('/check'),
        await app.httpRequest().get('/'),
        await app.httpRequest().post('/devices').send({ uuid: 'cookie-less', deviceName: 'n' }),
        await app.httpRequest().put(`/devices/${d.uuid}/name`).send({ name: 'x' }),
        await app.httpRequest().get('/nope'),
      ]) {
        assert.strictEqual(res.headers['set-cookie'], undefined, `${res.status} ${res.text}`);
      }
    });

    it('never rejects POST, PUT or DELETE for CSRF (cross-site origin, cookies, form bodies)', async () => {
      const evil = (req: any) => req.set('Origin', 'https://evil.example').set('Referer', 'https://evil.example/')
        .set('Cookie', 'csrfToken=abc; ctoken=def');
      await evil(app.httpRequest().post('/devices')).type('form').send('uuid=csrf-dev&deviceName=Form').expect(201);
      await evil(app.httpRequest().put('/devices/csrf-dev/name')).send({ name: 'json' }).expect(200);
      await evil(app.httpRequest().post('/devices/csrf-dev/password')).type('form').send('newPassword=pw').expect(200);
      await evil(app.httpRequest().delete('/devices/csrf-dev/password')).set('x-device-password', 'pw').expect(200);
      const { token } = await deviceWithToken();
      await evil(app.httpRequest().post('/kv/k')).set('x-app-token', token).send({ v: 1 }).expect(200);
      await evil(app.httpRequest().delete('/kv/k')).set('x-app-token', token).expect(204);
    });
  });
});
