import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import type { EggAppConfig, EggAppInfo, PowerPartial } from 'egg';
import { loadSettings, Settings } from './env';
import { logPadding } from '../app/lib/logRedaction';
import { MYSQL_MAX_PREPARED_STATEMENTS } from '../app/lib/queryTimeout';

/**
 * egg needs `config.keys` (identical in every worker). The API uses no cookies, so
 * when APP_KEYS is not set we create a random key once and keep it beside the data,
 * so every worker (and every restart) reads the same one without any setup.
 */
function appKeys(settings: Settings, dataDir: string): string {
  if (settings.appKeys) return settings.appKeys;
  return persistentSecret(path.join(dataDir, '.app-keys'));
}

/**
 * The account JWT key (§8) when JWT_SECRET is not set: generated once and kept beside the
 * SQLite database (`.jwt-secret`, mode 0600), so restarts keep every session valid. With
 * DATABASE_URL in production, env.ts refuses to start instead (instances must share the key).
 */
function jwtSecret(settings: Settings, dataDir: string): string {
  if (settings.accounts.jwtSecret) return settings.accounts.jwtSecret;
  const db = settings.database;
  const dir = db.dialect === 'sqlite' && db.storage !== ':memory:' ? path.dirname(db.storage) : dataDir;
  return persistentSecret(path.join(dir, '.jwt-secret'));
}

