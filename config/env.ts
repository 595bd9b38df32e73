/**
 * The one place where environment variables enter the application.
 *
 * Every variable is parsed and validated here; a malformed value stops the
 * process at start-up with a message naming the variable (so `TRUST_PROXY=flase`
 * never silently becomes `true` or `false`). The rest of the code reads the typed
 * result through `app.config.classworks`.
 */
import path from 'node:path';
import os from 'node:os';

export type DatabaseSettings =
  | { dialect: 'mysql'; url: string }
  | { dialect: 'sqlite'; storage: string };

export interface RateLimitSettings {
  /** Requests per IP per minute on /devices, /apps and /auth (0 disables). */
  ip: number;
  kvRead: number;
  kvWrite: number;
  kvDelete: number;
  kvBatch: number;
  /** Failed password attempts per IP and device per window (0 disables); also failed namespace logins per IP and namespace. */
  password: number;
  /** send-event relays per token per window, cluster-wide (0 disables). */
  events: number;
  /** get-event-history requests per token per window, cluster-wide (0 disables). */
  history: number;
  /**
   * Failed token lookups (unknown KV tokens, HTTP and join-token) per client IP per window,
   * cluster-wide (0 disables). Checked before the database lookup: past it, an uncached
   * token from that IP is answered 429 (HTTP) or `too_many_requests` (socket) without a query.
   */
  tokenFailures: number;
  /** Window length in milliseconds (60 s, as in the contract). */
  windowMs: number;
}

export interface Settings {
  port: number;
  database: DatabaseSettings;
  /** `undefined` means embedded mode: in-process state, one worker. */
  redisUrl?: string;
  /** Allowed CORS origins; `['*']` allows every origin. */
  frontendUrls: string[];
  trustProxy: boolean;
  bodyLimit: string;
  batchLimit: number;
  rateLimit: RateLimitSettings;
  /** Bcrypt cost for new password hashes. */
  bcryptCost: number;
  /** How long a resolved token stays in a worker's cache (ms); 0 disables the cache. */
  tokenCacheTtlMs: number;
  tokenCacheMax: number;
  /** How long a worker remembers that a token does not exist (ms); 0 disables the negative cache. */
  tokenNegativeCacheMs: number;
  /**
   * Packets one socket may send per second, on average (a token bucket of
   * `socketPacketBurst`); packets beyond are refused before any work is done for them
   * (app/lib/socketLimits.ts). 0 disables.
   */
  socketPacketRate: number;
  socketPacketBurst: number;
  /** Socket.IO connections (websocket or polling, any protocol version) one client IP may hold on a worker (0 disables). */
  socketMaxPerIp: number;
  /** Bytes of stored values each worker keeps for `GET /kv/:key` (0 disables; see app/lib/valueCache.ts). */
  valueCacheBytes: number;
  /**
   * MySQL: longest wait for the answer to one query (ms), on every connection of the
   * workers' pools; past it the query fails (503) and its connection is closed (see
   * app/lib/queryTimeout.ts). 0 disables the bound.
   */
  dbQueryTimeoutMs: number;
  /** MySQL: connections (= write transactions at once) per worker for `POST /kv/:key`, and writes per transaction. */
  kvWriteConnections: number;
  kvWriteBatch: number;
  /** Presence heartbeat period and the time after which a silent worker's sockets are dropped (ms). */
  presenceHeartbeatMs: number;
  presenceTtlMs: number;
  /** Run pending database migrations when the server starts. */
  autoMigrate: boolean;
  /** Prefix of every Redis key and channel this server uses. */
  redisPrefix: string;
  /** Worker count used by `npm start` (see scripts/start.js). */
  workers: number;
  /** `GET /metrics` requires `Authorization: Bearer <t>` or `?token=<t>` when set. */
  metricsToken?: string;
  /** How long each worker reuses its count of devices and keys for `GET /metrics` (ms); 0 counts on every scrape. */
  metricsCacheMs: number;
  /** KV changes kept per device in the change log (at least; older ones are trimmed). */
  changesRetention: number;
  /** Relayed events kept per device in the history. */
  eventHistoryMax: number;
  /** Secret keys egg needs for signed cookies (unused by the API, required by egg). */
  appKeys?: string;
}

export class ConfigError extends Error {}

type Env = Record<string, string | undefined>;

function raw(env: Env, name: string): string | undefined {
  const v = env[name];
  if (v === undefined) return undefined;
  const t = v.trim();
  return t === '' ? undefined : t;
}

export function readInt(env: Env, name: string, def: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const v = raw(env, name);
  if (v === undefined) return def;
  if (!/^\d+$/.test(v)) throw new ConfigError(`${name} must be a whole number, got "${v}"`);
  const n = Number(v);
  if (n < min || n > max) throw new ConfigError(`${name} must be between ${min} and ${max}, got ${n}`);
  return n;
}

export function readBool(env: Env, name: string, def: boolean): boolean {
  const v = raw(env, name);
  if (v === undefined) return def;
  const l = v.toLowerCase();
  if ([ 'true', '1', 'yes', 'on' ].includes(l)) return true;
  if ([ 'false', '0', 'no', 'off' ].includes(l)) return false;
  throw new ConfigError(`${name} must be true or false, got "${v}"`);
}

function readSize(env: Env, name: string, def: string): string {
  const v = raw(env, name);
  if (v === undefined) return def;
  if (!/^\d+(\.\d+)?\s*(b|kb|mb|gb)?$/i.test(v)) {
    throw new ConfigError(`${name} must be a size such as 512kb or 2mb, got "${v}"`);
  }
  return v.toLowerCase().replace(/\s+/g, '');
}

