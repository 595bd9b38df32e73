import assert from 'node:assert';
import { app } from 'egg-mock/bootstrap';
import { deviceWithToken } from '../../support/factories';

/** ctx.clientIp, observed through the creatorIp a write records. */
describe('test/app/extend/context.test.ts', () => {
  let original: boolean;
  before(() => {
    original = app.config.proxy;
  });
  afterEach(() => {
    app.config.proxy = original;
  });

  async function creatorIpOf(headers: Record<string, string>) {
    const { token } = await deviceWithToken();
    await app.httpRequest().post('/kv/ip').set('x-app-token', token).set(headers)
      .send({ a: 1 })
      .expect(200);
    const res = await app.httpRequest().get('/kv/ip/metadata').set('x-app-token', token).expect(200);
    return res.body.metadata.creatorIp;
  }

  describe('clientIp', () => {
    it('is the TCP peer and ignores X-Forwarded-For when TRUST_PROXY is off', async () => {
      app.config.proxy = false;
      assert.strictEqual(await creatorIpOf({ 'x-forwarded-for': '203.0.113.9' }), '127.0.0.1');
    });

    it('is the last X-Forwarded-For hop (the one the proxy appended) when TRUST_PROXY is on', async () => {
      app.config.proxy = true;
      assert.strictEqual(await creatorIpOf({ 'x-forwarded-for': '198.51.100.7, 203.0.113.9' }), '203.0.113.9');
    });

    it('cannot be spoofed by a client-sent X-Forwarded-For behind the proxy', async () => {
      app.config.proxy = true;
      // nginx appends the real peer (203.0.113.9) to whatever the client claimed.
      assert.strictEqual(await creatorIpOf({ 'x-forwarded-for': '10.9.9.9, 1.1.1.1, 203.0.113.9' }), '203.0.113.9');
    });

    it('ignores a forwarded hop that is not a valid IP (garbage, a port, 300 characters, a huge zone id) and uses the TCP peer; the write is stored', async () => {
      app.config.proxy = true;
      for (const hop of [ 'x'.repeat(300), 'unknown', '203.0.113.9:8080', '1.2.3', `fe80::1%${'e'.repeat(300)}`, '<script>' ]) {
        assert.strictEqual(await creatorIpOf({ 'x-forwarded-for': `198.51.100.7, ${hop}` }), '127.0.0.1', hop.slice(0, 40));
      }
    });

    it('accepts an IPv6 forwarded hop', async () => {
      app.config.proxy = true;
      assert.strictEqual(await creatorIpOf({ 'x-forwarded-for': '2001:db8::7' }), '2001:db8::7');
    });
  });
});
