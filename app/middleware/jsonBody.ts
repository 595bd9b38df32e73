import type { Context } from 'egg';
import { badRequest } from '../lib/errors';

/**
 * KV writes take a JSON document whatever the Content-Type (device scripts often
 * send `curl -d` bodies as form or text). A body egg did not parse as JSON is
 * parsed here; `ctx.state.hasBody` tells whether any content was sent at all.
 */
export default () => async function jsonBody(ctx: Context, next: () => Promise<void>) {
  const req = ctx.request as { body?: unknown; rawBody?: string };
  const raw = typeof req.rawBody === 'string' ? req.rawBody : '';
  ctx.state.hasBody = raw.trim() !== '';
  if (ctx.state.hasBody && !ctx.is('json')) {
    try {
      req.body = JSON.parse(raw);
    } catch {
      throw badRequest('请提供有效的JSON值', null, 'INVALID_JSON');
    }
  } else if (!ctx.state.hasBody) {
    req.body = undefined;
  }
  await next();
};
