import type { Application } from 'egg';
import { HttpError } from './errors';

/**
 * The failed-attempt throttle shared by every password check (device passwords in
 * uuidAuth, namespace logins in POST /apps/auth/token) and by KV token lookups (unknown
 * tokens per client IP, HTTP and join-token: app/service/appInstall.ts), counted in the
 * shared rate-limit windows (cluster-wide):
 * - passwords per client IP and target (`<ip>|<target>`): once `RATE_LIMIT_PASSWORD`
 *   failures are counted, every attempt of that IP on that target, right or wrong,
 *   answers 429 until the window ends;
 * - passwords per target alone, from every IP together: once `RATE_LIMIT_PASSWORD_TARGET`
 *   failures are counted, every attempt on the target answers 429 until the window
 *   ends (many addresses guessing one device's password);
 * - token lookups per client IP: once `RATE_LIMIT_TOKEN_FAILURES` unknown tokens are
 *   counted, every lookup from that IP answers 429 (before any query) until the window ends.
 * `0` disables any bound.
 */
export interface FailureThrottle {
  /** Throws the 429 once a limit of failures is reached. Call before checking the password (or looking the token up). */
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
 * Which failures are counted: passwords (`RATE_LIMIT_PASSWORD`, `RATE_LIMIT_PASSWORD_TARGET`,
 * 429 TOO_MANY_ATTEMPTS) or token lookups (`RATE_LIMIT_TOKEN_FAILURES`, the rate limits' 429 RATE_LIMITED).
 */
export type ThrottleKind = 'password' | 'token';

/** `target`: what a password guess attacks (a device id, a namespace); token lookups have none. */
export function failureThrottle(ctx: ThrottleContext, bucket: string, ip: string, target?: string, kind: ThrottleKind = 'password'): FailureThrottle {
  const label = `throttle:${bucket}`;
  const bounds = () => {
    const { password, passwordTarget, tokenFailures, windowMs } = ctx.app.settings.rateLimit;
    const list = kind === 'token' || target === undefined
      ? [{ limit: kind === 'token' ? tokenFailures : password, bucket, id: ip }]
      : [
        { limit: password, bucket, id: `${ip}|${target}` },
        { limit: passwordTarget, bucket: `${bucket}:all`, id: target },
      ];
    return list.filter(b => b.limit > 0).map(b => ({ ...b, windowMs }));
  };
  return {
    async check() {
      for (const b of bounds()) {
        const failures = await failOpen(ctx, label, () => ctx.app.sharedState.ratePeek(b.bucket, b.id));
        if (failures && failures.count >= b.limit) throw tooManyAttempts(b.limit, b.windowMs, failures.resetMs, kind);
      }
    },
    async fail() {
      for (const b of bounds()) await failOpen(ctx, label, () => ctx.app.sharedState.rateHit(b.bucket, b.id, b.windowMs));
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
