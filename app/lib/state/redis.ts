import os from 'node:os';
import crypto from 'node:crypto';
import { EventEmitter } from 'node:events';
import IORedis, { Redis as RedisClient } from 'ioredis';
import type { BusMessage, ConsumeResult, DeviceCodeStatus, PresenceEntry, RateHit, SharedState } from './types';

/** Minimal surface of the egg-redis (ioredis 4) client used here. */
export interface CommandClient {
  eval(script: string, numKeys: number, ...args: Array<string | number>): Promise<unknown>;
  evalsha(sha: string, numKeys: number, ...args: Array<string | number>): Promise<unknown>;
  publish(channel: string, message: string): Promise<number>;
  pipeline(): { hlen(key: string): unknown; set(...args: Array<string | number>): unknown; exec(): Promise<Array<[Error | null, unknown]>> };
  smembers(key: string): Promise<string[]>;
  exists(...keys: string[]): Promise<number>;
  set(...args: Array<string | number>): Promise<unknown>;
  sadd(key: string, ...members: string[]): Promise<number>;
  del(...keys: string[]): Promise<number>;
  mget(...keys: string[]): Promise<Array<string | null>>;
  ping(): Promise<string>;
  xadd(key: string, ...args: string[]): Promise<string | null>;
  xrange(key: string, start: string, end: string, ...args: Array<string | number>): Promise<Array<[string, string[]]>>;
}

const LUA = {
  rateHit: `
local c = redis.call('INCR', KEYS[1])
if c == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local t = redis.call('PTTL', KEYS[1])
if t < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); t = tonumber(ARGV[1]) end
return {c, t}`,
  ratePeek: `
local c = redis.call('GET', KEYS[1])
if not c then return {0, 0} end
return {tonumber(c), redis.call('PTTL', KEYS[1])}`,
  codeCreate: `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'createdAt', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1`,
  codeBind: `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'token', ARGV[1])
return 1`,
  codeConsume: `
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local token = redis.call('HGET', KEYS[1], 'token')
if token then redis.call('DEL', KEYS[1]); return {1, token} end
return {2, redis.call('PTTL', KEYS[1])}`,
  // GET and DEL in one step (GETDEL needs Redis 6.2).
  ticketTake: `
local v = redis.call('GET', KEYS[1])
if v then redis.call('DEL', KEYS[1]) end
return v`,
  codeStatus: `
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
return {1, redis.call('HGET', KEYS[1], 'createdAt'), redis.call('HGET', KEYS[1], 'token') or '', redis.call('PTTL', KEYS[1])}`,
  // The presence joins and leaves of one event-loop turn, in order. KEYS: instance set,
  // devices set, then one device hash per operation. ARGV: instance id, then per operation
  // 'j' or 'l', socket id, uuid. Returns each operation's room count after it.
  presenceBatch: `
local out = {}
for i = 3, #KEYS do
  local a = 3 * (i - 3) + 2
  local sid, uuid = ARGV[a + 1], ARGV[a + 2]
  if ARGV[a] == 'j' then
    redis.call('HSET', KEYS[i], sid, ARGV[1])
    redis.call('SADD', KEYS[1], sid .. '|' .. uuid)
    redis.call('SADD', KEYS[2], uuid)
    out[#out + 1] = redis.call('HLEN', KEYS[i])
  else
    redis.call('HDEL', KEYS[i], sid)
    redis.call('SREM', KEYS[1], sid .. '|' .. uuid)
    local n = redis.call('HLEN', KEYS[i])
    if n == 0 then redis.call('SREM', KEYS[2], uuid) end
    out[#out + 1] = n
  end
end
return out`,
  // Raises each KEYS[i] to ARGV[i] (never lowers it); ARGV[#KEYS + 1] is the TTL (ms).
  // A device marked 'unsure' stays so until the mark expires.
  kvRevisionsRaise: `
local ttl = ARGV[#KEYS + 1]
for i, k in ipairs(KEYS) do
  local cur = redis.call('GET', k)
  if cur ~= 'unsure' then
    if tonumber(ARGV[i]) > tonumber(cur or '-1') then redis.call('SET', k, ARGV[i], 'PX', ttl) else redis.call('PEXPIRE', k, ttl) end
  end
end
return #KEYS`,
  // Deletes each KEYS[i] unless it is marked 'unsure'. Only GET and DEL: Redis runs it
  // even at maxmemory with noeviction (DEL is not refused there, SET is).
  kvRevisionsForget: `
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) ~= 'unsure' then redis.call('DEL', k) end
end
return #KEYS`,
  // Drops every socket of a dead instance. KEYS: instance set, devices set, instances set.
  presenceSweep: `
local members = redis.call('SMEMBERS', KEYS[1])
for _, m in ipairs(members) do
  local sep = string.find(m, '|', 1, true)
  if sep then
    local sid = string.sub(m, 1, sep - 1)
    local uuid = string.sub(m, sep + 1)
    local dk = ARGV[1] .. uuid
    if redis.call('HGET', dk, sid) == ARGV[2] then redis.call('HDEL', dk, sid) end
    if redis.call('HLEN', dk) == 0 then redis.call('SREM', KEYS[2], uuid) end
  end
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[3], ARGV[2])
return #members`,
  // KEYS: the worker's snapshot, the set of workers. ARGV: snapshot, TTL (ms), instance id.
  metricsSave: `
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return 1`,
  // KEYS: the set of workers. ARGV: snapshot key prefix. Returns {id, snapshot, ...};
  // workers whose snapshot expired leave the set.
  metricsCollect: `
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local v = redis.call('GET', ARGV[1] .. id)
  if v then
    out[#out + 1] = id
    out[#out + 1] = v
  else
    redis.call('SREM', KEYS[1], id)
  end
end
return out`,
};

