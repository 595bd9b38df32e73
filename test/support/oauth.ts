import assert from 'node:assert';
import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { OAuthProviderSettings } from '../../config/env';

/**
 * Sign-in test kit (§8): a real OpenID Connect provider (`oidc-provider`, its development
 * login and consent pages) and a stand-in speaking GitHub's OAuth and REST endpoints, both on
 * 127.0.0.1; a small browser (cookie jar, follows every redirect by hand). No egg-mock here:
 * the cluster suite uses it too (test/support/accounts.ts changes the in-process app's settings).
 */

export const FRONTEND = 'http://frontend.test/login';

async function listen(server: http.Server): Promise<string> {
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

export interface OidcProvider {
  issuer: string;
  clientId: string;
  clientSecret: string;
  close(): Promise<void>;
}

/** `oidc-provider` (ESM only; Node ≥ 20.19 loads it with require) with one confidential client. */
export async function startOidcProvider(redirectUri: string): Promise<OidcProvider> {
  const { default: Provider } = require('oidc-provider') as { default: new (issuer: string, config: unknown) => { callback(): http.RequestListener } };
  const server = http.createServer();
  const issuer = await listen(server);
  const clientId = 'kv-admin';
  const clientSecret = crypto.randomBytes(16).toString('hex');
  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [ redirectUri ],
      grant_types: [ 'authorization_code' ],
      response_types: [ 'code' ],
    }],
    // The login form's `login` field is the user id; every user exists.
    async findAccount(_ctx: unknown, sub: string) {
      return {
        accountId: sub,
        async claims() {
          return { sub, email: `${sub}@example.test`, email_verified: true, name: `User ${sub}`, picture: `https://img.example.test/${sub}.png` };
        },
      };
    },
    claims: { openid: [ 'sub' ], email: [ 'email', 'email_verified' ], profile: [ 'name', 'picture' ] },
    cookies: { keys: [ crypto.randomBytes(16).toString('hex') ] },
    features: { devInteractions: { enabled: true } },
    pkce: { required: () => true },
  });
  server.on('request', provider.callback());
  return {
    issuer, clientId, clientSecret,
    close: () => new Promise<void>(resolve => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

export interface GithubUser {
  id: number;
  login: string;
  name: string | null;
  email: string | null;
  avatar_url: string;
  emails: Array<{ email: string; primary: boolean; verified: boolean }>;
}

export interface GithubStandIn {
  url: string;
  clientId: string;
  clientSecret: string;
  /** The user who "signs in" at the authorize page. */
  user: GithubUser;
  close(): Promise<void>;
}

/**
 * GitHub's endpoints as the app uses them: /login/oauth/authorize (signs `user` in at once and
 * redirects back with a code), /login/oauth/access_token (checks client, code, redirect_uri
 * and the PKCE verifier against the S256 challenge), /user and /user/emails (Bearer token).
 */
export async function startGithubStandIn(user: GithubUser): Promise<GithubStandIn> {
  const clientId = 'gh-client';
  const clientSecret = crypto.randomBytes(16).toString('hex');
  const codes = new Map<string, { redirectUri: string; challenge: string }>();
  const tokens = new Set<string>();
  const state = { user };
  const server = http.createServer(async (req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.method === 'GET' && u.pathname === '/login/oauth/authorize') {
      const q = u.searchParams;
      if (q.get('client_id') !== clientId || q.get('code_challenge_method') !== 'S256' || !q.get('code_challenge')) return json(400, { error: 'bad_request' });
      const code = crypto.randomBytes(10).toString('hex');
      codes.set(code, { redirectUri: q.get('redirect_uri') as string, challenge: q.get('code_challenge') as string });
      const back = new URL(q.get('redirect_uri') as string);
      back.searchParams.set('code', code);
      back.searchParams.set('state', q.get('state') as string);
      res.writeHead(302, { location: back.toString() });
      return res.end();
    }
    if (req.method === 'POST' && u.pathname === '/login/oauth/access_token') {
      let raw = '';
      for await (const chunk of req) raw += chunk;
      const body = new URLSearchParams(raw);
      const auth = req.headers.authorization;
      const basic = auth?.startsWith('Basic ') ? Buffer.from(auth.slice(6), 'base64').toString().split(':').map(decodeURIComponent) : [];
      const id = body.get('client_id') ?? basic[0];
      const secret = body.get('client_secret') ?? basic[1];
      const entry = codes.get(body.get('code') ?? '');
      codes.delete(body.get('code') ?? '');
      const verifier = body.get('code_verifier') ?? '';
      const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');
      // GitHub answers errors with 200 and an `error` field.
      if (id !== clientId || secret !== clientSecret) return json(200, { error: 'incorrect_client_credentials' });
      if (!entry || entry.redirectUri !== body.get('redirect_uri') || entry.challenge !== challenge) return json(200, { error: 'bad_verification_code' });
      const token = `gho_${crypto.randomBytes(12).toString('hex')}`;
      tokens.add(token);
      return json(200, { access_token: token, token_type: 'bearer', scope: 'read:user,user:email' });
    }
    const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    if (req.method === 'GET' && (u.pathname === '/user' || u.pathname === '/user/emails')) {
      if (!bearer || !tokens.has(bearer)) return json(401, { message: 'Bad credentials' });
      const { emails, ...profile } = state.user;
      return json(200, u.pathname === '/user' ? profile : emails);
    }
    json(404, { message: 'Not Found' });
  });
  const url = await listen(server);
  return {
    url, clientId, clientSecret,
    get user() { return state.user; },
    set user(v: GithubUser) { state.user = v; },
    close: () => new Promise<void>(resolve => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

/** A provider entry as config/env.ts builds it. */
export function providerSettings(p: Partial<OAuthProviderSettings> & Pick<OAuthProviderSettings, 'id' | 'type' | 'clientId'>): OAuthProviderSettings {
  return {
    scope: p.type === 'github' ? 'read:user user:email' : 'openid profile email',
    name: p.id, displayName: p.id, icon: null, color: null, textColor: '#ffffff', description: null, order: 9999, website: null,
    ...p,
  };
}

/**
 * A browser: follows redirects one by one (fetch, redirect: 'manual'), keeps cookies per host,
 * and on the provider's development pages fills the form: the login (user id `login`), then
 * the consent. Stops at the first URL that starts with `stopAt` and returns it.
 */
export async function browse(start: string, stopAt: string, login: string): Promise<{ url: URL; hops: string[] }> {
  const jar = new Map<string, Map<string, string>>();
  const hops: string[] = [];
  let url = new URL(start);
  let method = 'GET';
  let body: string | undefined;
  for (let i = 0; i < 20; i++) {
    if (url.toString().startsWith(stopAt)) return { url, hops };
    hops.push(`${method} ${url.origin}${url.pathname}`);
    const cookies = jar.get(url.host) ?? new Map<string, string>();
    jar.set(url.host, cookies);
    const res = await fetch(url, {
      method,
      redirect: 'manual',
      headers: {
        ...(cookies.size ? { cookie: [ ...cookies ].map(([ k, v ]) => `${k}=${v}`).join('; ') } : {}),
        ...(body ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
      },
      body,
    });
    for (const c of res.headers.getSetCookie()) {
      const [ pair ] = c.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      if (/expires=Thu, 01 Jan 1970/i.test(c) || value === '') cookies.delete(name);
      else cookies.set(name, value);
    }
    method = 'GET';
    body = undefined;
    if (res.status >= 300 && res.status < 400) {
      url = new URL(res.headers.get('location') as string, url);
      continue;
    }
    const html = await res.text();
    assert.strictEqual(res.status, 200, `${url} answered ${res.status}: ${html.slice(0, 300)}`);
    const action = /<form[^>]*action="([^"]+)"/.exec(html)?.[1];
    assert.ok(action, `no form at ${url}: ${html.slice(0, 300)}`);
    const form = new URLSearchParams();
    if (/name="login"/.test(html)) {
      form.set('prompt', 'login');
      form.set('login', login);
      form.set('password', 'any');
    } else {
      form.set('prompt', 'consent');
    }
    url = new URL(action, url);
    method = 'POST';
    body = form.toString();
  }
  throw new Error(`too many redirects: ${hops.join(' → ')}`);
}
