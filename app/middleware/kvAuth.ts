import type { Context } from 'egg';
import { forbidden, unauthorized } from '../lib/errors';
import { extractKvToken, lookupKvToken } from '../lib/kvToken';

/** The KV writes a read-only token may not make (§6.2). */
function isKvWrite(ctx: Context): boolean {
  return ctx.method === 'POST' || ctx.method === 'DELETE' || ctx.method === 'PUT' || ctx.method === 'PATCH';
}

/**
 * KV token authentication for every /kv route: resolves the token to its device
 * (ctx.kvToken). A token taken from the body is removed from it, so it is never
 * stored as part of a value.
 *
 * The read-only rule is enforced here, once, for every write route: a read-only token's
 * write is refused before its body is looked at (a body jsonBody could not parse is
 * answered only after this check, see ctx.state.bodyError).
 */
export default () => async function kvAuth(ctx: Context, next: () => Promise<void>) {
  const found = extractKvToken(ctx);
  if (!found) throw unauthorized('需要提供有效的token');
  // Past RATE_LIMIT_TOKEN_FAILURES unknown tokens from this IP: 429 before any query.
  const info = await lookupKvToken(ctx, found.token);
  if (!info) throw unauthorized('无效的token');
  if (info.isReadOnly && isKvWrite(ctx)) throw forbidden('当前token为只读模式,无法修改数据');
  if (ctx.state.bodyError) throw ctx.state.bodyError;
  if (found.source === 'body.token' || found.source === 'body.apptoken') {
    const body = (ctx.request as { body: Record<string, unknown> }).body;
    delete body[found.source === 'body.token' ? 'token' : 'apptoken'];
  }
  ctx.kvToken = info;
  await next();
};