type ScriptName = keyof typeof LUA;

/** Most presence operations sent in one script call (presenceBatch). */
const PRESENCE_BATCH_MAX = 500;

interface PresenceOp {
  op: 'j' | 'l';
  uuid: string;
  socketId: string;
  resolve(count: number): void;
  reject(err: unknown): void;
}

/** Hashes per revocationsSince() answer. */
const REVOCATION_PAGE = 1000;

/** A device's known revision is kept a day after its last write or read miss (a reader puts it back). */
const KV_REVISION_TTL_MS = 24 * 3600 * 1000;
const SHA = Object.fromEntries(
  Object.entries(LUA).map(([ k, v ]) => [ k, crypto.createHash('sha1').update(v).digest('hex') ]),
) as Record<ScriptName, string>;

export interface RedisStateOptions {
  url: string;
  prefix: string;
  heartbeatMs: number;
  ttlMs: number;
  logger: { warn(...args: unknown[]): void; info(...args: unknown[]): void };
}

/** Cluster-wide state in Redis; see types.ts for the contract of each method. */
export class RedisState implements SharedState {
  readonly kind = 'redis' as const;
  readonly instanceId = `${os.hostname()}:${process.pid}:${crypto.randomBytes(4).toString('hex')}`;
  private readonly local = new EventEmitter();
  /** This process's own presence entries, re-registered if Redis loses them. */
  private readonly mine = new Map<string, Set<string>>();
  private subscriber?: RedisClient;
  /** Presence joins and leaves waiting for this turn's presenceBatch call, in call order. */
  private presenceOps: PresenceOp[] = [];
  private timer?: NodeJS.Timeout;
  /** The ping awaited after a reconnection, and its resend timer. */
  private ping?: string;
  private pingTimer?: NodeJS.Timeout;
  private readonly channel: string;

  constructor(private readonly client: CommandClient, private readonly opts: RedisStateOptions) {
    this.channel = `${opts.prefix}bus`;
  }

  private key(...parts: string[]) {
    return this.opts.prefix + parts.join(':');
  }

  private async run(name: ScriptName, keys: string[], args: Array<string | number>): Promise<any> {
    try {
      return await this.client.evalsha(SHA[name], keys.length, ...keys, ...args);
    } catch (err) {
      if (!/NOSCRIPT/.test((err as Error).message ?? '')) throw err;
      return this.client.eval(LUA[name], keys.length, ...keys, ...args);
    }
  }