/** A random secret created once in `file` (never overwritten; every worker reads the same one). */
function persistentSecret(file: string): string {
  const dataDir = path.dirname(file);
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    fs.mkdirSync(dataDir, { recursive: true });
    try {
      fs.writeFileSync(file, crypto.randomBytes(32).toString('hex'), { flag: 'wx', mode: 0o600 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    return fs.readFileSync(file, 'utf8').trim();
  }
}

function redisOptions(url: string) {
  const u = new URL(url);
  return {
    host: u.hostname.replace(/^\[|\]$/g, ''),
    port: Number(u.port || 6379),
    username: u.username ? decodeURIComponent(u.username) : undefined,
    password: u.password ? decodeURIComponent(u.password) : '',
    db: Number(u.pathname.replace(/^\//, '') || 0),
    tls: u.protocol === 'rediss:' ? {} : undefined,
  };
}

/**
 * The KV writes whose body app/middleware/jsonBody.ts reads instead of egg's bodyParser:
 * a read-only token's write must be answered 403 before anything about its body (§6.2).
 */
function isKvWriteWithBody(ctx: { method: string; path: string }): boolean {
  return (ctx.method === 'POST' || ctx.method === 'DELETE') && /^\/kv(\/|$)/.test(ctx.path);
}

export default (appInfo: EggAppInfo): PowerPartial<EggAppConfig> => {
  const settings = loadSettings(process.env, process.cwd(), appInfo.env);
  const config = {} as PowerPartial<EggAppConfig>;
  const dataDir = path.join(process.cwd(), 'data');

  config.keys = appKeys(settings, dataDir);
  settings.accounts.jwtSecret = jwtSecret(settings, dataDir);
  config.classworks = settings;

  // The error handler must wrap egg's own body parser, so it is put first in app.ts.
  // jsonBody first: the KV token may sit in a body sent as text or form, and the
  // rate limiter must see it exactly as kvAuth will.
  config.middleware = [ 'jsonBody', 'rateLimit' ];
  config.jsonBody = { match: isKvWriteWithBody } as any;

  config.cluster = { listen: { port: settings.port } } as any;

  config.proxy = settings.trustProxy;
  // Behind one nginx: the client address is the last X-Forwarded-For hop (the one nginx
  // appended). egg 3's legacy `maxProxyCount: 1` keeps the last TWO hops and returns the
  // first of them, i.e. a value the client sent itself; `maxIpsCount: 1` keeps only the last.
  (config as Record<string, unknown>).maxIpsCount = 1;

  config.bodyParser = {
    enable: true,
    // KV writes are read by jsonBody, after kvAuth may have to refuse a read-only token (§6.2).
    ignore: isKvWriteWithBody,
    encoding: 'utf8',
    jsonLimit: settings.bodyLimit,
    formLimit: settings.bodyLimit,
    textLimit: settings.bodyLimit,
    strict: true,
    // Bodies of these routes are read field by field (never merged): a `__proto__` key names
    // no field and is dropped, like a `constructor` key is ignored; no route refuses either
    // (KV values keep both as data, see app/middleware/jsonBody.ts).
    onProtoPoisoning: 'remove',
    enableTypes: [ 'json', 'form', 'text' ],
  } as any;

  config.security = {
    csrf: { enable: false },
    xframe: { enable: false },
  } as any;
  config.notfound = { enable: false } as any;
  // `_method` / X-HTTP-Method-Override would let a stored value turn a POST into a DELETE.
  config.overrideMethod = { enable: false } as any;
  config.siteFile = { '/favicon.ico': undefined } as any;

  config.cors = {
    origin: (ctx: { get(name: string): string }) => {
      const origin = ctx.get('origin');
      if (settings.frontendUrls.includes('*')) return '*';
      return origin && settings.frontendUrls.includes(origin) ? origin : '';
    },
    allowMethods: 'GET,HEAD,PUT,POST,DELETE,PATCH,OPTIONS',
    allowHeaders: [ 'x-app-token', 'x-device-uuid', 'x-device-password', 'x-site-key', 'authorization', 'content-type' ],
    exposeHeaders: [ 'RateLimit-Policy', 'RateLimit', 'Retry-After', 'X-New-Access-Token', 'X-Token-Refreshed' ],
    maxAge: 86400,
  } as any;

  const db = settings.database;
  config.sequelize = (db.dialect === 'mysql' ? {
    dialect: 'mysql',
    connectionUri: db.url,
    timezone: '+00:00',
    // mysql2 allocates its statement cache at full size on every connection (app/lib/queryTimeout.ts).
    dialectOptions: { charset: 'utf8mb4', connectTimeout: 3000, maxPreparedStatements: MYSQL_MAX_PREPARED_STATEMENTS },
    pool: { max: 10, min: 0, acquire: 5000, idle: 10000 },
  } : {
    dialect: 'sqlite',
    storage: db.storage,
    pool: { max: 1, min: 0, acquire: 5000, idle: 60000 },
  }) as any;
  Object.assign(config.sequelize as object, {
    logging: false,
    benchmark: false,
    define: { underscored: false, freezeTableName: true, timestamps: true },
  });

  if (settings.redisUrl) {
    config.redis = {
      client: {
        ...redisOptions(settings.redisUrl),
        // Fail fast while Redis is away instead of queueing: rate limits fail open,
        // Redis-only features answer 503.
        enableOfflineQueue: false,
        maxRetriesPerRequest: 1,
        connectTimeout: 3000,
        keyPrefix: undefined,
      },
    } as any;
  }

  config.io = {
    init: {
      allowEIO3: true,
      cors: {
        origin: settings.frontendUrls.includes('*') ? '*' : settings.frontendUrls,
        methods: [ 'GET', 'POST' ],
      },
      pingInterval: 25000,
      pingTimeout: 20000,
      maxHttpBufferSize: 1e6,
    },
    namespace: {
      '/': {
        connectionMiddleware: [ 'packetLimit', 'auth' ],
        packetMiddleware: [],
      },
    },
  } as any;

  config.logger = {
    disableConsoleAfterReady: false,
    // The request prefix of log lines written by the app's loggers while a request is served,
    // URL redacted (ctx.logger: app.ts); tokens and passwords travel in URLs.
    paddingMessageFormatter: logPadding,
  } as any;

  return {
    ...config,
    appInfo,
  };
};

export { redisOptions };
