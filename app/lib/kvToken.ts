import crypto from 'node:crypto';
import type { Context } from 'egg';
import { isPlainObject } from '../validator/common';
import { bearer } from './accountJwt';
import type { TokenInfo } from './tokenCache';

export type TokenSource = 'header' | 'bearer' | 'query.token' | 'query.apptoken' | 'body.token' | 'body.apptoken';

/**
 * Finds the KV token of a request. First match wins: header x-app-token;
 * Authorization: Bearer; query token; query apptoken; body token; body apptoken.
 */
export function extractKvToken(ctx: Context): { token: string; source: TokenSource } | undefined {
  const header = ctx.get('x-app-token');
  if (header) return { token: header, source: 'header' };
  const token = bearer(ctx.get('authorization'));
  if (token) return { token, source: 'bearer' };
  const q = ctx.query as Record<string, string | undefined>;
  if (typeof q.token === 'string' && q.token) return { token: q.token, source: 'query.token' };
  if (typeof q.apptoken === 'string' && q.apptoken) return { token: q.apptoken, source: 'query.apptoken' };
  const body = (ctx.request as { body?: unknown }).body;
  if (isPlainObject(body)) {
    if (typeof body.token === 'string' && body.token) return { token: body.token, source: 'body.token' };
    if (typeof body.apptoken === 'string' && body.apptoken) return { token: body.apptoken, source: 'body.apptoken' };
  }
  return undefined;
}

/** The id a token's quotas are counted under (HTTP rate limits, send-event, history): its SHA-256, so the token itself never becomes a Redis key. */
export function tokenQuotaId(token: string): string {
  return crypto.createHash('sha256').update(token).digest('base64url');
}

/**
 * The device behind the request's KV token (AppInstallService.lookupToken: throttled per
 * client IP, a 429 past RATE_LIMIT_TOKEN_FAILURES failed lookups). Called by the rate
 * limiter (which counts only tokens that exist) and again by kvAuth: the answer is kept for
 * the request, so the token is looked up (and a failure counted) once, unless this worker
 * heard of a revocation or an update meanwhile (the token cache's generation moved): then a
 * token found is looked up again, so a revocation that arrived while the limiter counted
 * is seen.
 */
export async function lookupKvToken(ctx: Context, token: string): Promise<TokenInfo | null> {
  const generation = ctx.app.tokenCache.generation;
  const memo = ctx.state.kvTokenLookup as { token: string; info: TokenInfo | null; generation: number } | undefined;
  if (memo && memo.token === token && (memo.info === null || memo.generation === generation)) return memo.info;
  const info = await ctx.service.appInstall.lookupToken(token, ctx.clientIp);
  ctx.state.kvTokenLookup = { token, info, generation };
  return info;
}
