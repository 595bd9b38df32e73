import type { Context } from 'egg';
import { unauthorized } from '../lib/errors';
import { extractKvToken } from '../lib/kvToken';

/**
 * KV token authentication for every /kv route: resolves the token to its device
 * (ctx.kvToken). A token taken from the body is removed from it, so it is never
 * stored as part of a value.
 */
export default () => async function kvAuth(ctx: Context, next: () => Promise<void>) {
  const found = extractKvToken(ctx);
  if (!found) throw unauthorized('需要提供有效的token');
  const info = await ctx.service.appInstall.resolveToken(found.token);
  if (!info) throw unauthorized('无效的token');
  if (found.source === 'body.token' || found.source === 'body.apptoken') {
    const body = (ctx.request as { body: Record<string, unknown> }).body;
    delete body[found.source === 'body.token' ? 'token' : 'apptoken'];
  }
  ctx.kvToken = info;
  await next();
};
