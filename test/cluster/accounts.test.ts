/**
 * Accounts (§8) on a real 2-worker cluster: a sign-in begun on one worker is finished on the
 * other (state + PKCE verifier in Redis), once; logout-all and logout answered by one worker are
 * refused at once by the other; a refresh token used on one worker is refused on the other.
 *
 * Needs `npm run build` first (npm run test:cluster does it).
 */
import assert from 'node:assert';
import { browse, startOidcProvider, type OidcProvider } from '../support/oauth';
import { ADDR_W0, ADDR_W1, Cluster, closeRedis, freePort, request, resetRateLimits, startCluster, truncateTables } from './support';

const FRONTEND = 'http://frontend.test/login';

describe('test/cluster/accounts.test.ts', function() {
  let cluster: Cluster;
  let oidc: OidcProvider;
  let port: number;

  before(async () => {
    // The callback URL must be known to the provider before the cluster starts: fix the port first.
    port = await freePort();
    oidc = await startOidcProvider(`http://127.0.0.1:${port}/accounts/oauth/local/callback`);
    cluster = await startCluster({
      workers: 2,
      port,
      env: {
        BASE_URL: `http://127.0.0.1:${port}`,
        OAUTH_REDIRECT_URL: FRONTEND,
        OAUTH_LOCAL_ISSUER: oidc.issuer,
        OAUTH_LOCAL_CLIENT_ID: oidc.clientId,
        OAUTH_LOCAL_CLIENT_SECRET: oidc.clientSecret,
      },
    });
  });

  beforeEach(async () => {
    await truncateTables();
    await resetRateLimits(cluster.prefix);
  });

  afterEach(function() {
    if (this.currentTest?.state === 'failed' && cluster) {
      console.error(`--- cluster output (tail) ---\n${cluster.output().slice(-6000)}`);
    }
  });

  after(async () => {
    await cluster?.stop();
    await closeRedis();
    await oidc?.close();
  });

  /** Begins on `begin`, signs in at the provider, lands the callback on `finish`: the front-end URL. */
  async function signIn(login: string, begin: string, finish: string): Promise<{ target: URL; callback: string }> {
    const start = await request(cluster.url, 'GET', '/accounts/oauth/local', { localAddress: begin });
    assert.strictEqual(start.status, 302, start.text);
    const { url } = await browse(start.headers.location as string, `${cluster.url}/accounts/oauth/local/callback`, login);
    const callback = url.pathname + url.search;
    const done = await request(cluster.url, 'GET', callback, { localAddress: finish });
    assert.strictEqual(done.status, 302, done.text);
    return { target: new URL(done.headers.location as string), callback };
  }

  const get = (path: string, token: string, localAddress: string) =>
    request(cluster.url, 'GET', path, { headers: { authorization: `Bearer ${token}` }, localAddress });
  const post = (path: string, token: string, localAddress: string, body: unknown = {}) =>
    request(cluster.url, 'POST', path, { headers: { authorization: `Bearer ${token}` }, localAddress, body });

  it('a sign-in begun on worker 0 is finished on worker 1; its callback replayed on worker 0 is refused', async () => {
    const { target, callback } = await signIn('alice', ADDR_W0, ADDR_W1);
    assert.strictEqual(target.searchParams.get('success'), 'true', target.toString());
    const access = target.searchParams.get('access_token') as string;
    for (const addr of [ ADDR_W0, ADDR_W1 ]) {
      const profile = await get('/accounts/profile', access, addr);
      assert.strictEqual(profile.status, 200, profile.text);
      assert.strictEqual(profile.body.data.name, 'User alice');
    }
    const replay = await request(cluster.url, 'GET', callback, { localAddress: ADDR_W0 });
    assert.strictEqual(replay.headers.location, `${FRONTEND}?error=invalid_state&provider=local&success=false`);
  });

  it('logout-all on worker 0: the account\'s tokens are refused by worker 1 at once; logout on worker 1 is refused by worker 0', async () => {
    const first = (await signIn('bob', ADDR_W0, ADDR_W0)).target.searchParams;
    const second = (await signIn('bob', ADDR_W1, ADDR_W1)).target.searchParams;
    const a1 = first.get('access_token') as string;
    const a2 = second.get('access_token') as string;
    assert.strictEqual((await get('/accounts/token-info', a1, ADDR_W1)).status, 200);
    assert.strictEqual((await post('/accounts/logout-all', a2, ADDR_W0)).status, 200);
    for (const t of [ a1, a2 ]) {
      const res = await get('/accounts/token-info', t, ADDR_W1);
      assert.strictEqual(res.status, 401, res.text);
      assert.deepStrictEqual(res.body, { success: false, message: 'token验证失败', details: null });
    }

    const third = (await signIn('bob', ADDR_W0, ADDR_W0)).target.searchParams;
    const a3 = third.get('access_token') as string;
    assert.strictEqual((await post('/accounts/logout', a3, ADDR_W1)).status, 200);
    const res = await get('/accounts/profile', a3, ADDR_W0);
    assert.strictEqual(res.status, 401, res.text);
  });

  it('a refresh token used on worker 0 is refused on worker 1 (rotation)', async () => {
    const q = (await signIn('carol', ADDR_W1, ADDR_W0)).target.searchParams;
    const refresh = q.get('refresh_token') as string;
    const used = await request(cluster.url, 'POST', '/accounts/refresh', { body: { refresh_token: refresh }, localAddress: ADDR_W0 });
    assert.strictEqual(used.status, 200, used.text);
    const again = await request(cluster.url, 'POST', '/accounts/refresh', { body: { refresh_token: refresh }, localAddress: ADDR_W1 });
    assert.strictEqual(again.status, 401, again.text);
    assert.deepStrictEqual(again.body, { success: false, message: '无效的刷新令牌', details: null });
    const next = await request(cluster.url, 'POST', '/accounts/refresh', { body: { refresh_token: used.body.data.refresh_token }, localAddress: ADDR_W1 });
    assert.strictEqual(next.status, 200, next.text);
  });
});
