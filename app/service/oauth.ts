import crypto from 'node:crypto';
import { Service } from 'egg';
import { generators } from 'openid-client';
import { HttpError, badRequest } from '../lib/errors';
import { authorizationUrl, completeSignIn } from '../lib/oauth';
import type { OAuthProviderSettings } from '../../config/env';

/** Shared-state ticket kind of a pending sign-in (state → provider, PKCE verifier, nonce). */
const STATE = 'oauth-state';

interface PendingSignIn {
  provider: string;
  codeVerifier: string;
  nonce: string;
}

/**
 * The OAuth / OpenID Connect sign-in dance (§8). The state, the PKCE verifier and the nonce
 * are one single-use ticket in shared state (Redis with a TTL, or in process on the embedded
 * default): any worker can finish a sign-in another began, and a callback replayed is refused.
 */
export default class OAuthService extends Service {
  private get cfg() {
    return this.app.settings.accounts;
  }

  /** GET /accounts/oauth/providers: the configured providers, sorted by `order`. */
  list() {
    return [ ...this.cfg.providers ].sort((a, b) => a.order - b.order).map(p => ({
      id: p.id,
      name: p.name,
      displayName: p.displayName,
      icon: p.icon,
      color: p.color,
      brandColor: p.color,
      textColor: p.textColor,
      description: p.description,
      order: p.order,
      authUrl: `/accounts/oauth/${p.id}`,
      website: p.website,
    }));
  }

  /** The configured provider, or 400 `不支持的OAuth提供者: <p>`. */
  provider(id: string): OAuthProviderSettings {
    const p = this.cfg.providers.find(x => x.id === id);
    if (!p) throw badRequest(`不支持的OAuth提供者: ${id}`);
    return p;
  }

  /** What /accounts/profile shows as `providerInfo` (display fields; null when no longer configured). */
  providerInfo(id: string) {
    const p = this.cfg.providers.find(x => x.id === id);
    return p ? { id: p.id, name: p.name, displayName: p.displayName, icon: p.icon, color: p.color, website: p.website } : null;
  }

  callbackUrl(p: OAuthProviderSettings) {
    return `${this.cfg.baseUrl}/accounts/oauth/${p.id}/callback`;
  }

  /** GET /accounts/oauth/:provider: the provider's authorization URL, with a fresh state and PKCE (S256) challenge. */
  async begin(p: OAuthProviderSettings): Promise<string> {
    const state = crypto.randomBytes(24).toString('base64url');
    const pending: PendingSignIn = { provider: p.id, codeVerifier: generators.codeVerifier(), nonce: generators.nonce() };
    let url: string;
    try {
      url = await authorizationUrl(p, this.callbackUrl(p), {
        state, codeChallenge: generators.codeChallenge(pending.codeVerifier), nonce: pending.nonce,
      });
    } catch (err) {
      // The issuer's discovery document could not be read.
      this.ctx.logger.warn('[oauth] %s: discovery failed: %s', p.id, (err as Error).message);
      throw new HttpError(503, `OAuth提供者 ${p.id} 暂时不可用`, { code: 'SERVICE_UNAVAILABLE', details: { service: 'oauth' } });
    }
    await this.app.sharedState.ticketPut(STATE, state, JSON.stringify(pending), this.cfg.oauthStateTtlMs);
    return url;
  }

  /**
   * GET /accounts/oauth/:provider/callback: takes the state ticket (single use), exchanges
   * the code with the PKCE verifier, signs the account in. Returns the front end URL with the
   * tokens (1.3 parameters). Failures throw an Error whose message goes into `error=`.
   */
  async finish(p: OAuthProviderSettings, query: Record<string, string>): Promise<string> {
    const state = query.state ?? '';
    const ticket = state ? await this.app.sharedState.ticketTake(STATE, state) : null;
    const pending = ticket ? JSON.parse(ticket) as PendingSignIn : null;
    if (!pending || pending.provider !== p.id) throw new Error('invalid_state');
    if (query.error) throw new Error(query.error_description || query.error);
    const user = await completeSignIn(p, this.callbackUrl(p), query, { state, codeVerifier: pending.codeVerifier, nonce: pending.nonce });
    const tokens = await this.service.accounts.signIn(p.id, user);
    return this.frontendUrl({
      access_token: tokens.accessToken,
      refresh_token: tokens.refreshToken,
      expires_in: tokens.expiresIn,
      provider: p.id,
      providerName: p.displayName,
      providerColor: p.color ?? '',
      success: 'true',
    });
  }

  frontendUrl(params: Record<string, string>): string {
    const u = new URL(this.cfg.frontendRedirectUrl);
    for (const [ k, v ] of Object.entries(params)) u.searchParams.set(k, v);
    return u.toString();
  }
}
