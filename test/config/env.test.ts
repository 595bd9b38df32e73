import assert from 'node:assert';
import path from 'node:path';
import { ConfigError, loadSettings } from '../../config/env';

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
      assert.deepStrictEqual(s.rateLimit, { ip: 100, kvRead: 1024, kvWrite: 512, kvDelete: 256, kvBatch: 128, password: 10, events: 120, history: 60, tokenFailures: 30, windowMs: 60000 });
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

    it('uses the CPU count as the worker default only when Redis is configured', () => {
      assert.strictEqual(loadSettings({}, '/').workers, 1);
      assert.ok(loadSettings({ REDIS_URL: 'redis://127.0.0.1:6379/0' }, '/').workers >= 1);
      assert.strictEqual(loadSettings({ REDIS_URL: 'redis://127.0.0.1:6379/0', WORKERS: '3' }, '/').workers, 3);
    });
  });
});
