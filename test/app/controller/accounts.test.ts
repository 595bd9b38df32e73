import assert from 'node:assert';
import { app } from 'egg-mock/bootstrap';
import { SignJWT } from 'jose';
import { signAccessToken } from '../../../app/lib/accountJwt';
import { createDevice, installApp, ISO_MS } from '../../support/factories';
import { startServer, stopServer } from '../../support/socket';
import { FRONTEND, browse, providerSettings, startGithubStandIn, startOidcProvider, type GithubStandIn, type OidcProvider } from '../../support/oauth';
import { configureAccounts, restoreAccounts } from '../../support/accounts';

const err = (message: string, details: unknown = null) => ({ success: false, message, details });
const EXPIRED = { success: false, message: 'JWT_EXPIRED', details: null, code: 'AUTH_JWT_EXPIRED' };
const INVALID = err('token验证失败');
const enc = encodeURIComponent;

const secret = () => app.config.classworks.accounts.jwtSecret as string;
const bearer = (t: string) => `Bearer ${t}`;

/** Signs an account in without the browser dance (the dance has its own tests below). */
async function signIn(providerId = 'alice', provider = 'local') {
  const ctx = app.mockContext();
  const r = await ctx.service.accounts.signIn(provider, {
    providerId, email: `${providerId}@example.test`, name: `User ${providerId}`, avatarUrl: null, raw: { sub: providerId },
  });
  return { id: r.account.id, access: r.accessToken, refresh: r.refreshToken };
}

async function accountRow(id: string) {
  return await app.model.Account.findByPk(id, { raw: true }) as unknown as { tokenVersion: number; refreshTokenHash: string | null; refreshTokenExpiry: unknown; name: string };
}

