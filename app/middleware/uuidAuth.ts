import type { Context } from 'egg';
import { badRequest, HttpError, unauthorized } from '../lib/errors';
import { isPlainObject } from '../validator/common';

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/**
 * Device credentials (routes marked uuidAuth in the contract). Resolves the device
 * into ctx.device, then checks its password when it has one. Failed passwords are
 * counted per client IP and device; past the limit the answer is 429.
 */
export default () => async function uuidAuth(ctx: Context, next: () => Promise<void>) {
  const body = (ctx.request as { body?: unknown }).body;
  const sources: Array<[string, string | undefined]> = [
    [ 'path', str(ctx.params?.uuid) ],
    [ 'header', str(ctx.get('x-device-uuid')) ],
    [ 'query', str(ctx.query.uuid) ],
    [ 'body', isPlainObject(body) ? str(body.uuid) : undefined ],
  ];
  const given = sources.filter((s): s is [string, string] => s[1] !== undefined);
  if (given.length === 0) throw badRequest('需要提供设备UUID');
  const uuid = given[0][1];
  if (given.some(([ , v ]) => v !== uuid)) throw badRequest('设备UUID不匹配', { sources: given.map(([ name ]) => name) });
  const device = await ctx.service.device.getByUuid(uuid);

  if (device.password) {
    const password = str(ctx.get('x-device-password')) ?? str(ctx.query.password) ?? str(ctx.query.currentPassword);
    if (password === undefined) throw unauthorized('需要提供密码或JWT token');
    const { rateLimit } = ctx.app.settings;
    const state = ctx.app.sharedState;
    const id = `${ctx.clientIp}|${device.id}`;
    if (rateLimit.password > 0) {
      const failures = await failOpen(ctx, () => state.ratePeek('pwfail', id));
      if (failures && failures.count >= rateLimit.password) throw tooMany(rateLimit.password, rateLimit.windowMs, failures.resetMs);
    }
    if (!await ctx.service.device.checkPassword(device, password)) {
      if (rateLimit.password > 0) await failOpen(ctx, () => state.rateHit('pwfail', id, rateLimit.windowMs));
      throw unauthorized('密码错误');
    }
  }
  ctx.device = device;
  await next();
};

/** Like every rate limit, the password throttle lets requests through while Redis is unreachable. */
async function failOpen<T>(ctx: Context, op: () => Promise<T>): Promise<T | undefined> {
  try {
    return await op();
  } catch (err) {
    ctx.logger.warn('[uuidAuth] shared state unavailable, not throttling: %s', (err as Error).message);
    return undefined;
  }
}

/** The contract's 429: JSON body plus RateLimit-Policy, RateLimit and Retry-After. */
function tooMany(limit: number, windowMs: number, resetMs: number) {
  const seconds = Math.max(1, Math.ceil(resetMs / 1000));
  const windowSeconds = Math.round(windowMs / 1000);
  return new HttpError(429, '密码尝试次数过多，请稍后再试', {
    code: 'TOO_MANY_ATTEMPTS',
    details: { limit, windowSeconds, retryAfter: seconds },
    headers: {
      'RateLimit-Policy': `${limit};w=${windowSeconds}`,
      RateLimit: `limit=${limit}, remaining=0, reset=${seconds}`,
      'Retry-After': String(seconds),
    },
  });
}
