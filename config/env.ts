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
  /**
   * Failed password attempts per device (and failed namespace logins per namespace) per
   * window from all IPs together, cluster-wide (0 disables): many addresses guessing one password.
   */
  passwordTarget: number;
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

/** One sign-in provider (§8), from `OAUTH_<ID>_…` variables. */
export interface OAuthProviderSettings {
  /** Lower-case `<ID>`: the path segment of /accounts/oauth/:provider. */
  id: string;
  type: 'oidc' | 'github';
  /** OIDC: the issuer URL (its `/.well-known/openid-configuration` is read). */
  issuer?: string;
  /** GitHub: the endpoints (defaults: github.com and api.github.com; a stand-in in tests). */
  authorizeUrl?: string;
  tokenUrl?: string;
  apiUrl?: string;
  clientId: string;
  /** Absent: a public client (PKCE only, no secret). */
  clientSecret?: string;
  scope: string;
  name: string;
  displayName: string;
  icon: string | null;
  color: string | null;
  textColor: string;
  description: string | null;
  order: number;
  website: string | null;
}

export interface AccountSettings {
  /** Callback base: `<baseUrl>/accounts/oauth/<id>/callback`. */
  baseUrl: string;
  /** Where the OAuth callback sends the browser (with the tokens in the query). */
  frontendRedirectUrl: string;
  /** HS256 key of access tokens; undefined: generated and kept in a file (config.default.ts). */
  jwtSecret?: string;
  /** Access token lifetime as configured (`15m`; the 1.3 `expires_in`) and in seconds. */
  accessTokenExpiresIn: string;
  accessTokenTtlSec: number;
  refreshTokenExpiresIn: string;
  refreshTokenTtlSec: number;
  /** OAuth state + PKCE verifier lifetime (ms). */
  oauthStateTtlMs: number;
  providers: OAuthProviderSettings[];
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
  /**
   * How often each worker reads the shared record of revoked tokens (ms); a token cache
   * hit is served only while the last read is at most 3 of these old (app/lib/revocations.ts).
   */
  revocationPollMs: number;
  /** How often each worker checks the tokens of its joined sockets against the database (ms; 0: only on a bus resync). */
  tokenRecheckMs: number;
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
  /**
   * When set, `GET /devices/online` (which lists every online device's uuid) requires
   * `Authorization: Bearer <adminToken>`; unset, it is open as the contract has it.
   */
  adminToken?: string;
  /** How long each worker reuses its count of devices and keys for `GET /metrics` (ms); 0 counts on every scrape. */
  metricsCacheMs: number;
  /** KV changes kept per device in the change log (at least; older ones are trimmed). */
  changesRetention: number;
  /** Relayed events kept per device in the history. */
  eventHistoryMax: number;
  /** Ordered, gap-free delivery of kv-key-changed per worker (app/lib/changeFeed.ts); fixed, not read from the environment. */
  changeFeed: {
    /** How long an out-of-order change waits for the ones before it before they are read from the change log. */
    gapMs: number;
    /** Period of the revision poll that recovers changes whose worker died before broadcasting them (≤ 5 s with the gap wait, §7). */
    pollMs: number;
    /** Changes per change-log read (catch-up, gap fills). */
    pageSize: number;
    /** Devices per revision-poll query. */
    pollChunk: number;
  };
  /**
   * Fault injection for the cluster and fault suites only: honoured only when the server
   * environment (EGG_SERVER_ENV) is one of TEST_SERVER_ENVS; always empty otherwise.
   */
  faults: {
    /** FAULT_CRASH_BEFORE_BROADCAST: a committed KV change of this key kills the worker (SIGKILL) before it is broadcast. */
    crashBeforeBroadcastKey?: string;
  };
  /** Secret keys egg needs for signed cookies (unused by the API, required by egg). */
  appKeys?: string;
  /** Accounts and sign-in (§8). */
  accounts: AccountSettings;
  /** `EGG_SERVER_ENV === 'prod'` (egg-scripts' default): defaults that are only safe in development are refused. */
  production: boolean;
}

export class ConfigError extends Error {}

/**
 * Server environments (EGG_SERVER_ENV) in which fault switches are honoured: `unittest`
 * (egg-mock) and `test`, a test deployment run by the cluster and fault suites (egg-scripts
 * forces NODE_ENV=production, and under `unittest` egg-cluster would not replace a dead worker).
 */
export const TEST_SERVER_ENVS = [ 'unittest', 'test' ];

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

