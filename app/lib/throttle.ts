import type { Context } from 'egg';
import { HttpError } from './errors';

/**
 * The failed-attempt throttle shared by every password check (device passwords in
 * uuidAuth, namespace logins in POST /apps/auth/token), counted in the shared
 * rate-limit windows (cluster-wide):
 * - per client IP and target (`<ip>|<target>`): once `RATE_LIMIT_PASSWORD` failures
 *   are counted, every attempt of that IP on that target, right or wrong, answers 429
 *   until the window ends;
 * - per target alone, from every IP together: once `RATE_LIMIT_PASSWORD_TARGET`
 *   failures are counted, every attempt on the target answers 429 until the window
 *   ends (many addresses guessing one device's password).
 * `0` disables either bound.
 */
export interface FailureThrottle {
  /** Throws the 429 once a limit of failures is reached. Call before checking the password. */
  check(): Promise<void>;
  /** Counts one failure. Call when the password did not match. */
  fail(): Promise<void>;
}

export function failureThrottle(ctx: Context, bucket: string, ip: string, target: string): FailureThrottle {
  const label = `throttle:${bucket}`;
  const bounds = () => {
    const { password, passwordTarget, windowMs } = ctx.app.settings.rateLimit;
    return [
      { limit: password, bucket, id: `${ip}|${target}` },
      { limit: passwordTarget, bucket: `${bucket}:all`, id: target },
    ].filter(b => b.limit > 0).map(b => ({ ...b, windowMs }));
  };
  return {
    async check() {
      for (const b of bounds()) {
        const failures = await failOpen(ctx, label, () => ctx.app.sharedState.ratePeek(b.bucket, b.id));
        if (failures && failures.count >= b.limit) throw tooManyAttempts(b.limit, b.windowMs, failures.resetMs);
      }
    },
    async fail() {
      for (const b of bounds()) await failOpen(ctx, label, () => ctx.app.sharedState.rateHit(b.bucket, b.id, b.windowMs));
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
