import assert from 'node:assert';

/** What a supertest response exposes to the assertions below. */
interface Answer {
  status: number;
  headers: Record<string, string>;
  body: unknown;
}

const KINDS = {
  /** A rate limit (RATE_LIMIT_*): app/middleware/rateLimit.ts. */
  requests: { message: '请求过于频繁，请稍后再试', code: 'RATE_LIMITED' },
  /** A failed-password throttle (device passwords, namespace logins): app/lib/throttle.ts. */
  attempts: { message: '密码尝试次数过多，请稍后再试', code: 'TOO_MANY_ATTEMPTS' },
};

/** The contract's 429: JSON error body plus RateLimit-Policy, RateLimit and Retry-After for a limit of `limit` a minute. */
export function assertTooMany(res: Answer, limit: number, kind: keyof typeof KINDS) {
  assert.strictEqual(res.status, 429);
  assert.match(res.headers['content-type'], /application\/json/);
  const retryAfter = Number(res.headers['retry-after']);
  assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 60, res.headers['retry-after']);
  assert.deepStrictEqual(res.body, {
    success: false,
    message: KINDS[kind].message,
    details: { limit, windowSeconds: 60, retryAfter },
    code: KINDS[kind].code,
  });
  assert.strictEqual(res.headers['ratelimit-policy'], `${limit};w=60`);
  assert.strictEqual(res.headers.ratelimit, `limit=${limit}, remaining=0, reset=${retryAfter}`);
}
