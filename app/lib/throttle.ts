import type { Context } from 'egg';
import { HttpError } from './errors';

/**
 * The failed-attempt throttle shared by every password check (device passwords in
 * uuidAuth, namespace logins in POST /apps/auth/token): failures are counted per
 * bucket and id (client IP + what was attacked) in the shared rate-limit windows;
 * once `RATE_LIMIT_PASSWORD` failures are counted, every attempt, right or wrong,
 * answers 429 until the window ends. `0` disables it.
 */
export interface FailureThrottle {
  /** Throws the 429 once the limit of failures is reached. Call before checking the password. */
  check(): Promise<void>;
  /** Counts one failure. Call when the password did not match. */
  fail(): Promise<void>;
}

export function failureThrottle(ctx: Context, bucket: string, id: string): FailureThrottle {
  const label = `throttle:${bucket}`;
  return {
    async check() {
      const { password: limit, windowMs } = ctx.app.settings.rateLimit;
      if (limit <= 0) return;
      const failures = await failOpen(ctx, label, () => ctx.app.sharedState.ratePeek(bucket, id));
      if (failures && failures.count >= limit) throw tooManyAttempts(limit, windowMs, failures.resetMs);
    },
    async fail() {
      const { password: limit, windowMs } = ctx.app.settings.rateLimit;
      if (limit <= 0) return;
      await failOpen(ctx, label, () => ctx.app.sharedState.rateHit(bucket, id, windowMs));
    },
  };
}

/** Like every rate limit, the throttle lets requests through while shared state (Redis) is unreachable. */
export async function failOpen<T>(ctx: Pick<Context, 'logger'>, label: string, op: () => Promise<T>): Promise<T | undefined> {
  try {
    return await op();
  } catch (err) {
    ctx.logger.warn('[%s] shared state unavailable, not throttling: %s', label, (err as Error).message);
    return undefined;
  }
}

/** The contract's 429: JSON body plus RateLimit-Policy, RateLimit and Retry-After. */
export function tooManyAttempts(limit: number, windowMs: number, resetMs: number): HttpError {
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
