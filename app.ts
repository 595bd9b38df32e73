import type { EventEmitter } from 'node:events';
import type { IncomingMessage } from 'node:http';
import type { Application, IBoot } from 'egg';
import IORedis from 'ioredis';
import { createAdapter } from '@socket.io/redis-adapter';
import { MemoryState } from './app/lib/state/memory';
import { RedisState, CommandClient } from './app/lib/state/redis';
import { Realtime } from './app/lib/realtime';
import { ValueCache } from './app/lib/valueCache';
import { Revocations, hashToken } from './app/lib/revocations';
import { MysqlKvWriter } from './app/lib/kvWriter';
import { installQueryTimeout } from './app/lib/queryTimeout';
import { coalescePublishes } from './app/lib/tickWrites';
import { LogTrimmer } from './app/lib/logTrimmer';
import { Metrics } from './app/lib/metrics';
import { CachedFetch } from './app/lib/cachedFetch';
import { logPadding } from './app/lib/logRedaction';
import { ConnectionsPerIp, requestIp } from './app/lib/socketLimits';

export default class AppBoot implements IBoot {
  private adapterClients: IORedis[] = [];

  constructor(private readonly app: Application) {
    // ctx.logger / ctx.coreLogger prefix every line with the request's method and URL; URLs
    // carry tokens and passwords (/apps/tokens/<token>/…, ?token=…): the prefix is redacted.
    const ContextLogger = app.ContextLogger;
    app.ContextLogger = class RedactedContextLogger extends ContextLogger {
      get paddingMessage() {
        return logPadding(this.ctx);
      }
    };
  }

  configWillLoad() {
    // First in the whole chain, so egg's body-parser errors are rendered as JSON too.
    this.app.config.coreMiddleware.unshift('errorHandler');
    // Outside errorHandler: HTTP metrics see the status actually sent, errors included.
    this.app.config.coreMiddleware.unshift('httpMetrics');
  }

  configDidLoad() {
    // egg-sequelize created app.model in its own configDidLoad (plugins come first) and
    // opens no connection before the next tick: every connection of the pool is bounded.
    installQueryTimeout(this.app.model, this.app.settings.dbQueryTimeoutMs);
    // Before the `server` event, which egg-mock emits before didLoad.
    this.limitConnectionsPerIp();
  }

  async didLoad() {
    const { app } = this;
    const s = app.settings;
    app.sharedState = s.redisUrl
      ? new RedisState((app as unknown as { redis: CommandClient }).redis, {
        url: s.redisUrl,
        prefix: s.redisPrefix,
        heartbeatMs: s.presenceHeartbeatMs,
        ttlMs: s.presenceTtlMs,
        logger: app.coreLogger,
      })
      : new MemoryState();
    app.realtime = new Realtime(app);
    app.revocations = new Revocations(app.sharedState, {
      pollMs: s.revocationPollMs,
      // Longer than a token cache entry lives, whatever TOKEN_CACHE_TTL_MS is.
      keepMs: s.tokenCacheTtlMs + 60000,
      recheckMs: s.tokenRecheckMs,
      revoked: hashes => {
        for (const token of [ ...app.tokenCache.tokens() ]) if (hashes.has(hashToken(token))) app.tokenCache.delete(token);
        app.realtime.revokeHashed(hashes);
      },
      recheck: () => app.realtime.recheckJoined(),
      warn: (message, ...args) => app.coreLogger.warn(message, ...args),
    });
    app.metrics = new Metrics({
      state: app.sharedState,
      sockets: () => app.io.of('/').sockets.size,
      joinedTokens: () => app.realtime.joinedTokens(),
      snapshotEveryMs: s.presenceHeartbeatMs,
      warn: (message, ...args) => app.coreLogger.warn(message, ...args),
    });
    app.metricsCounts = new CachedFetch();
    // Test server envs only (EGG_SERVER_ENV unittest or test, config/env.ts): the worker dies after the
    // change of this key committed, before anyone is told (CONTRACT.md §7 recovery).
    const crashKey = s.faults.crashBeforeBroadcastKey;
    if (crashKey) {
      app.kvEvents.beforePublish = change => {
        if (change.key === crashKey) process.kill(process.pid, 'SIGKILL');
      };
    }
    // Every committed change is broadcast to its device room once (app/lib/realtime.ts).
    app.kvEvents.subscribe(() => app.metrics.eventDelivered('kv-key-changed'));

    let lastWarning = 0;
    app.valueCache = new ValueCache(s.valueCacheBytes, app.sharedState, (what, err) => {
      // At most one line every 10 s while Redis is away.
      if (Date.now() - lastWarning < 10000) return;
      lastWarning = Date.now();
      app.coreLogger.warn('[valueCache] %s: %s', what, err.message);
    });

    // The cache is trusted only while the shared-state bus is connected (see ValueCache.suspend()).
    app.sharedState.onMessage(message => {
      if (message.type === 'bus-lost') app.valueCache.suspend();
      else if (message.type === 'resync') app.valueCache.resume();
      else if (message.type === 'kv-dropped') app.valueCache.drop(message.deviceIds);
    });

    let lastTrimWarning = 0;
    app.logTrimmer = new LogTrimmer(
      (deviceId, revision, events) => app.createAnonymousContext().service.changes.trim(deviceId, revision, events),
      err => {
        if (Date.now() - lastTrimWarning < 10000) return;
        lastTrimWarning = Date.now();
        app.coreLogger.warn('[changes] trimming the device log failed: %s', err.message);
      },
    );

    if (s.database.dialect === 'mysql') {
      app.kvWriter = new MysqlKvWriter({
        url: s.database.url,
        connections: s.kvWriteConnections,
        maxBatch: s.kvWriteBatch,
        queryTimeoutMs: s.dbQueryTimeoutMs,
        connectTimeoutMs: 3000,
      });
      app.kvWriter.onCommitted = (deviceId, revision) => app.logTrimmer.touch(deviceId, revision);
    }

    if (s.redisUrl) {
      // The adapter's own pub/sub connections, separate from egg-redis.
      const pub = new IORedis(s.redisUrl, { maxRetriesPerRequest: null });
      coalescePublishes(pub);
      const sub = pub.duplicate();
      for (const c of [ pub, sub ]) c.on('error', err => app.coreLogger.warn('[socket.io adapter] redis: %s', err.message));
      this.adapterClients = [ pub, sub ];
      app.io.adapter(createAdapter(pub, sub, { key: `${s.redisPrefix}socket.io`, requestsTimeout: 3000 }));
    }
  }

