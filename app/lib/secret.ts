import crypto from 'node:crypto';

const sha256 = (s: string) => crypto.createHash('sha256').update(s).digest();

/** Constant-time comparison of a given secret with the expected one (equal-length digests, whatever the lengths of the inputs). */
export function sameSecret(given: string, expected: string): boolean {
  return crypto.timingSafeEqual(sha256(given), sha256(expected));
}

/** The token of an `Authorization: Bearer <token>` header, or undefined. */
export function bearerToken(header: string): string | undefined {
  const t = /^Bearer\s+(.+)$/i.exec(header)?.[1]?.trim();
  return t || undefined;
}
