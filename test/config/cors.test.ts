import assert from 'node:assert';
import mm, { MockApplication } from 'egg-mock';

/**
 * FRONTEND_URL with explicit origins, on an app instance of its own (the origins
 * are read when the configuration loads): allowed origins are echoed, others get
 * no CORS headers, for HTTP and for the Socket.IO handshake alike.
 */
describe('test/config/cors.test.ts', () => {
  let app: MockApplication;
  const saved = process.env.FRONTEND_URL;

  before(async () => {
    process.env.FRONTEND_URL = 'https://a.example, https://b.example';
    app = mm.app({ cache: false });
    await app.ready();
  });

  after(async () => {
    if (saved === undefined) delete process.env.FRONTEND_URL;
    else process.env.FRONTEND_URL = saved;
    await app.close();
  });

  describe('HTTP', () => {
    it('204 preflight echoing an allowed origin with the contract headers', async () => {
      const res = await app.httpRequest().options('/kv/some-key')
        .set('Origin', 'https://b.example')
        .set('Access-Control-Request-Method', 'POST')
        .set('Access-Control-Request-Headers', 'x-app-token, content-type')
        .expect(204);
      assert.strictEqual(res.headers['access-control-allow-origin'], 'https://b.example');
      for (const h of [ 'x-app-token', 'x-device-uuid', 'x-device-password', 'x-site-key', 'authorization', 'content-type' ]) {
        assert.match(res.headers['access-control-allow-headers'], new RegExp(`(^|,)${h}(,|$)`));
      }
    });

    it('gives an origin that is not listed no Access-Control-Allow-Origin', async () => {
      const res = await app.httpRequest().get('/check').set('Origin', 'https://evil.example').expect(200);
      assert.strictEqual(res.headers['access-control-allow-origin'], undefined);
    });
  });

  describe('Socket.IO', () => {
    it('echoes an allowed origin on the polling handshake and omits others', async () => {
      const ok = await app.httpRequest().get('/socket.io/?EIO=4&transport=polling').set('Origin', 'https://a.example').expect(200);
      assert.strictEqual(ok.headers['access-control-allow-origin'], 'https://a.example');
      const other = await app.httpRequest().get('/socket.io/?EIO=4&transport=polling').set('Origin', 'https://evil.example');
      assert.strictEqual(other.headers['access-control-allow-origin'], undefined);
    });
  });
});