/** An optional secret: unset, or at least `minLength` characters (a short one is guessable). */
export function readSecret(env: Env, name: string, minLength: number): string | undefined {
  const v = raw(env, name);
  if (v !== undefined && v.length < minLength) throw new ConfigError(`${name} must be at least ${minLength} characters long`);
  return v;
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

/** `15m`, `7d`, `3600` (seconds), `90s`, `12h` → seconds. */
function readDuration(env: Env, name: string, def: string, minSec: number, maxSec: number): { text: string; seconds: number } {
  const text = raw(env, name) ?? def;
  const m = /^(\d+)\s*(s|m|h|d)?$/i.exec(text);
  if (!m) throw new ConfigError(`${name} must be a duration such as 900, 15m, 12h or 7d, got "${text}"`);
  const unit = { s: 1, m: 60, h: 3600, d: 86400 }[(m[2] ?? 's').toLowerCase() as 's' | 'm' | 'h' | 'd'];
  const seconds = Number(m[1]) * unit;
  if (seconds < minSec || seconds > maxSec) throw new ConfigError(`${name} must be between ${minSec} s and ${maxSec} s, got ${seconds} s`);
  return { text, seconds };
}

function readUrl(env: Env, name: string, def?: string): string | undefined {
  const v = raw(env, name) ?? def;
  if (v === undefined) return undefined;
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new ConfigError(`${name} must be an http(s) URL, got "${v}"`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new ConfigError(`${name} must be an http(s) URL, got "${v}"`);
  return v.replace(/\/+$/, '');
}

/** The signing-secret defaults of the original server: known to everyone, refused everywhere. */
const KNOWN_DEFAULT_SECRETS = new Set([
  'your-secret-key-change-this-in-production',
  'your-access-token-secret-change-this-in-production',
  'your-refresh-token-secret-change-this-in-production',
]);

/** Every `OAUTH_<ID>_ISSUER` or `OAUTH_<ID>_TYPE` names a provider; `<ID>` is letters and digits. */
export function readProviders(env: Env): OAuthProviderSettings[] {
  const ids = new Set<string>();
  for (const k of Object.keys(env)) {
    const m = /^OAUTH_([A-Z0-9]+)_(ISSUER|TYPE|CLIENT_ID)$/.exec(k);
    if (m && raw(env, k) !== undefined) ids.add(m[1]);
  }
  const providers = [ ...ids ].map(ID => {
    const v = (field: string) => raw(env, `OAUTH_${ID}_${field}`);
    const id = ID.toLowerCase();
    const typeText = (v('TYPE') ?? (v('ISSUER') ? 'oidc' : '')).toLowerCase();
    if (typeText !== 'oidc' && typeText !== 'github') {
      throw new ConfigError(`OAUTH_${ID}_TYPE must be oidc or github (or set OAUTH_${ID}_ISSUER), got "${typeText}"`);
    }
    const type = typeText as 'oidc' | 'github';
    const clientId = v('CLIENT_ID');
    if (!clientId) throw new ConfigError(`OAUTH_${ID}_CLIENT_ID is required`);
    const clientSecret = v('CLIENT_SECRET');
    if (type === 'github' && !clientSecret) throw new ConfigError(`OAUTH_${ID}_CLIENT_SECRET is required for GitHub`);
    const issuer = type === 'oidc' ? readUrl(env, `OAUTH_${ID}_ISSUER`) : undefined;
    if (type === 'oidc' && !issuer) throw new ConfigError(`OAUTH_${ID}_ISSUER is required for an OpenID Connect provider`);
    const name = v('NAME') ?? (type === 'github' ? 'GitHub' : ID);
    return {
      id,
      type,
      issuer,
      authorizeUrl: type === 'github' ? readUrl(env, `OAUTH_${ID}_AUTHORIZE_URL`, 'https://github.com/login/oauth/authorize') : undefined,
      tokenUrl: type === 'github' ? readUrl(env, `OAUTH_${ID}_TOKEN_URL`, 'https://github.com/login/oauth/access_token') : undefined,
      apiUrl: type === 'github' ? readUrl(env, `OAUTH_${ID}_API_URL`, 'https://api.github.com') : undefined,
      clientId,
      clientSecret,
      scope: v('SCOPE') ?? (type === 'github' ? 'read:user user:email' : 'openid profile email'),
      name,
      displayName: v('DISPLAY_NAME') ?? name,
      icon: v('ICON') ?? null,
      color: v('COLOR') ?? null,
      textColor: v('TEXT_COLOR') ?? '#ffffff',
      description: v('DESCRIPTION') ?? null,
      order: readInt(env, `OAUTH_${ID}_ORDER`, 9999),
      website: v('WEBSITE') ?? null,
    };
  });
  return providers.sort((a, b) => a.order - b.order || a.id.localeCompare(b.id));
}

function readAccounts(env: Env, port: number, frontend: string[], production: boolean, sqlite: boolean): AccountSettings {
  const secret = raw(env, 'JWT_SECRET');
  if (secret !== undefined) {
    if (KNOWN_DEFAULT_SECRETS.has(secret)) throw new ConfigError('JWT_SECRET is a published default; set a random secret (at least 32 characters)');
    if (secret.length < 32) throw new ConfigError('JWT_SECRET must be at least 32 characters');
  } else if (production && !sqlite) {
    // Several instances share the database: each must sign with the same key, so it cannot be generated.
    throw new ConfigError('JWT_SECRET is required in production with DATABASE_URL (at least 32 random characters, the same on every instance)');
  }
  const access = readDuration(env, 'ACCESS_TOKEN_EXPIRES_IN', '15m', 1, 86400);
  const refresh = readDuration(env, 'REFRESH_TOKEN_EXPIRES_IN', '7d', 60, 365 * 86400);
  const firstOrigin = frontend.find(f => f !== '*');
  return {
    baseUrl: readUrl(env, 'BASE_URL', `http://localhost:${port}`) as string,
    frontendRedirectUrl: readUrl(env, 'OAUTH_REDIRECT_URL', firstOrigin ?? 'http://localhost:5173') as string,
    jwtSecret: secret,
    accessTokenExpiresIn: access.text,
    accessTokenTtlSec: access.seconds,
    refreshTokenExpiresIn: refresh.text,
    refreshTokenTtlSec: refresh.seconds,
    oauthStateTtlMs: 10 * 60 * 1000,
    providers: readProviders(env),
  };
}

export function loadSettings(env: Env = process.env, cwd = process.cwd(), appEnv?: string): Settings {
  const redisUrl = readRedis(env);
  const frontend = (raw(env, 'FRONTEND_URL') ?? '*').split(',').map(s => s.trim()).filter(Boolean);
  const presenceHeartbeatMs = readInt(env, 'PRESENCE_HEARTBEAT_MS', 5000, 100, 600000);
  const port = readInt(env, 'PORT', 3000, 1, 65535);
  const database = readDatabase(env, cwd);
  // The app's env as egg computed it (config.default passes appInfo.env), else egg's own rule:
  // EGG_SERVER_ENV, else `prod` when NODE_ENV=production (egg-scripts sets that).
  const serverEnv = appEnv ?? raw(env, 'EGG_SERVER_ENV') ?? (raw(env, 'NODE_ENV') === 'production' ? 'prod' : 'local');
  const production = serverEnv === 'prod';
  return {
    port,
    database,
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
      passwordTarget: readInt(env, 'RATE_LIMIT_PASSWORD_TARGET', 100),
      events: readInt(env, 'RATE_LIMIT_EVENTS', 120),
      history: readInt(env, 'RATE_LIMIT_HISTORY', 60),
      tokenFailures: readInt(env, 'RATE_LIMIT_TOKEN_FAILURES', 30),
      windowMs: 60000,
    },
    bcryptCost: readInt(env, 'BCRYPT_COST', 10, 10, 15),
    tokenCacheTtlMs: readInt(env, 'TOKEN_CACHE_TTL_MS', 300000),
    tokenCacheMax: readInt(env, 'TOKEN_CACHE_MAX', 50000, 1),
    revocationPollMs: readInt(env, 'REVOCATION_POLL_MS', 1000, 100, 60000),
    tokenRecheckMs: readOptionalMs(env, 'TOKEN_RECHECK_MS', 10000, 500, 3600000),
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
    adminToken: readSecret(env, 'ADMIN_TOKEN', 16),
    metricsCacheMs: readInt(env, 'METRICS_CACHE_MS', 15000, 0, 3600000),
    changesRetention: readInt(env, 'CHANGES_RETENTION', 1000, 1, 1000000),
    eventHistoryMax: 1000,
    changeFeed: { gapMs: 200, pollMs: 1000, pageSize: 1000, pollChunk: 500 },
    faults: TEST_SERVER_ENVS.includes(serverEnv) ? { crashBeforeBroadcastKey: raw(env, 'FAULT_CRASH_BEFORE_BROADCAST') } : {},
    appKeys: raw(env, 'APP_KEYS'),
    accounts: readAccounts(env, port, frontend, production, database.dialect === 'sqlite'),
    production,
  };
}
