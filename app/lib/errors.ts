/**
 * The one error type services and controllers throw. The error-handler middleware
 * renders it as the contract's error body: {success:false, message, details, code?}.
 */
export class HttpError extends Error {
  readonly status: number;
  readonly details: unknown;
  readonly code?: string;
  readonly headers?: Record<string, string>;

  constructor(status: number, message: string, opts: { details?: unknown; code?: string; headers?: Record<string, string> } = {}) {
    super(message);
    this.name = 'HttpError';
    this.status = status;
    this.details = opts.details ?? null;
    this.code = opts.code;
    this.headers = opts.headers;
  }
}

export const badRequest = (message: string, details?: unknown, code?: string) => new HttpError(400, message, { details, code });
export const unauthorized = (message: string) => new HttpError(401, message);
export const forbidden = (message: string) => new HttpError(403, message);
export const notFound = (message: string) => new HttpError(404, message);
export const conflict = (message: string) => new HttpError(409, message);

/** A backing service (database, Redis) cannot be reached. */
export class ServiceUnavailableError extends HttpError {
  constructor(service: 'database' | 'redis', cause?: unknown) {
    super(503, service === 'database' ? '数据库服务不可用，请稍后重试' : 'Redis 服务不可用，请稍后重试', {
      code: 'SERVICE_UNAVAILABLE',
      details: { service },
    });
    if (cause) (this as { cause?: unknown }).cause = cause;
  }
}

const DB_UNAVAILABLE = new Set([
  'SequelizeConnectionError',
  'SequelizeConnectionRefusedError',
  'SequelizeConnectionTimedOutError',
  'SequelizeConnectionAcquireTimeoutError',
  'SequelizeHostNotFoundError',
  'SequelizeHostNotReachableError',
  'SequelizeAccessDeniedError',
  'ConnectionAcquireTimeoutError',
]);

const DB_UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENOTFOUND', 'PROTOCOL_CONNECTION_LOST',
  // No answer within DB_QUERY_TIMEOUT_MS (app/lib/queryTimeout.ts, or mysql2's own `timeout`).
  'PROTOCOL_SEQUENCE_TIMEOUT',
  'ER_SERVER_SHUTDOWN', 'ER_CON_COUNT_ERROR', 'POOL_CLOSED', 'SQLITE_BUSY', 'SQLITE_IOERR', 'SQLITE_CANTOPEN', 'SQLITE_FULL',
]);

type DriverError = { code?: string; fatal?: boolean };

/**
 * True when a driver's own error (mysql2, sqlite3) means the database is unreachable:
 * a connection-level code, or a mysql2 error marked `fatal` (the connection itself is
 * gone: lost, timed out, or already closed when the query was sent).
 */
export function isDriverUnavailable(err: unknown): boolean {
  if (!err || typeof err !== 'object') return false;
  const e = err as DriverError;
  return e.fatal === true || (!!e.code && DB_UNAVAILABLE_CODES.has(e.code));
}

/** True when `err` (Sequelize's, wrapping a driver error) means the database is unreachable (not that the query was wrong). */
export function isDatabaseUnavailable(err: unknown): boolean {
  if (!err || typeof err !== 'object') return false;
  const e = err as { name?: string; parent?: DriverError; original?: DriverError } & DriverError;
  if (e.name && DB_UNAVAILABLE.has(e.name)) return true;
  if (!(e.name ?? '').startsWith('Sequelize')) return false;
  return isDriverUnavailable(e.parent ?? e.original ?? e);
}

/** True when `err` comes from an unreachable Redis (ioredis). */
export function isRedisUnavailable(err: unknown): boolean {
  if (!err || typeof err !== 'object') return false;
  const e = err as { name?: string; message?: string };
  if (e.name === 'MaxRetriesPerRequestError') return true;
  const m = e.message ?? '';
  return /Stream isn't writeable|Connection is closed|enableOfflineQueue|ECONNREFUSED|Command timed out/.test(m);
}

/**
 * An error as one log-safe line: `name [code]: message`. Not the stack, not the error's
 * other properties: a Sequelize error carries the failed query with its values (`sql`,
 * `parent.sql`), and those hold KV tokens (token lookups) and users' event contents.
 */
export function describeError(err: unknown): string {
  if (!err || typeof err !== 'object') return String(err);
  const e = err as { name?: unknown; code?: unknown; message?: unknown; parent?: { code?: unknown } };
  const name = typeof e.name === 'string' ? e.name : 'Error';
  const code = e.code ?? e.parent?.code;
  const message = typeof e.message === 'string' ? e.message : '';
  return `${name}${typeof code === 'string' || typeof code === 'number' ? ` [${code}]` : ''}: ${message}`;
}

/**
 * An error as it may be logged with its stack: a new Error carrying only the name, the
 * code and the message (as describeError()) and the stack frames of `err`. Loggers print
 * every own property of an error; a Sequelize error's are the failed query with its
 * values (`sql`, `parameters`, `parent.sql`, `original.sql`), mysql2's the `sql` it
 * sent: a token lookup that failed would log the token.
 */
export function logSafeError(err: unknown): Error {
  const safe = new Error(describeError(err).replace(/^[^:]*: /, ''));
  const e = (err && typeof err === 'object' ? err : {}) as { name?: unknown; code?: unknown; parent?: { code?: unknown }; stack?: unknown };
  safe.name = typeof e.name === 'string' ? e.name : 'Error';
  const code = e.code ?? e.parent?.code;
  if (typeof code === 'string' || typeof code === 'number') (safe as Error & { code?: unknown }).code = code;
  const frames = typeof e.stack === 'string' ? e.stack.split('\n').filter(l => /^\s+at /.test(l)) : [];
  safe.stack = [ describeError(err), ...frames ].join('\n');
  return safe;
}
