import type { Context } from 'egg';
import { HttpError } from '../lib/errors';
import { bearerToken, sameSecret } from '../lib/secret';

/**
 * Operator-only routes (today `GET /devices/online`, which lists the uuid of every online
 * device; a password-less device's uuid is enough to list its tokens). With `ADMIN_TOKEN`
 * set, `Authorization: Bearer <ADMIN_TOKEN>` is required (header only: a token in a URL
 * ends up in proxies' logs); without it, the route stays open as the contract has it.
 */
export default () => async function adminAuth(ctx: Context, next: () => Promise<void>) {
  const expected = ctx.app.settings.adminToken;
  if (expected) {
    const given = bearerToken(ctx.get('authorization'));
    if (!given || !sameSecret(given, expected)) {
      throw new HttpError(401, '需要管理员令牌', {
        code: 'ADMIN_TOKEN_REQUIRED',
        headers: { 'WWW-Authenticate': 'Bearer realm="admin"' },
      });
    }
  }
  await next();
};
