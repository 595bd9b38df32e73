import { performance } from 'node:perf_hooks';

/** Query parameters that carry credentials (KV tokens, passwords, OAuth codes and tokens). */
const SECRET_PARAMS = new Set([ 'token', 'apptoken', 'password', 'currentpassword', 'newpassword', 'refresh_token', 'access_token', 'code' ]);

/** `/apps/tokens/<token>/…`: the token is the path segment (router paths are case-insensitive). */
const TOKEN_IN_PATH = /^(\/apps\/tokens\/)[^/?]+/i;

function paramName(raw: string): string {
  let name = raw.replace(/\+/g, ' ');
  try {
    name = decodeURIComponent(name);
  } catch {
    // A malformed escape: compared as sent.
  }
  // `token[]=…`, `token[a]=…` carry the secret as well.
  const bracket = name.indexOf('[');
  return (bracket > 0 ? name.slice(0, bracket) : name).toLowerCase();
}

/**
 * The URL as it may be written to a log: the token segment of `/apps/tokens/<token>/…`
 * and the values of credential query parameters (token, apptoken, password,
 * currentPassword, newPassword, refresh_token, access_token, code) become `***`.
 */
export function redactUrl(url: string): string {
  const q = url.indexOf('?');
  const path = (q < 0 ? url : url.slice(0, q)).replace(TOKEN_IN_PATH, '$1***');
  if (q < 0) return path;
  const query = url.slice(q + 1).split('&').map(part => {
    const eq = part.indexOf('=');
    const name = eq < 0 ? part : part.slice(0, eq);
    return SECRET_PARAMS.has(paramName(name)) ? `${name}=***` : part;
  });
  return `${path}?${query.join('&')}`;
}

interface LoggedContext {
  userId?: string;
  ip?: string;
  tracer?: { traceId?: string };
  performanceStarttime?: number;
  starttime?: number;
  method?: string;
  url?: string;
}

/**
 * The prefix egg writes before every line logged for a request
 * (`[$userId/$ip/$traceId/$use_ms $method $url]`, as egg-logger's default) with the URL
 * redacted. Used by every context log line: `ctx.logger`/`ctx.coreLogger` (app.ts
 * installs it as the ContextLogger's `paddingMessage`) and the app's loggers while a
 * request is being served (`config.logger.paddingMessageFormatter`).
 */
export function logPadding(context: object): string {
  const ctx = context as LoggedContext;
  let use = 0;
  if (ctx.performanceStarttime) use = Math.floor((performance.now() - ctx.performanceStarttime) * 1000) / 1000;
  else if (ctx.starttime) use = Date.now() - ctx.starttime;
  return `[${ctx.userId || '-'}/${ctx.ip}/${ctx.tracer?.traceId || '-'}/${use}ms ${ctx.method} ${redactUrl(ctx.url ?? '')}]`;
}
