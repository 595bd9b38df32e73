import type { Context } from 'egg';
import { HttpError, isDatabaseUnavailable, isRedisUnavailable, logSafeError, ServiceUnavailableError } from '../lib/errors';

interface ErrorBody {
  success: false;
  message: string;
  details: unknown;
  code?: string;
  error?: { name: string; stack?: string };
}

/** Turns whatever was thrown into an HttpError of the contract. */
function normalize(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  if (isDatabaseUnavailable(err)) return new ServiceUnavailableError('database', err);
  if (isRedisUnavailable(err)) return new ServiceUnavailableError('redis', err);
  const e = (err ?? {}) as { status?: number; statusCode?: number; type?: string; message?: string; expose?: boolean };
  const status = e.status ?? e.statusCode;
  // egg's bodyParser appends this to every parser error message.
  const message = (e.message ?? '').replace(/, check bodyParser config$/, '');
  // Errors from egg's body parser (raw-body / co-body) and other 4xx http-errors.
  if (status === 413 || e.type === 'entity.too.large') {
    return new HttpError(413, '请求体过大', { code: 'PAYLOAD_TOO_LARGE', details: null });
  }
  if (status === 415 || e.type === 'charset.unsupported' || e.type === 'encoding.unsupported') {
    return new HttpError(415, '不支持的请求体编码或字符集', { code: 'UNSUPPORTED_MEDIA_TYPE', details: message || null });
  }
  if (status === 400 && (err instanceof SyntaxError || e.type === 'entity.parse.failed' || /JSON/i.test(message))) {
    // co-body in strict mode refuses any body not starting with `{` or `[`: a JSON scalar
    // or only whitespace is "no valid JSON value"; anything else is malformed JSON.
    if (/only supports object and array/.test(message)) {
      const raw = (err as { body?: unknown }).body;
      const text = typeof raw === 'string' ? raw : '';
      try {
        if (text.trim() === '' || (JSON.parse(text), true)) return new HttpError(400, '请提供有效的JSON值');
      } catch (parseError) {
        return new HttpError(400, '请求体不是有效的JSON', { code: 'INVALID_JSON', details: (parseError as Error).message });
      }
    }
    // co-body (@hapi/bourne) refuses `__proto__` keys (prototype poisoning).
    if (/forbidden prototype property/.test(message)) {
      return new HttpError(400, '请求体包含不允许的属性名 __proto__', { code: 'FORBIDDEN_PROPERTY' });
    }
    return new HttpError(400, '请求体不是有效的JSON', { code: 'INVALID_JSON', details: message || null });
  }
  if (err instanceof URIError) return new HttpError(400, '请求路径编码无效', { code: 'BAD_REQUEST' });
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return new HttpError(status, message || '请求无效', { code: 'BAD_REQUEST' });
  }
  return new HttpError(500, '服务器内部错误', { code: 'INTERNAL_ERROR' });
}

/**
 * First middleware of the whole chain (see app.ts): renders every error, including
 * egg's body parser errors, as the contract's JSON error body; unmatched routes
 * become 404 `找不到路径: <path>`.
 */
export default () => async function errorHandler(ctx: Context, next: () => Promise<void>) {
  try {
    await next();
    if (ctx.status === 404 && ctx.body == null && !(ctx as any)._matchedRoute) {
      throw new HttpError(404, `找不到路径: ${ctx.path}`);
    }
  } catch (err) {
    const httpError = normalize(err);
    if (httpError.status >= 500) {
      // Name, code, message and stack frames only: never the failed SQL and its values.
      ctx.logger.error(logSafeError(err));
    }
    const body: ErrorBody = { success: false, message: httpError.message, details: httpError.details };
    if (httpError.code) body.code = httpError.code;
    if (httpError.status === 500 && ctx.app.config.env !== 'prod' && err instanceof Error) {
      body.error = { name: err.name, stack: err.stack };
    }
    if (httpError.headers) ctx.set(httpError.headers);
    ctx.status = httpError.status;
    ctx.body = body;
  }
};