  /**
   * SOCKET_MAX_PER_IP: every Engine.IO handshake (websocket, or polling from Socket.IO 2.x
   * (EIO3) and 4.x clients alike) passes engine.io's allowRequest before a session
   * exists; an IP holding the limit is refused there (403). Counted when allowed (so a
   * burst of handshakes cannot all pass before the first connects), released when the
   * connection closes or its handshake fails. Per worker: the egg master routes every
   * connection of one address to the same worker.
   */
  private limitConnectionsPerIp() {
    const { app } = this;
    const open = new ConnectionsPerIp();
    const COUNTED = Symbol('ckv:countedIp');
    type Req = IncomingMessage & { [COUNTED]?: string };
    // egg-socket.io attached Socket.IO on this event before (its listener comes first).
    app.on('server', () => {
      const engine = app.io.engine as unknown as EventEmitter & {
        opts: { allowRequest?: (req: IncomingMessage, fn: (err: string | null | undefined, ok: boolean) => void) => void };
      };
      const previous = engine.opts.allowRequest;
      engine.opts.allowRequest = (req: Req, fn) => {
        const ip = requestIp(req, app.settings.trustProxy);
        if (!open.allows(ip, app.settings.socketMaxPerIp)) return fn('too many connections from this address', false);
        open.opened(ip);
        req[COUNTED] = ip;
        if (!previous) return fn(null, true);
        previous(req, (err, ok) => {
          if (!ok) {
            open.closed(ip);
            delete req[COUNTED];
          }
          fn(err, ok);
        });
      };
      engine.on('connection', (conn: EventEmitter & { request: Req }) => {
        const ip = conn.request[COUNTED];
        if (ip === undefined) return;
        delete conn.request[COUNTED];
        conn.once('close', () => open.closed(ip));
      });
      engine.on('connection_error', (err: { req?: Req }) => {
        const ip = err.req?.[COUNTED];
        if (ip === undefined) return;
        delete err.req![COUNTED];
        open.closed(ip);
      });
    });
  }

  async willReady() {
    await this.app.sharedState.start();
    await this.app.revocations.start();
    this.app.logTrimmer.start();
    this.app.metrics.start();
  }

  async beforeClose() {
    this.app.logTrimmer.close();
    this.app.realtime.close();
    this.app.metrics.close();
    this.app.revocations.close();
    await this.app.sharedState.close();
    await this.app.kvWriter?.close();
    this.app.valueCache.close();
    for (const c of this.adapterClients) c.disconnect();
  }
}