  async start() {
    this.subscriber = new IORedis(this.opts.url, { maxRetriesPerRequest: null, lazyConnect: true });
    this.subscriber.on('error', err => this.opts.logger.warn('[state] subscriber error: %s', err.message));
    let everReady = false;
    let lost = false;
    this.subscriber.on('close', () => {
      if (!everReady || lost) return;
      lost = true;
      this.local.emit('message', { type: 'bus-lost' } satisfies BusMessage);
    });
    this.subscriber.on('ready', () => {
      lost = false;
      if (everReady) {
        // Messages may have been missed while disconnected: once our own ping comes
        // back through the subscription (it is live again), caches resynchronise.
        this.opts.logger.info('[state] redis reconnected, resynchronising');
        this.confirmSubscription();
        this.heartbeat(true).catch(() => undefined);
      }
      everReady = true;
    });
    this.subscriber.on('message', (_channel: string, raw: string) => {
      let parsed: { origin?: string; ping?: string; message?: BusMessage };
      try {
        parsed = JSON.parse(raw);
      } catch {
        return;
      }
      if (parsed.origin === this.instanceId) {
        if (parsed.ping !== undefined && parsed.ping === this.ping) {
          this.ping = undefined;
          clearTimeout(this.pingTimer);
          this.local.emit('message', { type: 'resync' } satisfies BusMessage);
        }
        return;
      }
      if (!parsed.message) return;
      this.local.emit('message', parsed.message);
    });
    await this.subscriber.connect();
    await this.subscriber.subscribe(this.channel);
    await this.heartbeat(true);
    this.timer = setInterval(() => {
      this.heartbeat(false).catch(err => this.opts.logger.warn('[state] presence heartbeat failed: %s', (err as Error).message));
    }, this.opts.heartbeatMs);
    this.timer.unref();
  }

  /** Publishes a ping until it comes back through the subscription (see start()). */
  private confirmSubscription() {
    const ping = `${Date.now()}-${Math.random()}`;
    this.ping = ping;
    clearTimeout(this.pingTimer);
    const send = () => {
      if (this.ping !== ping) return;
      this.client.publish(this.channel, JSON.stringify({ origin: this.instanceId, ping })).catch(() => undefined);
      this.pingTimer = setTimeout(send, 500);
      this.pingTimer.unref();
    };
    send();
  }

  async close() {
    this.ping = undefined;
    clearTimeout(this.pingTimer);
    if (this.timer) clearInterval(this.timer);
    try {
      // Leave no ghost sockets behind on a clean shutdown.
      await this.run('presenceSweep', [ this.key('presence', 'inst', this.instanceId), this.key('presence', 'devices'), this.key('presence', 'instances') ],
        [ this.key('presence', 'dev', ''), this.instanceId ]);
      await this.client.del(this.key('presence', 'alive', this.instanceId));
      // Counters of a stopped worker leave the cluster's sums at once (not at TTL expiry).
      await this.client.del(this.key('metrics', 'snap', this.instanceId));
    } catch {
      // Redis may be gone already; the TTL cleans up.
    }
    this.local.removeAllListeners();
    this.subscriber?.disconnect();
  }

  /**
   * Marks this instance alive and removes the sockets of instances that stopped
   * marking themselves (crashed workers): they disappear within ttlMs + heartbeatMs.
   */
  private async heartbeat(force: boolean) {
    const alive = this.key('presence', 'alive', this.instanceId);
    const refreshed = force ? null : await this.client.set(alive, '1', 'PX', this.opts.ttlMs, 'XX');
    if (!refreshed) {
      await this.client.set(alive, '1', 'PX', this.opts.ttlMs);
      await this.client.sadd(this.key('presence', 'instances'), this.instanceId);
      // This worker's sockets again (Redis lost them, or this instance was swept): batched like joins.
      const rejoins: Array<Promise<number>> = [];
      for (const [ uuid, sockets ] of this.mine) for (const sid of sockets) rejoins.push(this.presenceOp('j', uuid, sid));
      await Promise.all(rejoins);
    }
    const instances = await this.client.smembers(this.key('presence', 'instances'));
    for (const inst of instances) {
      if (inst === this.instanceId) continue;
      if (await this.client.exists(this.key('presence', 'alive', inst))) continue;
      await this.run('presenceSweep', [ this.key('presence', 'inst', inst), this.key('presence', 'devices'), this.key('presence', 'instances') ],
        [ this.key('presence', 'dev', ''), inst ]);
    }
  }

