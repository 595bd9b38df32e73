import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Readable, Transform } from 'node:stream';
import zlib from 'node:zlib';
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

/** The Content-Types egg's JSON parser (koa-bodyparser) reads as JSON. */
const JSON_TYPES = [ 'application/json', 'application/json-patch+json', 'application/vnd.api+json', 'application/csp-report', 'application/scim+json' ];

/** An error shaped like the http-errors egg's parser throws; errorHandler renders it the same way. */
function parserError(status: number, message: string, type?: string): Error {
  return Object.assign(new Error(message), { status, type, expose: true });
}

/** Rendered by errorHandler exactly like egg's parser's own 413 (`entity.too.large`). */
const tooLarge = () => parserError(413, 'request entity too large', 'entity.too.large');

/**
 * Drops what is left of a refused body without buffering it, so the client can finish
 * sending and read the answer on a kept-alive connection. A client still sending more
 * than `limit` further bytes once the answer is out is disconnected.
 */
function discardRest(req: IncomingMessage, res: ServerResponse, limit: number) {
  let dropped = 0;
  req.on('data', (chunk: Buffer) => {
    dropped += chunk.length;
    if (dropped > limit && res.writableFinished) req.socket?.destroy();
  });
  req.resume();
}

/**
 * Reads the body as egg's parser (co-body / raw-body) did: `Content-Encoding` gzip,
 * deflate or br inflated, identity as is, anything else 415; at most `limit` bytes
 * (after inflating). A declared `Content-Length` over the limit is refused before
 * anything is read, a body that grows past it as soon as it does; either way the rest is
 * discarded, never buffered.
 */
function readBody(ctx: Context, limit: number): Promise<Buffer> {
  const req = ctx.req;
  const encoding = req.headers['content-encoding'] || 'identity';
  let source: Readable = req;
  let inflater: Transform | undefined;
  if (encoding === 'identity') {
    if (Number(req.headers['content-length']) > limit) {
      discardRest(req, ctx.res, limit);
      return Promise.reject(tooLarge());
    }
  } else if (encoding === 'gzip' || encoding === 'deflate' || encoding === 'br') {
    inflater = encoding === 'br' ? zlib.createBrotliDecompress() : zlib.createUnzip();
    source = req.pipe(inflater);
  } else {
    discardRest(req, ctx.res, limit);
    return Promise.reject(parserError(415, `Unsupported Content-Encoding: ${encoding}`, 'encoding.unsupported'));
  }

  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    let settled = false;
    const cleanup = () => {
      source.off('data', onData);
      source.off('end', onEnd);
      source.off('error', onSourceError);
      req.off('aborted', onAborted);
      req.off('close', onClose);
    };
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      cleanup();
      if (inflater) {
        req.unpipe(inflater);
        inflater.destroy();
      }
      if (!req.complete) discardRest(req, ctx.res, limit);
      reject(err);
    };
    function onData(chunk: Buffer) {
      received += chunk.length;
      if (received > limit) fail(tooLarge());
      else chunks.push(chunk);
    }
    function onEnd() {
      if (settled) return;
      settled = true;
      cleanup();
      resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, received));
    }
    // A corrupt gzip/deflate stream: 400, as egg's parser answered.
    function onSourceError(err: Error) {
      fail(parserError(400, err.message));
    }
    function onAborted() {
      fail(parserError(400, 'request aborted', 'request.aborted'));
    }
    function onClose() {
      if (!req.complete) onAborted();
    }
    source.on('data', onData);
    source.on('end', onEnd);
    source.on('error', onSourceError);
    req.on('aborted', onAborted);
    req.on('close', onClose);
  });
}

/** The body as text: UTF-8 whatever the charset parameter says, a leading BOM dropped (as egg's parser). */
async function readText(ctx: Context): Promise<string> {
  const req = ctx.req;
  // Nothing announced: no body to wait for.
  if (!Number(req.headers['content-length']) && !req.headers['transfer-encoding']) return '';
  const text = (await readBody(ctx, sizeInBytes(ctx.app.settings.bodyLimit))).toString('utf8');
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

/**
 * JSON, an object or an array (egg's JSON parser's strict mode). A value is stored as
 * the JSON it is, whatever its keys: `__proto__`, `constructor`, `prototype` are data
 * like any other key (JSON.parse makes them own properties; values are only validated,
 * serialized and stored, never merged into other objects: no prototype pollution).
 */
function parse(raw: string): unknown {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (err) {
    throw badRequest('请求体不是有效的JSON', (err as Error).message, 'INVALID_JSON');
  }
  if (typeof parsed !== 'object' || parsed === null) throw badRequest('请提供有效的JSON值');
  return parsed;
}

/** URL-encoded fields (a DELETE may carry its token so); a repeated field is an array, as egg's parser gave it. */
function parseForm(raw: string): Record<string, string | string[]> {
  const fields: Record<string, string | string[]> = {};
  for (const [ name, value ] of new URLSearchParams(raw)) {
    const seen = Object.prototype.hasOwnProperty.call(fields, name) ? fields[name] : undefined;
    const next = seen === undefined ? value : Array.isArray(seen) ? [ ...seen, value ] : [ seen, value ];
    Object.defineProperty(fields, name, { value: next, enumerable: true, writable: true, configurable: true });
  }
  return fields;
}

/**
 * Body of the KV writes (`POST` and `DELETE` on /kv*, see config.jsonBody). egg's own
 * body parser skips these routes (config.bodyParser.ignore), so that a read-only token's
 * write is answered 403 before anything about its body (§6.2): every body is read here.
 * It runs before the rate limiter and kvAuth so both see a token sent inside the body.
 *
 * `POST` bodies are a JSON document whatever the Content-Type (device scripts often send
 * `curl -d` bodies as form or text, or as application/octet-stream), parsed with the rules
 * of egg's JSON parser: BODY_LIMIT, UTF-8 (any keys, `__proto__` included, are data). `ctx.state.hasBody`
 * tells whether any content was sent at all.
 * - no content / only whitespace → body undefined (the controller answers 400 请提供有效的JSON值)
 * - not JSON → 400 请求体不是有效的JSON (INVALID_JSON)
 * - a JSON scalar (number, string, boolean, null) → 400 请提供有效的JSON值
 * - over BODY_LIMIT → 413 请求体过大; unknown Content-Encoding → 415
 *
 * `DELETE` bodies are read only when they are JSON or URL-encoded, as egg read them (they
 * can only carry the token).
 *
 * When the token is in a header or the query, every one of these errors waits in
 * `ctx.state.bodyError` until kvAuth has checked the token (a read-only token's write is
 * a 403 whatever its body); without one, the body itself may hold it: answered at once.
 */
export default () => async function jsonBody(ctx: Context, next: () => Promise<void>) {
  const req = ctx.request as { body?: unknown };
  req.body = undefined;
  const tokenOutsideBody = extractKvToken(ctx) !== undefined;
  try {
    if (ctx.method === 'POST') {
      const raw = await readText(ctx);
      ctx.state.hasBody = raw.trim() !== '';
      if (ctx.state.hasBody) req.body = parse(raw);
    } else if (ctx.is(JSON_TYPES)) {
      const raw = await readText(ctx);
      if (raw.trim() !== '') req.body = parse(raw);
    } else if (ctx.is('urlencoded')) {
      req.body = parseForm(await readText(ctx));
    }
  } catch (err) {
    req.body = undefined;
    if (!tokenOutsideBody) throw err;
    ctx.state.bodyError = err;
  }
  await next();
};
