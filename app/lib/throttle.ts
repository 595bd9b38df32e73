import type { Application } from 'egg';
import { HttpError } from './errors';

/**
 * The failed-attempt throttle shared by every password check (device passwords in
 * uuidAuth, namespace logins in POST /apps/auth/token) and by KV token lookups (unknown
 * tokens per client IP, HTTP and join-token: app/service/appInstall.ts): failures are
 * counted per bucket and id (client IP + what was attacked) in the shared rate-limit
 * windows; once the limit of failures is counted (`RATE_LIMIT_PASSWORD`,
 * `RATE_LIMIT_TOKEN_FAILURES`), every attempt, right or wrong, answers 429 until the
 * window ends. `0` disables it.
 */
export interface FailureThrottle {
  /** Throws the 429 once the limit of failures is reached. Call before checking the password (or looking the token up). */
  check(): Promise<void>;
  /** Counts one failure. Call when the password did not match (the token was not found). */
  fail(): Promise<void>;
}

/** What the throttle needs of a request context (an anonymous one, or `{ app, logger }` for sockets). */
export interface ThrottleContext {
  app: Application;
  logger: { warn(message: string, ...args: unknown[]): void };
}

/**
 * Which failures are counted: passwords (`RATE_LIMIT_PASSWORD`, 429 TOO_MANY_ATTEMPTS) or
 * token lookups (`RATE_LIMIT_TOKEN_FAILURES`, the rate limits' 429 RATE_LIMITED).
 */
export type ThrottleKind = 'password' | 'token';

export function failureThrottle(ctx: ThrottleContext, bucket: string, id: string, kind: ThrottleKind = 'password'): FailureThrottle {
  const label = `throttle:${bucket}`;
  const limitOf = () => {
    const { rateLimit } = ctx.app.settings;
    return { limit: kind === 'password' ? rateLimit.password : rateLimit.tokenFailures, windowMs: rateLimit.windowMs };
  };
  return {
    async check() {
      const { limit, windowMs } = limitOf();
      if (limit <= 0) return;
      const failures = await failOpen(ctx, label, () => ctx.app.sharedState.ratePeek(bucket, id));
      if (failures && failures.count >= limit) throw tooManyAttempts(limit, windowMs, failures.resetMs, kind);
    },
    async fail() {
      const { limit, windowMs } = limitOf();
      if (limit <= 0) return;
      await failOpen(ctx, label, () => ctx.app.sharedState.rateHit(bucket, id, windowMs));
    },
  };
}

/** Like every rate limit, the throttle lets requests through while shared state (Redis) is unreachable. */
export async function failOpen<T>(ctx: Pick<ThrottleContext, 'logger'>, label: string, op: () => Promise<T>): Promise<T | undefined> {
  try {
    return await op();
  } catch (err) {
    ctx.logger.warn('[%s] shared state unavailable, not throttling: %s', label, (err as Error).message);
    return undefined;
  }
}

const REFUSALS: Record<ThrottleKind, { message: string; code: string }> = {
  password: { message: '密码尝试次数过多，请稍后再试', code: 'TOO_MANY_ATTEMPTS' },
  // The rate limits' own answer (app/middleware/rateLimit.ts): to the client it is one.
  token: { message: '请求过于频繁，请稍后再试', code: 'RATE_LIMITED' },
};

/** The contract's 429: JSON body plus RateLimit-Policy, RateLimit and Retry-After. */
export function tooManyAttempts(limit: number, windowMs: number, resetMs: number, kind: ThrottleKind = 'password'): HttpError {
  const seconds = Math.max(1, Math.ceil(resetMs / 1000));
  const windowSeconds = Math.round(windowMs / 1000);
  return new HttpError(429, REFUSALS[kind].message, {
    code: REFUSALS[kind].code,
    details: { limit, windowSeconds, retryAfter: seconds },
    headers: {
      'RateLimit-Policy': `${limit};w=${windowSeconds}`,
      RateLimit: `limit=${limit}, remaining=0, reset=${seconds}`,
      'Retry-After': String(seconds),
    },
  });
}