  async rateHit(bucket: string, id: string, windowMs: number): Promise<RateHit> {
    const [ count, ttl ] = await this.run('rateHit', [ this.key('rl', bucket, id) ], [ windowMs ]) as [number, number];
    return { count: Number(count), resetMs: Number(ttl) };
  }

  async ratePeek(bucket: string, id: string): Promise<RateHit> {
    const [ count, ttl ] = await this.run('ratePeek', [ this.key('rl', bucket, id) ], []) as [number, number];
    return { count: Number(count), resetMs: Math.max(0, Number(ttl)) };
  }

  async deviceCodeCreate(code: string, ttlMs: number, now: number) {
    return Number(await this.run('codeCreate', [ this.key('dc', code) ], [ now, ttlMs ])) === 1;
  }

  async deviceCodeBind(code: string, token: string) {
    return Number(await this.run('codeBind', [ this.key('dc', code) ], [ token ])) === 1;
  }

  async deviceCodeConsume(code: string): Promise<ConsumeResult> {
    const r = await this.run('codeConsume', [ this.key('dc', code) ], []) as [number, string | number];
    if (Number(r[0]) === 1) {
      return { status: 'success', token: String(r[1]) };
    }
    if (Number(r[0]) === 2) return { status: 'pending', ttlMs: Number(r[1]) };
    return { status: 'expired' };
  }

  async deviceCodeStatus(code: string): Promise<DeviceCodeStatus | null> {
    const r = await this.run('codeStatus', [ this.key('dc', code) ], []) as [number, string, string, number];
    if (Number(r[0]) !== 1) return null;
    return { createdAt: Number(r[1]), token: r[2] || null, ttlMs: Number(r[3]) };
  }

  async presenceJoin(uuid: string, socketId: string) {
    let set = this.mine.get(uuid);
    if (!set) {
      set = new Set();
      this.mine.set(uuid, set);
    }
    set.add(socketId);
    return this.presenceOp('j', uuid, socketId);
  }

  async presenceLeave(uuid: string, socketId: string) {
    const set = this.mine.get(uuid);
    if (set) {
      set.delete(socketId);
      if (set.size === 0) this.mine.delete(uuid);
    }
    return this.presenceOp('l', uuid, socketId);
  }