/** A duration in ms that is either 0 (off) or between `min` and `max`. */
function readOptionalMs(env: Env, name: string, def: number, min: number, max: number): number {
  const n = readInt(env, name, def, 0, max);
  if (n !== 0 && n < min) throw new ConfigError(`${name} must be 0 (off) or between ${min} and ${max}, got ${n}`);
  return n;
}

function readDatabase(env: Env, cwd: string): DatabaseSettings {
  const v = raw(env, 'DATABASE_URL');
  if (v === undefined) {
    return { dialect: 'sqlite', storage: path.resolve(cwd, raw(env, 'SQLITE_PATH') ?? 'data/classworks-kv.sqlite') };
  }
  if (/^sqlite:/i.test(v)) {
    const p = v.replace(/^sqlite:(\/\/)?/i, '');
    if (!p) throw new ConfigError('DATABASE_URL sqlite:<path> needs a path');
    return { dialect: 'sqlite', storage: p === ':memory:' ? p : path.resolve(cwd, p) };
  }
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new ConfigError('DATABASE_URL must be mysql://user:pass@host:3306/db or sqlite:<path>');
  }
  if (u.protocol !== 'mysql:' && u.protocol !== 'mariadb:') {
    throw new ConfigError(`DATABASE_URL protocol must be mysql: or sqlite:, got ${u.protocol}`);
  }
  if (!u.pathname || u.pathname === '/') throw new ConfigError('DATABASE_URL must name a database (mysql://…/db)');
  u.protocol = 'mysql:';
  return { dialect: 'mysql', url: u.toString() };
}

function readRedis(env: Env): string | undefined {
  const v = raw(env, 'REDIS_URL');
  if (v === undefined) return undefined;
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new ConfigError('REDIS_URL must look like redis://[:pass@]host:6379/<db>');
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') {
    throw new ConfigError(`REDIS_URL protocol must be redis: or rediss:, got ${u.protocol}`);
  }
  const db = u.pathname.replace(/^\//, '');
  if (db && !/^\d+$/.test(db)) throw new ConfigError(`REDIS_URL database must be a number, got "${db}"`);
  return v;
}

export function loadSettings(env: Env = process.env, cwd = process.cwd()): Settings {
  const redisUrl = readRedis(env);
  const frontend = (raw(env, 'FRONTEND_URL') ?? '*').split(',').map(s => s.trim()).filter(Boolean);
  const presenceHeartbeatMs = readInt(env, 'PRESENCE_HEARTBEAT_MS', 5000, 100, 600000);
  return {
    port: readInt(env, 'PORT', 3000, 1, 65535),
    database: readDatabase(env, cwd),
    redisUrl,
    frontendUrls: frontend.length ? frontend : [ '*' ],
    trustProxy: readBool(env, 'TRUST_PROXY', false),
    bodyLimit: readSize(env, 'BODY_LIMIT', '2mb'),
    batchLimit: readInt(env, 'BATCH_LIMIT', 1000, 1),
    rateLimit: {
      ip: readInt(env, 'RATE_LIMIT_IP', 100),
      kvRead: readInt(env, 'RATE_LIMIT_KV_READ', 1024),
      kvWrite: readInt(env, 'RATE_LIMIT_KV_WRITE', 512),
      kvDelete: readInt(env, 'RATE_LIMIT_KV_DELETE', 256),
      kvBatch: readInt(env, 'RATE_LIMIT_KV_BATCH', 128),
      password: readInt(env, 'RATE_LIMIT_PASSWORD', 10),
      events: readInt(env, 'RATE_LIMIT_EVENTS', 120),
      history: readInt(env, 'RATE_LIMIT_HISTORY', 60),
      tokenFailures: readInt(env, 'RATE_LIMIT_TOKEN_FAILURES', 30),
      windowMs: 60000,
    },
    bcryptCost: readInt(env, 'BCRYPT_COST', 10, 10, 15),
    tokenCacheTtlMs: readInt(env, 'TOKEN_CACHE_TTL_MS', 300000),
    tokenCacheMax: readInt(env, 'TOKEN_CACHE_MAX', 50000, 1),
    tokenNegativeCacheMs: readInt(env, 'TOKEN_NEGATIVE_CACHE_MS', 5000, 0, 60000),
    socketPacketRate: readInt(env, 'SOCKET_PACKET_RATE', 20, 0, 100000),
    socketPacketBurst: readInt(env, 'SOCKET_PACKET_BURST', 100, 1, 100000),
    socketMaxPerIp: readInt(env, 'SOCKET_MAX_PER_IP', 1000, 0, 1000000),
    valueCacheBytes: readInt(env, 'VALUE_CACHE_BYTES', 32 * 1024 * 1024),
    dbQueryTimeoutMs: readOptionalMs(env, 'DB_QUERY_TIMEOUT_MS', 5000, 100, 3600000),
    kvWriteConnections: readInt(env, 'KV_WRITE_CONNECTIONS', 4, 1, 100),
    kvWriteBatch: readInt(env, 'KV_WRITE_BATCH', 64, 1, 1000),
    presenceHeartbeatMs,
    presenceTtlMs: readInt(env, 'PRESENCE_TTL_MS', presenceHeartbeatMs * 3, presenceHeartbeatMs * 2),
    autoMigrate: readBool(env, 'AUTO_MIGRATE', true),
    redisPrefix: raw(env, 'REDIS_PREFIX') ?? 'ckv:',
    workers: readInt(env, 'WORKERS', redisUrl ? os.cpus().length : 1, 1, 256),
    metricsToken: raw(env, 'METRICS_TOKEN'),
    metricsCacheMs: readInt(env, 'METRICS_CACHE_MS', 15000, 0, 3600000),
    changesRetention: readInt(env, 'CHANGES_RETENTION', 1000, 1, 1000000),
    eventHistoryMax: 1000,
    appKeys: raw(env, 'APP_KEYS'),
  };
}
