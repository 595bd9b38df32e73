import assert from 'node:assert';
import path from 'node:path';
import fs from 'node:fs';
import os from 'node:os';
import { ConfigError, loadSettings } from '../../config/env';
import configDefault from '../../config/config.default';
import type { EggAppInfo } from 'egg';

describe('test/config/env.test.ts', () => {
  describe('loadSettings()', () => {
    it('gives the contract defaults for an empty environment', () => {
      const s = loadSettings({}, '/srv/kv');
      assert.strictEqual(s.port, 3000);
      assert.deepStrictEqual(s.database, { dialect: 'sqlite', storage: path.resolve('/srv/kv', 'data/classworks-kv.sqlite') });
      assert.strictEqual(s.redisUrl, undefined);
      assert.deepStrictEqual(s.frontendUrls, [ '*' ]);
      assert.strictEqual(s.trustProxy, false);
      assert.strictEqual(s.bodyLimit, '2mb');
      assert.strictEqual(s.batchLimit, 1000);
      assert.deepStrictEqual(s.rateLimit, { ip: 100, kvRead: 1024, kvWrite: 512, kvDelete: 256, kvBatch: 128, password: 10, passwordTarget: 100, events: 120, history: 60, tokenFailures: 30, windowMs: 60000 });
      assert.strictEqual(s.metricsToken, undefined);
      assert.strictEqual(s.changesRetention, 1000);
      assert.strictEqual(s.workers, 1);
      assert.strictEqual(s.autoMigrate, true);
      assert.strictEqual(s.dbQueryTimeoutMs, 5000);
      assert.ok(s.bcryptCost >= 10);
    });

    it('reads the KV hot-path settings: VALUE_CACHE_BYTES (0 = off), KV_WRITE_CONNECTIONS, KV_WRITE_BATCH', () => {
      const d = loadSettings({}, '/');
      assert.deepStrictEqual([ d.valueCacheBytes, d.kvWriteConnections, d.kvWriteBatch ], [ 32 * 1024 * 1024, 4, 64 ]);
      const s = loadSettings({ VALUE_CACHE_BYTES: '0', KV_WRITE_CONNECTIONS: '2', KV_WRITE_BATCH: '1' }, '/');
      assert.deepStrictEqual([ s.valueCacheBytes, s.kvWriteConnections, s.kvWriteBatch ], [ 0, 2, 1 ]);
    });

    it('reads METRICS_CACHE_MS (default 15 s, 0 = count on every scrape) and refuses a malformed value', () => {
      assert.strictEqual(loadSettings({}, '/').metricsCacheMs, 15000);
      assert.strictEqual(loadSettings({ METRICS_CACHE_MS: '0' }, '/').metricsCacheMs, 0);
      assert.throws(() => loadSettings({ METRICS_CACHE_MS: '15s' }, '/'), ConfigError);
    });

    it('reads RATE_LIMIT_PASSWORD_TARGET (default 100, 0 = off) and ADMIN_TOKEN (unset, or at least 16 characters)', () => {
      assert.strictEqual(loadSettings({ RATE_LIMIT_PASSWORD_TARGET: '0' }, '/').rateLimit.passwordTarget, 0);
      assert.strictEqual(loadSettings({ RATE_LIMIT_PASSWORD_TARGET: '30' }, '/').rateLimit.passwordTarget, 30);
      assert.throws(() => loadSettings({ RATE_LIMIT_PASSWORD_TARGET: 'many' }, '/'), ConfigError);
      assert.strictEqual(loadSettings({}, '/').adminToken, undefined);
      assert.strictEqual(loadSettings({ ADMIN_TOKEN: ' ' }, '/').adminToken, undefined);
      assert.strictEqual(loadSettings({ ADMIN_TOKEN: 'a'.repeat(16) }, '/').adminToken, 'a'.repeat(16));
      assert.throws(() => loadSettings({ ADMIN_TOKEN: 'short' }, '/'), /ADMIN_TOKEN must be at least 16 characters long/);
    });

    it('reads the hardening settings: RATE_LIMIT_TOKEN_FAILURES, TOKEN_NEGATIVE_CACHE_MS, SOCKET_PACKET_RATE/_BURST, SOCKET_MAX_PER_IP', () => {
      const d = loadSettings({}, '/');
      assert.deepStrictEqual(
        [ d.rateLimit.tokenFailures, d.tokenNegativeCacheMs, d.socketPacketRate, d.socketPacketBurst, d.socketMaxPerIp ],
        [ 30, 5000, 20, 100, 1000 ],
      );
      const s = loadSettings({
        RATE_LIMIT_TOKEN_FAILURES: '0', TOKEN_NEGATIVE_CACHE_MS: '0', SOCKET_PACKET_RATE: '0', SOCKET_PACKET_BURST: '7', SOCKET_MAX_PER_IP: '0',
      }, '/');
      assert.deepStrictEqual(
        [ s.rateLimit.tokenFailures, s.tokenNegativeCacheMs, s.socketPacketRate, s.socketPacketBurst, s.socketMaxPerIp ],
        [ 0, 0, 0, 7, 0 ],
      );
      assert.throws(() => loadSettings({ RATE_LIMIT_TOKEN_FAILURES: '-1' }, '/'), ConfigError);
      assert.throws(() => loadSettings({ SOCKET_PACKET_BURST: '0' }, '/'), ConfigError);
      assert.throws(() => loadSettings({ TOKEN_NEGATIVE_CACHE_MS: '5s' }, '/'), ConfigError);
    });

    it('reads DB_QUERY_TIMEOUT_MS; 0 turns the bound off', () => {
      assert.strictEqual(loadSettings({ DB_QUERY_TIMEOUT_MS: '2500' }, '/').dbQueryTimeoutMs, 2500);
      assert.strictEqual(loadSettings({ DB_QUERY_TIMEOUT_MS: '0' }, '/').dbQueryTimeoutMs, 0);
    });

    it('reads every contract variable', () => {
      const s = loadSettings({
        PORT: '8080',
        DATABASE_URL: 'mysql://kv:p%40ss@db.local:3307/classworks',
        REDIS_URL: 'redis://:secret@cache:6380/3',
        FRONTEND_URL: 'https://a.example, https://b.example',
        TRUST_PROXY: 'true',
        BODY_LIMIT: '512kb',
        BATCH_LIMIT: '50',
        RATE_LIMIT_IP: '0',
        RATE_LIMIT_KV_READ: '1',
        RATE_LIMIT_KV_WRITE: '2',
        RATE_LIMIT_KV_DELETE: '3',
        RATE_LIMIT_KV_BATCH: '4',
        RATE_LIMIT_EVENTS: '5',
        RATE_LIMIT_HISTORY: '6',
      }, '/srv/kv');
      assert.strictEqual(s.port, 8080);
      assert.deepStrictEqual(s.database, { dialect: 'mysql', url: 'mysql://kv:p%40ss@db.local:3307/classworks' });
      assert.strictEqual(s.redisUrl, 'redis://:secret@cache:6380/3');
      assert.deepStrictEqual(s.frontendUrls, [ 'https://a.example', 'https://b.example' ]);
      assert.strictEqual(s.trustProxy, true);
      assert.strictEqual(s.bodyLimit, '512kb');
      assert.strictEqual(s.batchLimit, 50);
      assert.deepStrictEqual(
        [ s.rateLimit.ip, s.rateLimit.kvRead, s.rateLimit.kvWrite, s.rateLimit.kvDelete, s.rateLimit.kvBatch ],
        [ 0, 1, 2, 3, 4 ],
      );
      assert.deepStrictEqual([ s.rateLimit.events, s.rateLimit.history ], [ 5, 6 ]);
    });

    it('accepts sqlite:<path> relative to the working directory', () => {
      assert.deepStrictEqual(loadSettings({ DATABASE_URL: 'sqlite:var/kv.db' }, '/srv/kv').database,
        { dialect: 'sqlite', storage: path.resolve('/srv/kv', 'var/kv.db') });
    });

    it('treats blank values as unset', () => {
      assert.strictEqual(loadSettings({ PORT: '  ', REDIS_URL: '' }, '/').port, 3000);
      assert.strictEqual(loadSettings({ REDIS_URL: '' }, '/').redisUrl, undefined);
    });

    const bad: Array<[string, Record<string, string>, RegExp]> = [
      [ 'a boolean that is neither true nor false', { TRUST_PROXY: 'flase' }, /TRUST_PROXY must be true or false/ ],
      [ 'a non-numeric port', { PORT: 'eighty' }, /PORT must be a whole number/ ],
      [ 'a port out of range', { PORT: '70000' }, /PORT must be between 1 and 65535/ ],
      [ 'a negative limit', { RATE_LIMIT_IP: '-1' }, /RATE_LIMIT_IP must be a whole number/ ],
      [ 'a fractional batch limit', { BATCH_LIMIT: '1.5' }, /BATCH_LIMIT must be a whole number/ ],
      [ 'a zero batch limit', { BATCH_LIMIT: '0' }, /BATCH_LIMIT must be between 1/ ],
      [ 'a size without a number', { BODY_LIMIT: 'big' }, /BODY_LIMIT must be a size/ ],
      [ 'an unknown database scheme', { DATABASE_URL: 'postgres://x/y' }, /DATABASE_URL protocol must be mysql: or sqlite:/ ],
      [ 'a MySQL URL without a database', { DATABASE_URL: 'mysql://root@localhost:3306/' }, /must name a database/ ],
      [ 'an unparsable URL', { DATABASE_URL: 'not a url' }, /DATABASE_URL must be/ ],
      [ 'a Redis URL with another scheme', { REDIS_URL: 'http://cache:6379' }, /REDIS_URL protocol must be redis:/ ],
      [ 'a Redis URL with a non-numeric db', { REDIS_URL: 'redis://cache:6379/x' }, /REDIS_URL database must be a number/ ],
      [ 'a bcrypt cost below 10', { BCRYPT_COST: '8' }, /BCRYPT_COST must be between 10 and 15/ ],
      [ 'a query timeout too short to be useful', { DB_QUERY_TIMEOUT_MS: '50' }, /DB_QUERY_TIMEOUT_MS must be 0 \(off\) or between 100 and 3600000, got 50/ ],
      [ 'a query timeout with a unit', { DB_QUERY_TIMEOUT_MS: '5s' }, /DB_QUERY_TIMEOUT_MS must be a whole number/ ],
      [ 'a value cache size with a unit', { VALUE_CACHE_BYTES: '32mb' }, /VALUE_CACHE_BYTES must be a whole number/ ],
      [ 'no write connections', { KV_WRITE_CONNECTIONS: '0' }, /KV_WRITE_CONNECTIONS must be between 1 and 100/ ],
      [ 'a write batch over 1000', { KV_WRITE_BATCH: '1001' }, /KV_WRITE_BATCH must be between 1 and 1000/ ],
    ];
    for (const [ what, env, message ] of bad) {
      it(`rejects ${what} with a ConfigError naming the variable`, () => {
        assert.throws(() => loadSettings(env, '/'), (err: unknown) => err instanceof ConfigError && message.test(err.message));
      });
    }

    it('honours the fault switch FAULT_CRASH_BEFORE_BROADCAST only in a test server env (unittest, test), never in prod or local', () => {
      const env = { FAULT_CRASH_BEFORE_BROADCAST: 'boom' };
      assert.deepStrictEqual(loadSettings(env, '/').faults, {});
      assert.deepStrictEqual(loadSettings(env, '/', 'prod').faults, {});
      assert.deepStrictEqual(loadSettings(env, '/', 'local').faults, {});
      assert.deepStrictEqual(loadSettings(env, '/', 'unittest').faults, { crashBeforeBroadcastKey: 'boom' });
      assert.deepStrictEqual(loadSettings(env, '/', 'test').faults, { crashBeforeBroadcastKey: 'boom' });
      assert.deepStrictEqual(loadSettings({}, '/', 'test').faults, { crashBeforeBroadcastKey: undefined });
    });

    it('uses the CPU count as the worker default only when Redis is configured', () => {
      assert.strictEqual(loadSettings({}, '/').workers, 1);
      assert.ok(loadSettings({ REDIS_URL: 'redis://127.0.0.1:6379/0' }, '/').workers >= 1);
      assert.strictEqual(loadSettings({ REDIS_URL: 'redis://127.0.0.1:6379/0', WORKERS: '3' }, '/').workers, 3);
    });
  });

  describe('accounts settings (§8)', () => {
    const MYSQL = 'mysql://root@127.0.0.1:3306/kv';
    const SECRET = 'x'.repeat(32);

    it('defaults: 15m access tokens, 7d refresh tokens, callback base on PORT, no providers', () => {
      const a = loadSettings({ PORT: '8080' }, '/').accounts;
      assert.deepStrictEqual(a, {
        baseUrl: 'http://localhost:8080',
        frontendRedirectUrl: 'http://localhost:5173',
        jwtSecret: undefined,
        accessTokenExpiresIn: '15m',
        accessTokenTtlSec: 900,
        refreshTokenExpiresIn: '7d',
        refreshTokenTtlSec: 604800,
        oauthStateTtlMs: 600000,
        providers: [],
      });
    });

    it('reads BASE_URL, OAUTH_REDIRECT_URL (else the first FRONTEND_URL origin), lifetimes', () => {
      const a = loadSettings({ BASE_URL: 'https://kv.example/', FRONTEND_URL: '*, https://admin.example', ACCESS_TOKEN_EXPIRES_IN: '600', REFRESH_TOKEN_EXPIRES_IN: '30d' }, '/').accounts;
      assert.deepStrictEqual([ a.baseUrl, a.frontendRedirectUrl, a.accessTokenTtlSec, a.refreshTokenTtlSec ], [ 'https://kv.example', 'https://admin.example', 600, 2592000 ]);
      assert.strictEqual(loadSettings({ OAUTH_REDIRECT_URL: 'https://ui.example/cb' }, '/').accounts.frontendRedirectUrl, 'https://ui.example/cb');
      for (const env of [{ ACCESS_TOKEN_EXPIRES_IN: '15 minutes' }, { ACCESS_TOKEN_EXPIRES_IN: '0' }, { REFRESH_TOKEN_EXPIRES_IN: '1s' }, { BASE_URL: 'ftp://x' }]) {
        assert.throws(() => loadSettings(env, '/'), ConfigError, JSON.stringify(env));
      }
    });

    it('reads providers generically from OAUTH_<ID>_*, sorted by order', () => {
      const p = loadSettings({
        OAUTH_HLY_ISSUER: 'https://auth.hly.example/oidc', OAUTH_HLY_CLIENT_ID: 'c1', OAUTH_HLY_ORDER: '40', OAUTH_HLY_DISPLAY_NAME: '厚浪云',
        OAUTH_GH_TYPE: 'github', OAUTH_GH_CLIENT_ID: 'c2', OAUTH_GH_CLIENT_SECRET: 's2', OAUTH_GH_COLOR: '#24292e', OAUTH_GH_ORDER: '10',
      }, '/').accounts.providers;
      assert.deepStrictEqual(p.map(x => [ x.id, x.type, x.order ]), [[ 'gh', 'github', 10 ], [ 'hly', 'oidc', 40 ]]);
      assert.deepStrictEqual(p[0], {
        id: 'gh', type: 'github', issuer: undefined,
        authorizeUrl: 'https://github.com/login/oauth/authorize', tokenUrl: 'https://github.com/login/oauth/access_token', apiUrl: 'https://api.github.com',
        clientId: 'c2', clientSecret: 's2', scope: 'read:user user:email', name: 'GitHub', displayName: 'GitHub', icon: null, color: '#24292e',
        textColor: '#ffffff', description: null, order: 10, website: null,
      });
      assert.deepStrictEqual([ p[1].issuer, p[1].clientSecret, p[1].scope, p[1].displayName ], [ 'https://auth.hly.example/oidc', undefined, 'openid profile email', '厚浪云' ]);
    });

    it('refuses an incomplete provider with a ConfigError naming the variable', () => {
      assert.throws(() => loadSettings({ OAUTH_X_ISSUER: 'https://x.example' }, '/'), /OAUTH_X_CLIENT_ID/);
      assert.throws(() => loadSettings({ OAUTH_X_TYPE: 'github', OAUTH_X_CLIENT_ID: 'c' }, '/'), /OAUTH_X_CLIENT_SECRET/);
      assert.throws(() => loadSettings({ OAUTH_X_TYPE: 'saml', OAUTH_X_CLIENT_ID: 'c' }, '/'), /OAUTH_X_TYPE/);
      assert.throws(() => loadSettings({ OAUTH_X_CLIENT_ID: 'c' }, '/'), /OAUTH_X_TYPE/);
      assert.throws(() => loadSettings({ OAUTH_X_ISSUER: 'not a url', OAUTH_X_CLIENT_ID: 'c' }, '/'), /OAUTH_X_ISSUER/);
    });

    it('JWT_SECRET: refused when short or a published default; required in production with DATABASE_URL', () => {
      assert.throws(() => loadSettings({ JWT_SECRET: 'short' }, '/'), /JWT_SECRET must be at least 32/);
      assert.throws(() => loadSettings({ JWT_SECRET: 'your-access-token-secret-change-this-in-production' }, '/'), /published default/);
      assert.throws(() => loadSettings({ EGG_SERVER_ENV: 'prod', DATABASE_URL: MYSQL }, '/'), /JWT_SECRET is required in production/);
      // egg-scripts sets NODE_ENV=production and leaves EGG_SERVER_ENV unset: egg runs as prod.
      assert.throws(() => loadSettings({ NODE_ENV: 'production', DATABASE_URL: MYSQL }, '/'), /JWT_SECRET is required in production/);
      assert.strictEqual(loadSettings({ EGG_SERVER_ENV: 'prod', DATABASE_URL: MYSQL, JWT_SECRET: SECRET }, '/').accounts.jwtSecret, SECRET);
      // Embedded default (SQLite) in production: generated and kept beside the database (below).
      assert.strictEqual(loadSettings({ EGG_SERVER_ENV: 'prod' }, '/').accounts.jwtSecret, undefined);
      assert.strictEqual(loadSettings({ DATABASE_URL: MYSQL }, '/').accounts.jwtSecret, undefined);
    });

    it('without JWT_SECRET the key is generated once into .jwt-secret beside the SQLite database (0600) and reused', () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ckv-jwt-'));
      const saved = { SQLITE_PATH: process.env.SQLITE_PATH, DATABASE_URL: process.env.DATABASE_URL, JWT_SECRET: process.env.JWT_SECRET };
      try {
        delete process.env.DATABASE_URL;
        delete process.env.JWT_SECRET;
        process.env.SQLITE_PATH = path.join(dir, 'kv.sqlite');
        const first = configDefault({} as EggAppInfo).classworks?.accounts?.jwtSecret;
        const file = path.join(dir, '.jwt-secret');
        assert.match(first as string, /^[0-9a-f]{64}$/);
        assert.strictEqual(fs.readFileSync(file, 'utf8'), first);
        assert.strictEqual((fs.statSync(file).mode % 0o1000).toString(8), '600');
        assert.strictEqual(configDefault({} as EggAppInfo).classworks?.accounts?.jwtSecret, first);
      } finally {
        for (const [ k, v ] of Object.entries(saved)) {
          if (v === undefined) delete process.env[k];
          else process.env[k] = v;
        }
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  });
});