describe('test/app/controller/accounts.test.ts', () => {
  let base: string;
  let oidc: OidcProvider;
  let github: GithubStandIn;

  before(async () => {
    base = await startServer();
    oidc = await startOidcProvider(`${base}/accounts/oauth/local/callback`);
    github = await startGithubStandIn({
      id: 4242, login: 'octocat', name: null, email: null, avatar_url: 'https://avatars.example.test/octocat',
      emails: [{ email: 'other@example.test', primary: false, verified: true }, { email: 'octo@example.test', primary: true, verified: true }],
    });
    configureAccounts({
      baseUrl: base,
      frontendRedirectUrl: FRONTEND,
      providers: [
        providerSettings({ id: 'local', type: 'oidc', issuer: oidc.issuer, clientId: oidc.clientId, clientSecret: oidc.clientSecret, name: 'Local', displayName: '本地登录', color: '#123456', order: 10 }),
        providerSettings({
          id: 'github', type: 'github', clientId: github.clientId, clientSecret: github.clientSecret, name: 'GitHub', order: 20,
          authorizeUrl: `${github.url}/login/oauth/authorize`, tokenUrl: `${github.url}/login/oauth/access_token`, apiUrl: github.url,
        }),
      ],
    });
  });

  after(async () => {
    restoreAccounts();
    await oidc.close();
    await github.close();
    await stopServer();
  });

  describe('[GET /accounts/oauth/providers] providers()', () => {
    it('200 lists the configured providers by order, 1.3 shape', async () => {
      const res = await app.httpRequest().get('/accounts/oauth/providers').expect(200);
      assert.deepStrictEqual(res.body, {
        success: true,
        data: [
          { id: 'local', name: 'Local', displayName: '本地登录', icon: null, color: '#123456', brandColor: '#123456', textColor: '#ffffff', description: null, order: 10, authUrl: '/accounts/oauth/local', website: null },
          { id: 'github', name: 'GitHub', displayName: 'github', icon: null, color: null, brandColor: null, textColor: '#ffffff', description: null, order: 20, authUrl: '/accounts/oauth/github', website: null },
        ],
      });
    });
  });

  describe('[GET /accounts/oauth/:provider] authorize()', () => {
    it('400 for an unknown provider', async () => {
      const res = await app.httpRequest().get('/accounts/oauth/nope').expect(400);
      assert.deepStrictEqual(res.body, err('不支持的OAuth提供者: nope'));
    });

    it('302 to the provider with state and an S256 PKCE challenge', async () => {
      const res = await fetch(`${base}/accounts/oauth/local`, { redirect: 'manual' });
      assert.strictEqual(res.status, 302);
      const to = new URL(res.headers.get('location') as string);
      assert.strictEqual(to.origin, oidc.issuer);
      assert.strictEqual(to.searchParams.get('client_id'), oidc.clientId);
      assert.strictEqual(to.searchParams.get('redirect_uri'), `${base}/accounts/oauth/local/callback`);
      assert.strictEqual(to.searchParams.get('response_type'), 'code');
      assert.strictEqual(to.searchParams.get('code_challenge_method'), 'S256');
      assert.match(to.searchParams.get('code_challenge') as string, /^[\w-]{43}$/);
      assert.match(to.searchParams.get('state') as string, /^[\w-]{32}$/);
    });
  });

  describe('[GET /accounts/oauth/:provider/callback] callback()', () => {
    it('OpenID Connect: the full authorization-code + PKCE dance lands on the front end with working tokens', async () => {
      const { url, hops } = await browse(`${base}/accounts/oauth/local`, FRONTEND, 'alice');
      // Through the provider's login and consent pages and back through the callback.
      assert.ok(hops.some(h => h.startsWith(`POST ${oidc.issuer}/interaction/`)), hops.join('\n'));
      assert.ok(hops.some(h => h === `GET ${base}/accounts/oauth/local/callback`), hops.join('\n'));
      const q = url.searchParams;
      assert.deepStrictEqual([ ...q.keys() ].sort(), [ 'access_token', 'expires_in', 'provider', 'providerColor', 'providerName', 'refresh_token', 'success' ]);
      assert.strictEqual(q.get('success'), 'true');
      assert.strictEqual(q.get('provider'), 'local');
      assert.strictEqual(q.get('providerName'), '本地登录');
      assert.strictEqual(q.get('providerColor'), '#123456');
      assert.strictEqual(q.get('expires_in'), '15m');

      const profile = await app.httpRequest().get('/accounts/profile').set('authorization', bearer(q.get('access_token') as string)).expect(200);
      assert.strictEqual(profile.body.success, true);
      const { id, createdAt, ...rest } = profile.body.data;
      assert.match(createdAt, ISO_MS);
      assert.ok(id);
      assert.deepStrictEqual(rest, {
        provider: 'local',
        providerInfo: { id: 'local', name: 'Local', displayName: '本地登录', icon: null, color: '#123456', website: null },
        email: 'alice@example.test',
        name: 'User alice',
        avatarUrl: 'https://img.example.test/alice.png',
        devices: [],
      });
      const refreshed = await app.httpRequest().post('/accounts/refresh').send({ refresh_token: q.get('refresh_token') }).expect(200);
      assert.strictEqual(refreshed.body.data.account.id, id);

      // Signing in again is the same account; the new login replaces the refresh token.
      const again = (await browse(`${base}/accounts/oauth/local`, FRONTEND, 'alice')).url.searchParams;
      const p2 = await app.httpRequest().get('/accounts/profile').set('authorization', bearer(again.get('access_token') as string)).expect(200);
      assert.strictEqual(p2.body.data.id, id);
      const old = await app.httpRequest().post('/accounts/refresh').send({ refresh_token: refreshed.body.data.refresh_token }).expect(401);
      assert.deepStrictEqual(old.body, err('无效的刷新令牌'));
      assert.strictEqual(await app.model.Account.count(), 1);
    });

    it('a callback whose state is unknown or already used redirects with error=invalid_state, success=false', async () => {
      const first = await fetch(`${base}/accounts/oauth/local`, { redirect: 'manual' });
      const state = new URL(first.headers.get('location') as string).searchParams.get('state') as string;
      const forged = await fetch(`${base}/accounts/oauth/local/callback?code=x&state=forged`, { redirect: 'manual' });
      assert.strictEqual(forged.status, 302);
      assert.strictEqual(forged.headers.get('location'), `${FRONTEND}?error=invalid_state&provider=local&success=false`);
      // The real state, with a bad code: the state is spent, the provider refuses the code.
      const bad = await fetch(`${base}/accounts/oauth/local/callback?code=bogus&state=${state}`, { redirect: 'manual' });
      const badTo = new URL(bad.headers.get('location') as string);
      assert.strictEqual(badTo.searchParams.get('success'), 'false');
      assert.notStrictEqual(badTo.searchParams.get('error'), 'invalid_state');
      assert.strictEqual(badTo.searchParams.get('access_token'), null);
      const replay = await fetch(`${base}/accounts/oauth/local/callback?code=bogus&state=${state}`, { redirect: 'manual' });
      assert.strictEqual(replay.headers.get('location'), `${FRONTEND}?error=invalid_state&provider=local&success=false`);
      assert.strictEqual(await app.model.Account.count(), 0);
    });

    it('the provider\'s own error (the user declined) comes back as error=<code>, success=false', async () => {
      const first = await fetch(`${base}/accounts/oauth/local`, { redirect: 'manual' });
      const state = new URL(first.headers.get('location') as string).searchParams.get('state') as string;
      const res = await fetch(`${base}/accounts/oauth/local/callback?error=access_denied&state=${state}`, { redirect: 'manual' });
      assert.strictEqual(res.headers.get('location'), `${FRONTEND}?error=access_denied&provider=local&success=false`);
    });

    it('503 SERVICE_UNAVAILABLE when an OpenID Connect issuer cannot be discovered', async () => {
      const net = await import('node:net');
      const closed = await new Promise<number>(resolve => {
        const srv = net.createServer().listen(0, '127.0.0.1', () => {
          const p = (srv.address() as { port: number }).port;
          srv.close(() => resolve(p));
        });
      });
      configureAccounts({ providers: [ providerSettings({ id: 'down', type: 'oidc', issuer: `http://127.0.0.1:${closed}`, clientId: 'c' }) ] });
      try {
        const res = await app.httpRequest().get('/accounts/oauth/down').expect(503);
        assert.deepStrictEqual(res.body, { success: false, message: 'OAuth提供者 down 暂时不可用', details: { service: 'oauth' }, code: 'SERVICE_UNAVAILABLE' });
      } finally {
        restoreAccounts();
      }
    });

    it('a state issued for one provider is refused by another provider\'s callback', async () => {
      const first = await fetch(`${base}/accounts/oauth/local`, { redirect: 'manual' });
      const state = new URL(first.headers.get('location') as string).searchParams.get('state') as string;
      const res = await fetch(`${base}/accounts/oauth/github/callback?code=x&state=${state}`, { redirect: 'manual' });
      assert.strictEqual(res.headers.get('location'), `${FRONTEND}?error=invalid_state&provider=github&success=false`);
    });

    it('GitHub: code + PKCE at the token endpoint, then /user and /user/emails (primary verified address)', async () => {
      const { url, hops } = await browse(`${base}/accounts/oauth/github`, FRONTEND, 'unused');
      assert.ok(hops.includes(`GET ${github.url}/login/oauth/authorize`), hops.join('\n'));
      const q = url.searchParams;
      assert.strictEqual(q.get('success'), 'true', url.toString());
      assert.strictEqual(q.get('provider'), 'github');
      const profile = await app.httpRequest().get('/accounts/profile').set('authorization', bearer(q.get('access_token') as string)).expect(200);
      // No display name: the login; no public email: the primary verified one.
      assert.strictEqual(profile.body.data.provider, 'github');
      assert.strictEqual(profile.body.data.name, 'octocat');
      assert.strictEqual(profile.body.data.email, 'octo@example.test');
      assert.strictEqual(profile.body.data.avatarUrl, 'https://avatars.example.test/octocat');
      const row = await app.model.Account.findOne({ where: { provider: 'github' }, raw: true }) as unknown as { providerId: string };
      assert.strictEqual(row.providerId, '4242');
    });
  });

  describe('[POST /accounts/refresh] refresh()', () => {
    it('200 rotates: a new access and refresh token; the old refresh token is refused afterwards', async () => {
      const a = await signIn();
      const res = await app.httpRequest().post('/accounts/refresh').send({ refresh_token: a.refresh }).expect(200);
      const { access_token, refresh_token, ...rest } = res.body.data;
      assert.deepStrictEqual({ ...res.body, data: rest }, {
        success: true,
        message: '令牌刷新成功',
        data: { expires_in: '15m', refresh_expires_in: '7d', account: { id: a.id, provider: 'local', email: 'alice@example.test', name: 'User alice', avatarUrl: null } },
      });
      assert.notStrictEqual(refresh_token, a.refresh);
      await app.httpRequest().get('/accounts/token-info').set('authorization', bearer(access_token)).expect(200);
      const reuse = await app.httpRequest().post('/accounts/refresh').send({ refresh_token: a.refresh }).expect(401);
      assert.deepStrictEqual(reuse.body, err('无效的刷新令牌'));
      await app.httpRequest().post('/accounts/refresh').send({ refresh_token }).expect(200);
      // Only the hash is stored.
      const row = await accountRow(a.id);
      assert.match(row.refreshTokenHash as string, /^[0-9a-f]{64}$/);
    });

    it('of two concurrent uses of one refresh token exactly one wins', async () => {
      const a = await signIn();
      const results = await Promise.all([ 1, 2, 3 ].map(() => app.httpRequest().post('/accounts/refresh').send({ refresh_token: a.refresh })));
      assert.deepStrictEqual(results.map(r => r.status).sort(), [ 200, 401, 401 ]);
    });

    it('400 without a refresh token; 401 for garbage, an unknown account, an expired one', async () => {
      assert.deepStrictEqual((await app.httpRequest().post('/accounts/refresh').send({}).expect(400)).body, err('缺少刷新令牌'));
      assert.deepStrictEqual((await app.httpRequest().post('/accounts/refresh').send({ refresh_token: 'garbage' }).expect(401)).body, err('无效的刷新令牌'));
      const a = await signIn();
      const forged = `${Buffer.from('no-such-account').toString('base64url')}.${a.refresh.split('.')[1]}`;
      assert.deepStrictEqual((await app.httpRequest().post('/accounts/refresh').send({ refresh_token: forged }).expect(401)).body, err('账户不存在'));
      await app.model.Account.update({ refreshTokenExpiry: new Date(Date.now() - 1000) }, { where: { id: a.id } });
      assert.deepStrictEqual((await app.httpRequest().post('/accounts/refresh').send({ refresh_token: a.refresh }).expect(401)).body, err('刷新令牌已过期'));
    });
  });

  describe('access tokens (accountAuth)', () => {
    it('401 without a Bearer token', async () => {
      const res = await app.httpRequest().get('/accounts/profile').expect(401);
      assert.deepStrictEqual(res.body, err('需要提供有效的JWT token'));
    });

    it('401 JWT_EXPIRED (code AUTH_JWT_EXPIRED) for an expired token', async () => {
      const a = await signIn();
      const now = Math.floor(Date.now() / 1000);
      const old = await signAccessToken(secret(), { accountId: a.id, tokenVersion: 1, provider: 'local' }, 900, now - 1000);
      const res = await app.httpRequest().get('/accounts/profile').set('authorization', bearer(old)).expect(401);
      assert.deepStrictEqual(res.body, EXPIRED);
    });

    it('the access token lifetime setting is honoured (ACCESS_TOKEN_EXPIRES_IN)', async () => {
      configureAccounts({ accessTokenTtlSec: 1, accessTokenExpiresIn: '1s' });
      let a;
      try {
        a = await signIn();
      } finally {
        restoreAccounts();
      }
      const info = await app.httpRequest().get('/accounts/token-info').set('authorization', bearer(a.access)).expect(200);
      assert.ok(info.body.data.expiresIn <= 1);
      await new Promise(resolve => setTimeout(resolve, 2100));
      const res = await app.httpRequest().get('/accounts/token-info').set('authorization', bearer(a.access)).expect(401);
      assert.deepStrictEqual(res.body, EXPIRED);
    });

    it('401 token验证失败 for a tampered token, another audience or issuer, another key, alg none, a refresh token', async () => {
      const a = await signIn();
      const [ h, p, s ] = a.access.split('.');
      const payload = JSON.parse(Buffer.from(p, 'base64url').toString());
      const tampered = `${h}.${Buffer.from(JSON.stringify({ ...payload, tokenVersion: 2 })).toString('base64url')}.${s}`;
      const key = new TextEncoder().encode(secret());
      const now = Math.floor(Date.now() / 1000);
      const sign = (claims: Record<string, unknown>, k = key) => new SignJWT({ type: 'access', accountId: a.id, tokenVersion: 1, ...claims })
        .setProtectedHeader({ alg: 'HS256' }).setSubject(a.id).setJti('j').setIssuedAt(now).setExpirationTime(now + 600)
        .setIssuer((claims.iss as string) ?? 'ClassworksKV').setAudience((claims.aud as string) ?? 'classworks-client').sign(k);
      const none = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${p}.`;
      const bad = [
        tampered,
        await sign({ aud: 'other-client' }),
        await sign({ iss: 'SomeoneElse' }),
        await sign({}, new TextEncoder().encode('another-secret-another-secret-123456')),
        await sign({ type: 'refresh' }),
        none,
        a.refresh,
      ];
      for (const t of bad) {
        const res = await app.httpRequest().get('/accounts/token-info').set('authorization', bearer(t)).expect(401);
        assert.deepStrictEqual(res.body, INVALID, t);
      }
      // The same construction with the right claims is accepted (the checks above are what refused them).
      await app.httpRequest().get('/accounts/token-info').set('authorization', bearer(await sign({}))).expect(200);
    });

    it('a token with less than 300 s left is answered with X-New-Access-Token and X-Token-Refreshed: true', async () => {
      const a = await signIn();
      const now = Math.floor(Date.now() / 1000);
      const ending = await signAccessToken(secret(), { accountId: a.id, tokenVersion: 1, provider: 'local' }, 900, now - 700);
      const res = await app.httpRequest().get('/accounts/devices').set('authorization', bearer(ending)).expect(200);
      assert.strictEqual(res.headers['x-token-refreshed'], 'true');
      const fresh = res.headers['x-new-access-token'];
      const info = await app.httpRequest().get('/accounts/token-info').set('authorization', bearer(fresh)).expect(200);
      assert.ok(info.body.data.expiresIn > 800);
      assert.strictEqual(info.headers['x-new-access-token'], undefined);
      // The CORS layer exposes both headers to browsers.
      const cors = await app.httpRequest().get('/accounts/devices').set('origin', 'http://admin.example').set('authorization', bearer(ending)).expect(200);
      assert.match(cors.headers['access-control-expose-headers'], /X-New-Access-Token/);
    });

    it('[GET /accounts/token-info] 200 describes the token', async () => {
      const a = await signIn();
      const res = await app.httpRequest().get('/accounts/token-info').set('authorization', bearer(a.access)).expect(200);
      const { issuedAt, expiresAt, expiresIn, refreshTokenExpiry, ...rest } = res.body.data;
      assert.deepStrictEqual(rest, { accountId: a.id, tokenType: 'access', tokenVersion: 1, isExpired: false, isLegacyToken: false, hasRefreshToken: true });
      assert.match(issuedAt, ISO_MS);
      assert.match(expiresAt, ISO_MS);
      assert.match(refreshTokenExpiry, ISO_MS);
      assert.ok(expiresIn > 890 && expiresIn <= 900);
    });

    it('[POST /accounts/logout] revokes this access token (on every route that takes one) and the refresh token; another access token lives on', async () => {
      const a = await signIn();
      const other = await signAccessToken(secret(), { accountId: a.id, tokenVersion: 1, provider: 'local' }, 900);
      const device = await createDevice({ password: 'pw-1' });
      await app.httpRequest().post('/accounts/devices/bind').set('authorization', bearer(a.access)).set('x-device-password', 'pw-1')
        .send({ uuid: device.uuid }).expect(200);
      const res = await app.httpRequest().post('/accounts/logout').set('authorization', bearer(a.access)).expect(200);
      assert.deepStrictEqual(res.body, { success: true, message: '登出成功' });
      assert.deepStrictEqual((await app.httpRequest().get('/accounts/profile').set('authorization', bearer(a.access)).expect(401)).body, INVALID);
      assert.deepStrictEqual((await app.httpRequest().get(`/auto-auth/devices/${enc(device.uuid)}/auth-configs`)
        .set('authorization', bearer(a.access)).expect(401)).body, INVALID);
      assert.deepStrictEqual((await app.httpRequest().post(`/apps/devices/${enc(device.uuid)}/install/x`)
        .set('authorization', bearer(a.access)).send({}).expect(401)).body, INVALID);
      await app.httpRequest().get(`/auto-auth/devices/${enc(device.uuid)}/auth-configs`).set('authorization', bearer(other)).expect(200);
      assert.deepStrictEqual((await app.httpRequest().post('/accounts/refresh').send({ refresh_token: a.refresh }).expect(401)).body, err('无效的刷新令牌'));
      await app.httpRequest().get('/accounts/profile').set('authorization', bearer(other)).expect(200);
    });

    it('[POST /accounts/logout-all] every access token of the account is refused, on every route that takes one', async () => {
      const a = await signIn();
      const b = await signIn();
      const device = await createDevice({ password: 'pw-1' });
      await app.httpRequest().post('/accounts/devices/bind').set('authorization', bearer(a.access)).set('x-device-password', 'pw-1')
        .send({ uuid: device.uuid }).expect(200);
      const res = await app.httpRequest().post('/accounts/logout-all').set('authorization', bearer(a.access)).expect(200);
      assert.deepStrictEqual(res.body, { success: true, message: '已从所有设备登出' });
      assert.strictEqual((await accountRow(a.id)).tokenVersion, 2);
      for (const t of [ a.access, b.access ]) {
        assert.deepStrictEqual((await app.httpRequest().get('/accounts/profile').set('authorization', bearer(t)).expect(401)).body, INVALID);
        assert.deepStrictEqual((await app.httpRequest().get(`/auto-auth/devices/${enc(device.uuid)}/auth-configs`)
          .set('authorization', bearer(t)).expect(401)).body, INVALID);
        assert.deepStrictEqual((await app.httpRequest().post(`/apps/devices/${enc(device.uuid)}/install/x`)
          .set('authorization', bearer(t)).send({}).expect(401)).body, INVALID);
      }
      await app.httpRequest().post('/accounts/refresh').send({ refresh_token: b.refresh }).expect(401);
      // A new sign-in works again.
      const c = await signIn();
      await app.httpRequest().get('/accounts/profile').set('authorization', bearer(c.access)).expect(200);
    });
  });

  describe('[POST /accounts/devices/bind, /unbind] bind() unbind()', () => {
    it('binds (device password required when the device has one), lists, refuses another account, unbinds', async () => {
      const a = await signIn('alice');
      const b = await signIn('bob');
      const open = await createDevice({ name: 'Open' });
      const locked = await createDevice({ name: 'Locked', password: 'pw-1' });
      const bind = (t: string, uuid: unknown, pw?: string) => {
        const req = app.httpRequest().post('/accounts/devices/bind').set('authorization', bearer(t));
        if (pw) req.set('x-device-password', pw);
        return req.send({ uuid });
      };
      assert.deepStrictEqual((await bind(a.access, undefined).expect(400)).body, err('缺少设备UUID'));
      assert.deepStrictEqual((await bind(a.access, 'nope').expect(404)).body, err('设备不存在 #1'));
      assert.deepStrictEqual((await bind(a.access, locked.uuid).expect(401)).body, err('需要提供设备密码'));
      assert.deepStrictEqual((await bind(a.access, locked.uuid, 'wrong').expect(401)).body, err('密码错误'));
      const ok = await bind(a.access, locked.uuid, 'pw-1').expect(200);
      assert.deepStrictEqual(ok.body, { success: true, message: '设备绑定成功', data: { deviceId: locked.id, uuid: locked.uuid, name: 'Locked' } });
      // Binding again by the owner is fine; another account is refused, even with the password.
      await bind(a.access, locked.uuid).expect(200);
      assert.deepStrictEqual((await bind(b.access, locked.uuid, 'pw-1').expect(400)).body, err('设备已绑定其他账户'));
      await bind(a.access, open.uuid).expect(200);

      const list = await app.httpRequest().get('/accounts/devices').set('authorization', bearer(a.access)).expect(200);
      assert.deepStrictEqual(list.body.data.map((d: Record<string, unknown>) => [ d.id, d.uuid, d.name, d.namespace ]),
        [[ open.id, open.uuid, 'Open', open.uuid ], [ locked.id, locked.uuid, 'Locked', locked.uuid ]]);
      for (const d of list.body.data) {
        assert.match(d.createdAt, ISO_MS);
        assert.match(d.updatedAt, ISO_MS);
      }
      const owner = await app.httpRequest().get(`/accounts/device/${enc(locked.uuid)}/account`).expect(200);
      assert.deepStrictEqual({ ...owner.body, data: { ...owner.body.data, bindTime: 'x' } },
        { success: true, data: { id: a.id, provider: 'local', name: 'User alice', avatarUrl: null, bindTime: 'x' } });
      assert.match(owner.body.data.bindTime, ISO_MS);

      const unbind = (t: string, body: unknown) => app.httpRequest().post('/accounts/devices/unbind').set('authorization', bearer(t)).send(body as object);
      assert.deepStrictEqual((await unbind(a.access, {}).expect(400)).body, err('请提供要解绑的设备UUID'));
      assert.deepStrictEqual((await unbind(a.access, { uuids: [ open.uuid, 'x1', 'x2' ] }).expect(404)).body, err('以下设备不存在: x1, x2'));
      assert.deepStrictEqual((await unbind(b.access, { uuids: [ open.uuid, locked.uuid ] }).expect(403)).body,
        err(`您没有权限解绑以下设备: ${open.uuid}, ${locked.uuid}`));
      assert.deepStrictEqual((await unbind(a.access, { uuid: open.uuid }).expect(200)).body, { success: true, message: '设备解绑成功', unboundCount: 1 });
      await bind(a.access, open.uuid).expect(200);
      assert.deepStrictEqual((await unbind(a.access, { uuids: [ open.uuid, locked.uuid ] }).expect(200)).body, { success: true, message: '成功解绑 2 个设备', unboundCount: 2 });
      assert.deepStrictEqual((await app.httpRequest().get(`/accounts/device/${enc(locked.uuid)}/account`).expect(200)).body, { success: true, data: null });
      assert.deepStrictEqual((await app.httpRequest().get('/accounts/device/nope/account').expect(404)).body, err('设备不存在 #2'));
    });

    it('GET /kv/_info shows hasAccount and account and hides the uuid of a bound device; GET /devices/:uuid shows the account', async () => {
      const a = await signIn('alice');
      const device = await createDevice({ name: 'Screen' });
      const { token } = await installApp(device);
      const before = await app.httpRequest().get('/kv/_info').set('x-app-token', token).expect(200);
      assert.strictEqual(before.body.hasAccount, false);
      assert.strictEqual(before.body.device.uuid, device.uuid);
      assert.strictEqual('account' in before.body, false);
      await app.httpRequest().post('/accounts/devices/bind').set('authorization', bearer(a.access)).send({ uuid: device.uuid }).expect(200);
      const after = await app.httpRequest().get('/kv/_info').set('x-app-token', token).expect(200);
      assert.deepStrictEqual(Object.keys(after.body.device), [ 'id', 'name', 'createdAt', 'updatedAt' ]);
      assert.strictEqual(after.body.hasAccount, true);
      assert.deepStrictEqual(after.body.account, { id: a.id, name: 'User alice', avatarUrl: null });
      const shown = await app.httpRequest().get(`/devices/${enc(device.uuid)}`).expect(200);
      assert.deepStrictEqual(shown.body.account, { id: a.id, name: 'User alice', email: 'alice@example.test', avatarUrl: null });
      assert.strictEqual(shown.body.isBoundToAccount, true);
    });
  });

  describe('the account token on device routes (uuidAuth, /auto-auth)', () => {
    it('accepted for the bound device without its password; 403 for another account\'s or an unbound device', async () => {
      const a = await signIn('alice');
      const b = await signIn('bob');
      const mine = await createDevice({ password: 'pw-1' });
      const unbound = await createDevice({ password: 'pw-2' });
      await app.httpRequest().post('/accounts/devices/bind').set('authorization', bearer(a.access)).set('x-device-password', 'pw-1')
        .send({ uuid: mine.uuid }).expect(200);

      const install = await app.httpRequest().post(`/apps/devices/${enc(mine.uuid)}/install/admin-app`).set('authorization', bearer(a.access))
        .send({ note: '应用授权' }).expect(201);
      assert.match(install.body.token, /^[0-9a-f]{64}$/);
      await app.httpRequest().get(`/apps/devices/${enc(mine.uuid)}/apps`).set('authorization', bearer(a.access)).expect(200);
      await app.httpRequest().put(`/devices/${enc(mine.uuid)}/name`).set('authorization', bearer(a.access)).send({ name: 'Renamed' }).expect(200);
      assert.deepStrictEqual((await app.httpRequest().post(`/apps/devices/${enc(mine.uuid)}/install/x`).set('authorization', bearer(b.access))
        .send({}).expect(403)).body, err('设备未绑定到此账户'));
      assert.deepStrictEqual((await app.httpRequest().post(`/apps/devices/${enc(unbound.uuid)}/install/x`).set('authorization', bearer(a.access))
        .send({}).expect(403)).body, err('设备未绑定到此账户'));

      const configs = `/auto-auth/devices/${enc(mine.uuid)}/auth-configs`;
      const list = await app.httpRequest().get(configs).set('authorization', bearer(a.access)).expect(200);
      assert.strictEqual(list.body.configs.length, 1);
      assert.deepStrictEqual((await app.httpRequest().get(configs).set('authorization', bearer(b.access)).expect(403)).body, err('该设备未绑定到您的账户'));
      assert.deepStrictEqual((await app.httpRequest().get(`/auto-auth/devices/${enc(unbound.uuid)}/auth-configs`).set('authorization', bearer(a.access))
        .expect(403)).body, err('该设备未绑定到您的账户'));
      assert.deepStrictEqual((await app.httpRequest().get('/auto-auth/devices/nope/auth-configs').set('authorization', bearer(a.access))
        .expect(404)).body, err('设备不存在'));
      // The device password keeps working for the bound device.
      await app.httpRequest().get(configs).set('x-device-password', 'pw-1').expect(200);
      // An expired account token is the 1.3 expiry answer here too.
      const now = Math.floor(Date.now() / 1000);
      const old = await signAccessToken(secret(), { accountId: a.id, tokenVersion: 1, provider: 'local' }, 900, now - 1000);
      assert.deepStrictEqual((await app.httpRequest().get(configs).set('authorization', bearer(old)).expect(401)).body, EXPIRED);
    });

    it('a Bearer value that is not a JWT (a KV token) is ignored by uuidAuth, as before accounts', async () => {
      const device = await createDevice();
      const { token } = await installApp(device);
      await app.httpRequest().get(`/apps/devices/${enc(device.uuid)}/apps`).set('authorization', bearer(token)).expect(200);
    });
  });

  describe('end to end', () => {
    it('an admin signs in at the provider, binds a device, creates a read-only config; a screen logs in by namespace and cannot write', async () => {
      const device = await createDevice({ name: 'Classroom 3', password: 'device-pw' });
      const { url } = await browse(`${base}/accounts/oauth/local`, FRONTEND, 'teacher-li');
      const access = url.searchParams.get('access_token') as string;
      await app.httpRequest().post('/accounts/devices/bind').set('authorization', bearer(access)).set('x-device-password', 'device-pw')
        .send({ uuid: device.uuid }).expect(200);
      await app.httpRequest().put(`/auto-auth/devices/${enc(device.uuid)}/namespace`).set('authorization', bearer(access))
        .send({ namespace: 'class-3' }).expect(200);
      const created = await app.httpRequest().post(`/auto-auth/devices/${enc(device.uuid)}/auth-configs`).set('authorization', bearer(access))
        .send({ password: 'screen-pw', deviceType: 'classroom', isReadOnly: true }).expect(201);
      assert.strictEqual(created.body.config.isReadOnly, true);

      const login = await app.httpRequest().post('/apps/auth/token').send({ namespace: 'class-3', password: 'screen-pw', appId: 'classworks' }).expect(201);
      assert.strictEqual(login.body.isReadOnly, true);
      assert.strictEqual(login.body.deviceType, 'classroom');
      const token = login.body.token as string;
      const who = await app.httpRequest().get('/kv/_token').set('x-app-token', token).expect(200);
      assert.strictEqual(who.body.isReadOnly, true);
      assert.strictEqual(who.body.device.namespace, 'class-3');
      const write = await app.httpRequest().post('/kv/homework').set('x-app-token', token).send({ a: 1 }).expect(403);
      assert.deepStrictEqual(write.body, err('当前token为只读模式,无法修改数据'));
      await app.httpRequest().get('/kv/_keys').set('x-app-token', token).expect(200);
      const info = await app.httpRequest().get('/kv/_info').set('x-app-token', token).expect(200);
      assert.strictEqual(info.body.hasAccount, true);
      assert.strictEqual(info.body.account.name, 'User teacher-li');
    });
  });
});
