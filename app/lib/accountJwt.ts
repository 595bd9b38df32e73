/**
 * Account access tokens (§8): HS256 JWTs signed and verified with `jose` (a maintained,
 * dependency-free JOSE implementation; it checks `alg`, `iss`, `aud`, `exp` and `nbf` for us).
 * This module is the one verification path: every middleware that accepts an account token
 * (accountAuth, uuidAuth, the /auto-auth routes) calls `verifyAccessToken` through
 * AccountsService.authenticate(); there is no legacy fallback.
 *
 * Refresh tokens are opaque random strings (`<base64url account id>.<32 random bytes>`):
 * only their SHA-256 is stored (accounts.refreshTokenHash), so a database leak yields none.
 */
import crypto from 'node:crypto';
import { SignJWT, jwtVerify, errors as joseErrors } from 'jose';

export const ISSUER = 'ClassworksKV';
export const AUDIENCE = 'classworks-client';
const ALG = 'HS256';

export interface AccessClaims {
  accountId: string;
  tokenVersion: number;
  provider: string;
  /** Token id: what logout revokes. */
  jti: string;
  /** Seconds since the epoch. */
  iat: number;
  exp: number;
}

/** Why a token was refused: `expired` (401 JWT_EXPIRED) or anything else (`invalid`). */
export class AccessTokenError extends Error {
  constructor(readonly reason: 'expired' | 'invalid') {
    super(reason);
    this.name = 'AccessTokenError';
  }
}

const keys = new Map<string, Uint8Array>();
function key(secret: string): Uint8Array {
  let k = keys.get(secret);
  if (!k) {
    k = new TextEncoder().encode(secret);
    keys.set(secret, k);
  }
  return k;
}

export async function signAccessToken(
  secret: string,
  claims: { accountId: string; tokenVersion: number; provider: string },
  ttlSec: number,
  now = Math.floor(Date.now() / 1000),
): Promise<string> {
  return new SignJWT({ type: 'access', accountId: claims.accountId, tokenVersion: claims.tokenVersion, provider: claims.provider })
    .setProtectedHeader({ alg: ALG, typ: 'JWT' })
    .setSubject(claims.accountId)
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setJti(crypto.randomBytes(16).toString('hex'))
    .setIssuedAt(now)
    .setExpirationTime(now + ttlSec)
    .sign(key(secret));
}

/** Verifies signature, algorithm, issuer, audience, lifetime and the claims' shape. */
export async function verifyAccessToken(secret: string, token: string): Promise<AccessClaims> {
  let payload;
  try {
    ({ payload } = await jwtVerify(token, key(secret), { algorithms: [ ALG ], issuer: ISSUER, audience: AUDIENCE }));
  } catch (err) {
    throw new AccessTokenError(err instanceof joseErrors.JWTExpired ? 'expired' : 'invalid');
  }
  const { type, accountId, tokenVersion, provider, jti, iat, exp } = payload as Record<string, unknown>;
  if (type !== 'access' || typeof accountId !== 'string' || !accountId || payload.sub !== accountId ||
    !Number.isInteger(tokenVersion) || typeof jti !== 'string' || typeof iat !== 'number' || typeof exp !== 'number') {
    throw new AccessTokenError('invalid');
  }
  return { accountId, tokenVersion: tokenVersion as number, provider: typeof provider === 'string' ? provider : '', jti, iat, exp };
}

/** A JWS compact serialization (three base64url parts): how uuidAuth tells an account token from anything else. */
export function looksLikeJwt(token: string): boolean {
  return /^[\w-]+\.[\w-]+\.[\w-]+$/.test(token);
}

/** `Authorization: Bearer <t>` (case-insensitive scheme), or undefined. */
export function bearer(header: string | undefined): string | undefined {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  return m ? m[1] : undefined;
}

export function newRefreshToken(accountId: string): string {
  return `${Buffer.from(accountId).toString('base64url')}.${crypto.randomBytes(32).toString('base64url')}`;
}

/** The account id inside a refresh token, or undefined when it is not one of ours. */
export function refreshTokenAccountId(token: string): string | undefined {
  const m = /^([\w-]{1,300})\.([\w-]{43})$/.exec(token);
  if (!m) return undefined;
  const id = Buffer.from(m[1], 'base64url').toString('utf8');
  return id && Buffer.from(id).toString('base64url') === m[1] ? id : undefined;
}

export function hashRefreshToken(token: string): string {
  return crypto.createHash('sha256').update(token).digest('hex');
}
