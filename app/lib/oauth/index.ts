/**
 * Sign-in providers (§8) behind one small interface: build the authorization URL, and turn
 * the callback's query into a normalised user. Both kinds use `openid-client` v5 (certified
 * OpenID Connect relying party, CommonJS like this build; it does discovery, PKCE, state, the
 * ID token's signature, nonce and issuer checks):
 * - `oidc`: any OpenID Connect issuer, found by discovery (`OAUTH_<ID>_ISSUER`);
 * - `github`: plain OAuth 2 (GitHub has no discovery nor ID token), then `GET /user` and,
 *   when the profile hides the address, `GET /user/emails` for the primary verified one.
 */
import { Issuer, custom, type BaseClient } from 'openid-client';
import type { OAuthProviderSettings } from '../../../config/env';

custom.setHttpOptionsDefaults({ timeout: 10000 });

export interface OAuthUser {
  providerId: string;
  email: string | null;
  name: string | null;
  avatarUrl: string | null;
  /** What the provider said about the user (stored as providerData). */
  raw: Record<string, unknown>;
}

export interface AuthorizationRequest {
  state: string;
  codeChallenge: string;
  nonce: string;
}

export interface CallbackCheck {
  state: string;
  codeVerifier: string;
  nonce: string;
}

/** Discovered issuers, per worker (a failed discovery is retried on the next sign-in). */
const clients = new Map<string, Promise<BaseClient>>();

function cacheKey(p: OAuthProviderSettings, redirectUri: string) {
  return JSON.stringify([ p.id, p.type, p.issuer, p.authorizeUrl, p.tokenUrl, p.clientId, p.clientSecret, redirectUri ]);
}

async function createClient(p: OAuthProviderSettings, redirectUri: string): Promise<BaseClient> {
  const issuer = p.type === 'oidc'
    ? await Issuer.discover(p.issuer as string)
    : new Issuer({ issuer: 'https://github.com', authorization_endpoint: p.authorizeUrl, token_endpoint: p.tokenUrl });
  return new issuer.Client({
    client_id: p.clientId,
    client_secret: p.clientSecret,
    redirect_uris: [ redirectUri ],
    response_types: [ 'code' ],
    token_endpoint_auth_method: p.clientSecret ? (p.type === 'github' ? 'client_secret_post' : 'client_secret_basic') : 'none',
  });
}

function client(p: OAuthProviderSettings, redirectUri: string): Promise<BaseClient> {
  const k = cacheKey(p, redirectUri);
  let c = clients.get(k);
  if (!c) {
    c = createClient(p, redirectUri);
    clients.set(k, c);
    c.catch(() => clients.delete(k));
  }
  return c;
}

export async function authorizationUrl(p: OAuthProviderSettings, redirectUri: string, req: AuthorizationRequest): Promise<string> {
  const c = await client(p, redirectUri);
  return c.authorizationUrl({
    scope: p.scope,
    state: req.state,
    code_challenge: req.codeChallenge,
    code_challenge_method: 'S256',
    ...(p.type === 'oidc' ? { nonce: req.nonce } : {}),
  });
}

const str = (v: unknown) => (typeof v === 'string' && v !== '' ? v : null);

export async function completeSignIn(
  p: OAuthProviderSettings, redirectUri: string, params: Record<string, string>, check: CallbackCheck,
): Promise<OAuthUser> {
  const c = await client(p, redirectUri);
  if (p.type === 'oidc') {
    const tokens = await c.callback(redirectUri, params, { state: check.state, code_verifier: check.codeVerifier, nonce: check.nonce, response_type: 'code' });
    const claims: Record<string, unknown> = { ...tokens.claims() };
    if (c.issuer.metadata.userinfo_endpoint && tokens.access_token) {
      const info = await c.userinfo(tokens);
      if (info.sub === claims.sub) Object.assign(claims, info);
    }
    return {
      providerId: String(claims.sub),
      email: str(claims.email),
      name: str(claims.name) ?? str(claims.preferred_username) ?? str(claims.nickname),
      avatarUrl: str(claims.picture),
      raw: claims,
    };
  }
  const tokens = await c.oauthCallback(redirectUri, params, { state: check.state, code_verifier: check.codeVerifier, response_type: 'code' });
  if (!tokens.access_token) throw new Error('GitHub did not return an access token');
  const user = await githubGet(p, '/user', tokens.access_token) as Record<string, unknown>;
  if (user.id === undefined || user.id === null) throw new Error('GitHub /user has no id');
  let email = str(user.email);
  if (!email) {
    const emails = await githubGet(p, '/user/emails', tokens.access_token);
    if (Array.isArray(emails)) {
      const list = emails as Array<{ email?: unknown; primary?: unknown; verified?: unknown }>;
      email = str((list.find(e => e.primary && e.verified) ?? list.find(e => e.verified))?.email);
    }
  }
  return {
    providerId: String(user.id),
    email,
    name: str(user.name) ?? str(user.login),
    avatarUrl: str(user.avatar_url),
    raw: user,
  };
}

async function githubGet(p: OAuthProviderSettings, path: string, accessToken: string): Promise<unknown> {
  const res = await fetch(`${p.apiUrl}${path}`, {
    headers: {
      authorization: `Bearer ${accessToken}`,
      accept: 'application/vnd.github+json',
      'user-agent': 'classworks-kv-egg',
      'x-github-api-version': '2022-11-28',
    },
    signal: AbortSignal.timeout(10000),
  });
  if (!res.ok) throw new Error(`GitHub ${path} answered ${res.status}`);
  return res.json();
}