  /**
   * Queues a presence join or leave: those of one event-loop turn (a burst of sockets
   * joining) go to Redis in one script call, applied in call order, each answered with the
   * room's count right after it, as one call each would have been.
   */
  private presenceOp(op: 'j' | 'l', uuid: string, socketId: string): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      this.presenceOps.push({ op, uuid, socketId, resolve, reject });
      if (this.presenceOps.length === 1) setImmediate(() => this.flushPresence());
    });
  }

  private flushPresence() {
    while (this.presenceOps.length > 0) {
      const ops = this.presenceOps.splice(0, PRESENCE_BATCH_MAX);
      const keys = [ this.key('presence', 'inst', this.instanceId), this.key('presence', 'devices') ];
      const args: string[] = [ this.instanceId ];
      for (const o of ops) {
        keys.push(this.key('presence', 'dev', o.uuid));
        args.push(o.op, o.socketId, o.uuid);
      }
      this.run('presenceBatch', keys, args).then((counts: unknown[]) => {
        ops.forEach((o, i) => o.resolve(Number(counts[i])));
      }, err => {
        for (const o of ops) o.reject(err);
      });
    }
  }

  async presenceList(): Promise<PresenceEntry[]> {
    const uuids = await this.client.smembers(this.key('presence', 'devices'));
    if (uuids.length === 0) return [];
    const pipe = this.client.pipeline();
    for (const uuid of uuids) pipe.hlen(this.key('presence', 'dev', uuid));
    const results = await pipe.exec();
    return uuids
      .map((uuid, i) => ({ uuid, connections: Number(results[i][1] ?? 0) }))
      .filter(e => e.connections > 0);
  }

  async kvRevisions(deviceIds: number[]) {
    if (deviceIds.length === 0) return [];
    const values = await this.client.mget(...deviceIds.map(d => this.key('kvrev', String(d))));
    // 'unsure' (see kvRevisionsDistrust) reads as unknown.
    return values.map(v => (v === null || v === 'unsure' ? null : Number(v)));
  }

  async kvRevisionsRaise(changes: Array<{ deviceId: number; revision: number }>) {
    if (changes.length === 0) return;
    await this.run('kvRevisionsRaise', changes.map(c => this.key('kvrev', String(c.deviceId))),
      [ ...changes.map(c => c.revision), KV_REVISION_TTL_MS ]);
  }

  async kvRevisionsDistrust(deviceIds: number[], forMs: number) {
    const pipe = this.client.pipeline();
    for (const d of deviceIds) pipe.set(this.key('kvrev', String(d)), 'unsure', 'PX', forMs);
    const results = await pipe.exec();
    const failed = results.find(([ err ]) => err);
    if (failed) throw failed[0];
  }

  async kvRevisionsForget(deviceIds: number[]) {
    if (deviceIds.length === 0) return;
    const results = await Promise.allSettled([
      this.run('kvRevisionsForget', deviceIds.map(d => this.key('kvrev', String(d))), []),
      this.publish({ type: 'kv-dropped', deviceIds }),
    ]);
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed.length === results.length) throw failed[0].reason;
  }

  /**
   * `ckv:revoked`: a stream (entry ids are Redis server time, so every worker's cursor
   * is comparable and survives a Redis restart); trimmed by age on every append.
   */
  async revocationRecord(hash: string, keepMs: number) {
    await this.client.xadd(this.key('revoked'), 'MINID', '~', String(Math.max(0, Date.now() - keepMs)), '*', 'h', hash);
  }

  async revocationsSince(cursor: string | null) {
    const entries = await this.client.xrange(this.key('revoked'), cursor === null ? '-' : `(${cursor}`, '+', 'COUNT', REVOCATION_PAGE);
    return {
      cursor: entries.length > 0 ? entries[entries.length - 1][0] : cursor,
      hashes: entries.map(([ , fields ]) => fields[1]),
    };
  }

  /** `ckv:metrics:snap:<instanceId>`, PX = PRESENCE_TTL_MS (renewed every heartbeat by app/lib/metrics.ts). */
  async metricsSave(snapshot: string) {
    await this.run('metricsSave', [ this.key('metrics', 'snap', this.instanceId), this.key('metrics', 'instances') ],
      [ snapshot, this.opts.ttlMs, this.instanceId ]);
  }

  async metricsOthers(): Promise<string[]> {
    const flat = await this.run('metricsCollect', [ this.key('metrics', 'instances') ], [ this.key('metrics', 'snap', '') ]) as string[];
    const out: string[] = [];
    for (let i = 0; i + 1 < flat.length; i += 2) if (flat[i] !== this.instanceId) out.push(flat[i + 1]);
    return out;
  }

  async probe() {
    await this.client.ping();
  }

  async ticketPut(kind: string, id: string, value: string, ttlMs: number) {
    return await this.client.set(this.key('tk', kind, id), value, 'PX', Math.max(1, Math.ceil(ttlMs)), 'NX') === 'OK';
  }

  async ticketTake(kind: string, id: string) {
    const v = await this.run('ticketTake', [ this.key('tk', kind, id) ], []) as string | null;
    return v ?? null;
  }

  async ticketExists(kind: string, id: string) {
    return await this.client.exists(this.key('tk', kind, id)) === 1;
  }

  async publish(message: BusMessage) {
    this.local.emit('message', message);
    await this.client.publish(this.channel, JSON.stringify({ origin: this.instanceId, message }));
  }

  onMessage(handler: (message: BusMessage) => void) {
    this.local.on('message', handler);
  }
}
