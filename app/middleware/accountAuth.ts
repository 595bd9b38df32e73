import type { Context } from 'egg';
import { unauthorized } from '../lib/errors';
import { bearer } from '../lib/accountJwt';
import type { AccountSession } from '../service/accounts';

/**
 * Puts an authenticated account session on the context; when the token is close to expiry,
 * the answer carries a fresh one (`X-New-Access-Token`, `X-Token-Refreshed: true`), as in 1.3.
 */
export async function useAccountToken(ctx: Context, token: string): Promise<AccountSession> {
  const session = await ctx.service.accounts.authenticate(token);
  ctx.accountSession = session;
  if (session.renewed) {
    ctx.set('X-New-Access-Token', session.renewed);
    ctx.set('X-Token-Refreshed', 'true');
  }
  return session;
}

/**
 * The account JWT (§8): `Authorization: Bearer <access token>` only. 401 `需要提供有效的JWT token`
 * without one; the rest as AccountsService.authenticate() (the one verification path).
 */
export default () => async function accountAuth(ctx: Context, next: () => Promise<void>) {
  const token = bearer(ctx.get('authorization'));
  if (!token) throw unauthorized('需要提供有效的JWT token');
  await useAccountToken(ctx, token);
  await next();
};
