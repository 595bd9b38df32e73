import type { Context } from 'egg';
import { badRequest } from '../lib/errors';
import { extractKvToken } from '../lib/kvToken';

const UNITS: Record<string, number> = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 };

/** "2mb" → bytes (the format config/env.ts accepts for BODY_LIMIT). */
export function sizeInBytes(size: string): number {
  const m = /^(\d+(?:\.\d+)?)(b|kb|mb|gb)?$/i.exec(size.trim());
  if (!m) throw new Error(`invalid size: ${size}`);
  return Math.floor(Number(m[1]) * UNITS[(m[2] ?? 'b').toLowerCase()]);
}

/** Reads a body egg's parser skipped (a Content-Type it does not handle), up to `limit` bytes. */
async function readRaw(ctx: Context, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
    size += buf.length;
    if (size > limit) {
      // Rendered by errorHandler exactly like the parser's own 413.
      throw Object.assign(new Error('request entity too large'), { status: 413, type: 'entity.too.large' });
    }
    chunks.push(buf);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * True when the parsed JSON holds an own `__proto__` key anywhere. egg's JSON parser
 * refuses those (prototype poisoning); bodies parsed here follow the same rule.
 */
function hasProtoKey(value: unknown): boolean {
  const stack: unknown[] = [ value ];
  while (stack.length) {
    const v = stack.pop();
    if (typeof v !== 'object' || v === null) continue;
    if (!Array.isArray(v) && Object.prototype.hasOwnProperty.call(v, '__proto__')) return true;
    for (const child of Object.values(v)) if (typeof child === 'object' && child !== null) stack.push(child);
  }
  return false;
}

/** A body egg's parser skipped: JSON, an object or an array, without `__proto__` keys. */
function parse(raw: string): unknown {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (err) {
    throw badRequest('请求体不是有效的JSON', (err as Error).message, 'INVALID_JSON');
  }
  if (typeof parsed !== 'object' || parsed === null) throw badRequest('请提供有效的JSON值');
  if (hasProtoKey(parsed)) {
    throw badRequest('请求体包含不允许的属性名 __proto__', null, 'FORBIDDEN_PROPERTY');
  }
  return parsed;
}

/**
 * Body of the KV write routes (POST /kv*, see config.jsonBody; it runs before the
 * rate limiter and kvAuth so both see a token sent inside the body). KV writes take a JSON document whatever the
 * Content-Type (device scripts often send `curl -d` bodies as form or text, or as
 * application/octet-stream); a body egg did not parse as JSON is parsed here with
 * the same rules as egg's JSON parser (BODY_LIMIT, `__proto__` keys refused).
 * `ctx.state.hasBody` tells whether any content was sent at all.
 *
 * - no content / only whitespace → body undefined (the controller answers 400 请提供有效的JSON值)
 * - not JSON → 400 请求体不是有效的JSON (INVALID_JSON), as for application/json
 * - a JSON scalar (number, string, boolean, null) → 400 请提供有效的JSON值
 */
export default () => async function jsonBody(ctx: Context, next: () => Promise<void>) {
  const req = ctx.request as { body?: unknown; rawBody?: string };
  let raw = typeof req.rawBody === 'string' ? req.rawBody : undefined;
  if (raw === undefined && (ctx.request.length || ctx.get('transfer-encoding'))) {
    raw = await readRaw(ctx, sizeInBytes(ctx.app.settings.bodyLimit));
  }
  raw = raw ?? '';
  ctx.state.hasBody = raw.trim() !== '';
  if (!ctx.state.hasBody) {
    req.body = undefined;
  } else if (!ctx.is('json')) {
    try {
      req.body = parse(raw);
    } catch (err) {
      // With the token outside the body, kvAuth answers first (a read-only token's write is
      // a 403 whatever its body); without one, the body itself may hold it: answer now.
      req.body = undefined;
      if (!extractKvToken(ctx)) throw err;
      ctx.state.bodyError = err;
    }
  }
  await next();
};
