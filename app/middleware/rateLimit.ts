import type { Context } from 'egg';
import { HttpError } from '../lib/errors';
import { extractKvToken, lookupKvToken, tokenQuotaId } from '../lib/kvToken';

type Bucket = 'ip' | 'kvRead' | 'kvWrite' | 'kvDelete' | 'kvBatch';

/** Which quota a request counts against, and whose it is; undefined = not counted. */
function classify(ctx: Context): { bucket: Bucket; id: string; token?: string } | undefined {
  const p = ctx.path;
  if (p === '/kv' || p.startsWith('/kv/')) {
    // The jsonBody middleware ran before: a token inside a text or form body is visible.
    const found = extractKvToken(ctx);
    if (!found) return undefined; // answered 401 by kvAuth, nothing to count against
    const token = found.token;
    const id = tokenQuotaId(token);
    const m = ctx.method;
    if (m === 'GET' || m === 'HEAD') return { bucket: 'kvRead', id, token };
    if (m === 'DELETE') return { bucket: 'kvDelete', id, token };
    if (m === 'POST' && p === '/kv/_batchimport') return { bucket: 'kvBatch', id, token };
    return { bucket: 'kvWrite', id, token };
  }
  if (/^\/(devices|apps|auth|auto-auth|accounts)(\/|$)/.test(p) && ctx.method !== 'OPTIONS') {
    return { bucket: 'ip', id: ctx.clientIp };
  }
  return undefined;
}

/**
 * Fixed one-minute windows shared by every worker (Redis) or kept in process
 * (embedded). Answers carry RateLimit-Policy / RateLimit headers; a refused one is
 * a JSON 429 with Retry-After. If Redis is unreachable the request is let through.
 *
 * A KV token's quota is counted only once the token is known to exist: a client
 * presenting random tokens would otherwise get a fresh quota (and a fresh counter) for
 * each. Unknown tokens are counted per client IP by the lookup itself
 * (RATE_LIMIT_TOKEN_FAILURES, app/service/appInstall.ts lookupToken) and answered 401
 * by kvAuth, or 429 past that limit.
 */
export default () => async function rateLimit(ctx: Context, next: () => Promise<void>) {
  const target = classify(ctx);
  const settings = ctx.app.settings.rateLimit;
  const limit = target ? settings[target.bucket] : 0;
  if (!target || limit <= 0) return next();
  if (target.token !== undefined && !await lookupKvToken(ctx, target.token)) return next();

  let hit;
  try {
    hit = await ctx.app.sharedState.rateHit(target.bucket, target.id, settings.windowMs);
  } catch (err) {
    ctx.logger.warn('[rateLimit] shared state unavailable, not limiting: %s', (err as Error).message);
    return next();
  }
  const reset = Math.max(1, Math.ceil(hit.resetMs / 1000));
  const windowS = Math.round(settings.windowMs / 1000);
  ctx.set('RateLimit-Policy', `${limit};w=${windowS}`);
  ctx.set('RateLimit', `limit=${limit}, remaining=${Math.max(0, limit - hit.count)}, reset=${reset}`);
  if (hit.count > limit) {
    throw new HttpError(429, '请求过于频繁，请稍后再试', {
      code: 'RATE_LIMITED',
      details: { limit, windowSeconds: windowS, retryAfter: reset },
      headers: { 'Retry-After': String(reset) },
    });
  }
  await next();
};
