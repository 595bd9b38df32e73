import type { Application } from 'egg';
import type { Socket } from 'socket.io';
import type { KvChange } from './kvEvents';
import type { TokenInfo } from './tokenCache';
import { ChangeFeeds } from './changeFeed';
import { HttpError, describeError, isDatabaseUnavailable } from './errors';
import { SocketQueues } from './socketQueue';
import { requestIp } from './socketLimits';
import { describeUserAgent, deviceNameOf } from './userAgent';
import { hashToken } from './revocations';

/**
 * How long a join without `since` waits for its device's starting revision before it is
 * answered all the same (the database failing): a change committed right after that
 * `joined` may then never reach the socket (ChangeFeeds.ready()).
 */
const FEED_READY_MS = 5000;

/** Tokens per query of recheckJoined(). */
const RECHECK_CHUNK = 500;

export type AckResult =
  | { ok: true; uuid?: string }
  | { ok: false; reason: 'missing_token' | 'invalid_token' | 'invalid_since' | 'database_error' | 'too_many_requests' };

/** The worker-to-worker message that carries a committed KV change (Socket.IO adapter serverSideEmit). */
const KV_CHANGE_SIGNAL = 'ckv:kv-change';

/**
 * Operations a socket may have queued at once (running one included). Beyond, an
 * operation is refused at once: joins and leaves answer the ack `too_many_requests`,
 * send-event and get-event-history their `rate_limited` error (app/io/controller/event.ts).
 */
export const MAX_PENDING_OPERATIONS = 64;

/** A join or leave refused because the socket has MAX_PENDING_OPERATIONS queued: the ack only, no event. */
const tooManyRequests = (): AckResult => ({ ok: false, reason: 'too_many_requests' });

/** What this worker remembers about one of its sockets. */
interface SocketState {
  /** device uuid → tokens this socket joined it with */
  rooms: Map<string, Set<string>>;
  /** token → what it resolved to, in join order (the most recent join last); only tokens still held. */
  tokens: Map<string, TokenInfo>;
  /** The handshake's User-Agent header ("" if none) and the client name parsed from it, once per socket. */
  userAgent: string;
  clientName: string;
  closed: boolean;
  /** Rejoin announcements left (takeRejoin), and when they were last counted. */
  rejoins?: { left: number; at: number };
}

/** Rejoins with a held token announced to the room per socket at once, and the time one more takes. */
export const REJOIN_BURST = 3;
export const REJOIN_REFILL_MS = 10000;

/** Takes one rejoin announcement of the socket's budget (a token bucket); false when none is left. */
export function takeRejoin(state: Pick<SocketState, 'rejoins'>, now: number): boolean {
  const b = state.rejoins ?? { left: REJOIN_BURST, at: now };
  const gained = Math.floor((now - b.at) / REJOIN_REFILL_MS);
  const left = Math.min(REJOIN_BURST, b.left + gained);
  // Refill time counts from the last refill, or from now when the bucket was full.
  const at = left === REJOIN_BURST ? now : b.at + gained * REJOIN_REFILL_MS;
  if (left === 0) {
    state.rejoins = { left, at };
    return false;
  }
  state.rejoins = { left: left - 1, at };
  return true;
}

/** What a socket sends events and reads history as (send-event, get-event-history). */
export interface SocketChannel {
  /** The token it joined with most recently (among those it still holds). */
  token: TokenInfo;
  /** That token's deviceName: the client's name from its User-Agent, ` - <note>` when the token has one. */
  deviceName: string;
  /** Every device room it is in. */
  devices: Array<{ id: number; uuid: string }>;
}

/**
 * The realtime channel of one worker: token rooms, presence, and fan-out of KV
 * changes. Rooms are device uuids; broadcasts go through the Socket.IO adapter
 * (Redis in a cluster), presence counts through the shared state.
 */
export class Realtime {
  private readonly sockets = new Map<string, { socket: Socket; state: SocketState }>();
  /** token → ids of local sockets that joined with it (for revocation). */
  private readonly byToken = new Map<string, Set<string>>();
  /** Each socket's operations (joins, leaves, send-event, get-event-history) run one at a time, in arrival order. */
  private readonly queues = new SocketQueues(MAX_PENDING_OPERATIONS);
  /** token → lookups in flight, and the tokens revoked while one was (their answer is stale). */
  private readonly resolving = new Map<string, number>();
  private readonly revokedWhileResolving = new Set<string>();
  /** token (only while a lookup of it is in flight) → number of `token-updated` received meanwhile. */
  private readonly updatedWhileResolving = new Map<string, number>();
  /** Ordered, gap-free kv-key-changed delivery per device to this worker's sockets (CONTRACT.md §7). */
  readonly feeds: ChangeFeeds;

  constructor(private readonly app: Application) {
    const changes = () => app.createAnonymousContext().service.changes;
    this.feeds = new ChangeFeeds({
      read: (device, since, limit) => changes().since(device, since, limit),
      latest: ids => changes().latestRevisions(ids),
      emitRoom: (uuid, change, except) => {
        const room = this.io.local.to(uuid);
        (except.length ? room.except(except) : room).emit('kv-key-changed', change);
      },
      emitTo: (socket, event, payload) => (socket as Socket).emit(event, payload),
      emitRoomEvent: (uuid, event, payload) => this.io.local.to(uuid).emit(event, payload),
      warn: (message, ...args) => app.logger.warn(message, ...args),
    }, app.settings.changeFeed);
    this.feeds.start();
    app.kvEvents.subscribe(change => this.broadcastChange(change));
    // Changes committed by the other workers and instances (none in the embedded mode).
    (this.io as unknown as { on(event: string, fn: (change: KvChange) => void): void })
      .on(KV_CHANGE_SIGNAL, change => this.feeds.receive(change));
    app.sharedState.onMessage(message => {
      if (message.type === 'token-revoked') {
        app.tokenCache.delete(message.token);
        app.revocations.noteHandled(message.token);
        this.revoke(message.token, message.uuid);
      } else if (message.type === 'token-updated') {
        app.tokenCache.delete(message.token);
        this.refreshToken(message.token).catch(() => undefined);
      } else if (message.type === 'resync') {
        app.tokenCache.clear();
        // Revocations broadcast while the bus was away were missed: ask the database.
        app.revocations.recheckNow().catch(() => undefined);
      }
    });
  }

  /** Tokens with at least one socket joined on this worker (metrics: online tokens). */
  joinedTokens(): Iterable<string> {
    return this.byToken.keys();
  }

  private get io() {
    return this.app.io.of('/');
  }

  /**
   * A change committed here: to every other worker and instance, whose feeds put it in
   * order with the others (app/lib/changeFeed.ts), and to this worker's sockets through its
   * feed. The other workers' copy leaves first: its PUBLISH goes out at once (the first of
   * a tick, app/lib/tickWrites.ts), so they write to their sockets while this one writes to its own.
   */
  private broadcastChange(change: KvChange) {
    if (this.app.settings.redisUrl) this.io.serverSideEmit(KV_CHANGE_SIGNAL, change);
    this.feeds.receive(change);
  }

  close() {
    this.feeds.close();
  }

  /**
   * The state of a connected socket, created on its first join. A socket that is not
   * (or no longer) connected gets none: it could never be detached, so it would leak.
   */
  private stateOf(socket: Socket): SocketState | undefined {
    const entry = this.sockets.get(socket.id);
    if (entry) return entry.state;
    if (!socket.connected) return undefined;
    const header = socket.handshake.headers['user-agent'];
    const userAgent = typeof header === 'string' ? header : '';
    const state: SocketState = { rooms: new Map(), tokens: new Map(), userAgent, clientName: describeUserAgent(userAgent), closed: false };
    this.sockets.set(socket.id, { socket, state });
    return state;
  }

  /**
   * token → device. A revocation that arrives while the lookup runs wins: the row may
   * have been read just before it was deleted, and the socket would then join with a
   * dead token that no later revocation message would ever remove. An update (its note)
   * that arrives meanwhile makes it look again: the row may have been read before it.
   */
  private async resolve(token: string, ip?: string) {
    this.resolving.set(token, (this.resolving.get(token) ?? 0) + 1);
    try {
      let updates = this.updatedWhileResolving.get(token) ?? 0;
      for (;;) {
        const service = this.app.createAnonymousContext().service.appInstall;
        // A client's join is throttled per IP (RATE_LIMIT_TOKEN_FAILURES); the server's own refreshes are not.
        const info = await (ip === undefined ? service.resolveToken(token) : service.lookupToken(token, ip));
        const now = this.updatedWhileResolving.get(token) ?? 0;
        if (now === updates) return info && !this.revokedWhileResolving.has(token) ? info : null;
        updates = now;
      }
    } finally {
      const left = (this.resolving.get(token) ?? 1) - 1;
      if (left > 0) {
        this.resolving.set(token, left);
      } else {
        this.resolving.delete(token);
        this.revokedWhileResolving.delete(token);
        this.updatedWhileResolving.delete(token);
      }
    }
  }

  /**
   * The install behind `token` changed (its note; `token-updated`, from any worker): the
   * sockets of this worker joined with it take the new TokenInfo (senderInfo,
   * requestedBy), looked up once for all of them. A failed lookup leaves them with what
   * they had. Never throws.
   */
  async refreshToken(token: string): Promise<void> {
    if (this.resolving.has(token)) this.updatedWhileResolving.set(token, (this.updatedWhileResolving.get(token) ?? 0) + 1);
    if (!this.byToken.has(token)) return;
    let info;
    try {
      info = await this.resolve(token);
    } catch (err) {
      this.app.logger.warn('[realtime] token refresh failed: %s', describeError(err));
      return;
    }
    if (!info) return; // uninstalled meanwhile: its revocation removes it
    // Now another device's token (an import that replaced it, CONTRACT.md §9): for the device
    // its sockets joined, it is revoked (they get `left`, and may join again with it).
    const joinedTo = this.uuidOf(token);
    if (joinedTo !== undefined && joinedTo !== info.uuid) return this.revoke(token, joinedTo);
    for (const socketId of this.byToken.get(token) ?? []) {
      const tokens = this.sockets.get(socketId)?.state.tokens;
      // Map.set on an existing key keeps its place: the most recent join stays the most recent.
      if (tokens?.has(token)) tokens.set(token, info);
    }
  }

  /**
   * Runs `op` after every earlier operation of this socket: a client that sends
   * join-token then leave-token (or joins twice, or joins then send-event) gets them
   * applied in that order, and events and acks come out in the same order. With
   * MAX_PENDING_OPERATIONS already queued, answers `refused()` at once instead. `op`
   * must not throw (a rejection is passed to the caller, the queue goes on).
   */
  serial<T>(socket: Socket, op: () => Promise<T>, refused: () => T): Promise<T> {
    return this.queues.run(socket.id, op, refused);
  }

  /** Room count after a change; falls back to this worker's view if shared state is down. */
  private async count(op: () => Promise<number>, uuid: string): Promise<number> {
    try {
      return await op();
    } catch (err) {
      this.app.logger.warn('[realtime] presence unavailable: %s', (err as Error).message);
      return this.io.adapter.rooms.get(uuid)?.size ?? 0;
    }
  }

  /**
   * Joins the token's device room (join-token, or the handshake token). With `since`, after
   * `joined` the socket is sent the device's changes after that revision, then the live ones
   * (CONTRACT.md §7). Never throws.
   */
  join(socket: Socket, token: string, since?: number): Promise<AckResult> {
    return this.serial(socket, () => this.doJoin(socket, token, since), tooManyRequests);
  }

  /**
   * A join refused for its input before any lookup (a `since` that is not a whole number
   * ≥ 0): join-error to the socket, in order with its other operations; the ack's answer.
   */
  refuseJoin(socket: Socket, reason: 'invalid_since'): Promise<AckResult> {
    return this.serial(socket, async () => {
      socket.emit('join-error', { by: 'token', reason });
      return { ok: false, reason };
    }, tooManyRequests);
  }

  /** Leaves the token's device room (leave-token). Never throws. */
  leaveToken(socket: Socket, token: string): Promise<AckResult> {
    return this.serial(socket, () => this.doLeaveToken(socket, token), tooManyRequests);
  }

  /** Leaves every device room of this socket (leave-all). Never throws. */
  leaveAll(socket: Socket): Promise<AckResult> {
    return this.serial(socket, () => this.doLeaveAll(socket), tooManyRequests);
  }

  /** The socket's client address (set by the connection middleware; as ctx.clientIp for HTTP). */
  private clientIpOf(socket: Socket): string {
    const data = socket.data as { clientIp?: string };
    if (data.clientIp === undefined) data.clientIp = requestIp(socket.request, this.app.settings.trustProxy);
    return data.clientIp;
  }

  private async doJoin(socket: Socket, token: string, since: number | undefined): Promise<AckResult> {
    const held = this.sockets.get(socket.id)?.state;
    const heldInfo = held && !held.closed ? held.tokens.get(token) : undefined;
    if (held && heldInfo) return this.rejoin(socket, held, token, heldInfo, since);
    let info;
    try {
      info = await this.resolve(token, this.clientIpOf(socket));
    } catch (err) {
      // Past RATE_LIMIT_TOKEN_FAILURES unknown tokens from this address: refused before any query.
      if (err instanceof HttpError && err.status === 429) return tooManyRequests();
      // One line, no stack nor error properties: the failed query (err.sql) holds the token.
      if (isDatabaseUnavailable(err)) this.app.logger.warn('[realtime] token lookup failed: %s', describeError(err));
      else this.app.logger.error('[realtime] token lookup failed: %s', describeError(err));
      const reason = 'database_error' as const;
      socket.emit('join-error', { by: 'token', reason });
      return { ok: false, reason };
    }
    if (!info) {
      socket.emit('join-error', { by: 'token', reason: 'invalid_token' });
      return { ok: false, reason: 'invalid_token' };
    }
    const state = this.stateOf(socket);
    // Disconnected while the token was looked up: nobody is left to answer.
    if (!state || state.closed) return { ok: false, reason: 'invalid_token' };
    const { uuid } = info;
    socket.join(uuid);
    // Held out of the room's kv-key-changed until `joined` is out (released below).
    this.feeds.join(socket, { deviceId: info.deviceId, uuid }, since);
    let tokens = state.rooms.get(uuid);
    if (!tokens) {
      tokens = new Set();
      state.rooms.set(uuid, tokens);
    }
    tokens.add(token);
    state.tokens.delete(token); // re-inserted last: the most recent join
    state.tokens.set(token, info);
    let holders = this.byToken.get(token);
    if (!holders) {
      holders = new Set();
      this.byToken.set(token, holders);
    }
    holders.add(socket.id);

    // A join without `since` starts at the feed's position: `joined` waits until the feed knows it (ChangeFeeds.ready()).
    const [ connections, ready ] = await Promise.all([
      this.count(() => this.app.sharedState.presenceJoin(uuid, socket.id), uuid),
      since === undefined ? this.feeds.ready(uuid, FEED_READY_MS) : true,
    ]);
    if (!ready) this.app.logger.warn('[changes] device %s: its revision was not read within %s ms; joined without it (a change right after joined may be missed)', uuid, FEED_READY_MS);
    if (state.closed) {
      // Disconnected while we were registering: detach() has left the room; make sure.
      await this.count(() => this.app.sharedState.presenceLeave(uuid, socket.id), uuid);
      return { ok: false, reason: 'invalid_token' };
    }
    if (!state.rooms.get(uuid)?.has(token)) {
      // Revoked while we were registering: the socket already got `left` (or, still joined
      // with another token, goes on with its changes).
      this.feeds.release(socket.id, uuid);
      return { ok: false, reason: 'invalid_token' };
    }
    return this.finishJoin(socket, state, token, info, connections);
  }

  /**
   * Rejoining with a token this socket holds: no lookup (the socket holds what it resolved
   * to). CONTRACT.md §4: `device-joined` to the room (count unchanged), then `joined`. A
   * client looping on join-token would flood its own room that way, so each socket has
   * REJOIN_BURST such announcements, one more every REJOIN_REFILL_MS; past them the
   * joiner alone is answered `joined` (no presence update, nothing to the room).
   * With `since` the socket is caught up again from there (§7).
   */
  private async rejoin(socket: Socket, state: SocketState, token: string, info: TokenInfo, since: number | undefined): Promise<AckResult> {
    const { uuid } = info;
    state.tokens.delete(token); // re-inserted last: the most recent join
    state.tokens.set(token, info);
    this.feeds.join(socket, { deviceId: info.deviceId, uuid }, since);
    if (!takeRejoin(state, Date.now())) return this.finishJoin(socket, state, token, info, undefined);
    const connections = await this.count(() => this.app.sharedState.presenceJoin(uuid, socket.id), uuid);
    if (state.closed || !state.rooms.get(uuid)?.has(token)) {
      this.feeds.release(socket.id, uuid);
      return { ok: false, reason: 'invalid_token' };
    }
    return this.finishJoin(socket, state, token, info, connections);
  }

  /**
   * The end of a join: `device-joined` to the room (unless the rejoin is not announced:
   * `connections` undefined), `joined` to the joiner, then the socket takes the room's
   * live changes (its catch-up, if any, continues on its own).
   */
  private finishJoin(socket: Socket, state: SocketState, token: string, info: TokenInfo, connections: number | undefined): AckResult {
    const { uuid } = info;
    if (connections !== undefined) this.io.to(uuid).emit('device-joined', { uuid, connections });
    this.emitJoined(socket, state, token, info);
    this.feeds.release(socket.id, uuid);
    return { ok: true, uuid };
  }

  private emitJoined(socket: Socket, state: SocketState, token: string, info: TokenInfo) {
    socket.emit('joined', {
      by: 'token',
      uuid: info.uuid,
      token,
      tokenInfo: {
        isReadOnly: info.isReadOnly,
        deviceType: info.deviceType,
        deviceName: deviceNameOf(state.clientName, info.note),
        userAgent: state.userAgent,
      },
    });
  }

  private async doLeaveToken(socket: Socket, token: string): Promise<AckResult> {
    let info: TokenInfo | null | undefined = this.sockets.get(socket.id)?.state.tokens.get(token);
    try {
      // A token this socket holds is known; any other is looked up, throttled like a join.
      info ??= await this.resolve(token, this.clientIpOf(socket));
    } catch (err) {
      if (err instanceof HttpError && err.status === 429) return tooManyRequests();
      this.app.logger.warn('[realtime] token lookup failed: %s', describeError(err));
      return { ok: false, reason: 'database_error' };
    }
    if (!info) return { ok: false, reason: 'invalid_token' };
    await this.leaveRoom(socket, info.uuid);
    return { ok: true, uuid: info.uuid };
  }

  private async doLeaveAll(socket: Socket): Promise<AckResult> {
    const entry = this.sockets.get(socket.id);
    for (const uuid of [ ...entry?.state.rooms.keys() ?? [] ]) await this.leaveRoom(socket, uuid);
    return { ok: true };
  }

  private forget(socketId: string, state: SocketState, uuid: string) {
    for (const token of state.rooms.get(uuid) ?? []) {
      state.tokens.delete(token);
      const holders = this.byToken.get(token);
      holders?.delete(socketId);
      if (holders && holders.size === 0) this.byToken.delete(token);
    }
    state.rooms.delete(uuid);
    this.feeds.leave(socketId, uuid);
  }

  /** Leaves a device room (if joined) and tells the room the new count. */
  private async leaveRoom(socket: Socket, uuid: string) {
    const state = this.sockets.get(socket.id)?.state;
    if (!state?.rooms.has(uuid)) return;
    this.forget(socket.id, state, uuid);
    socket.leave(uuid);
    const connections = await this.count(() => this.app.sharedState.presenceLeave(uuid, socket.id), uuid);
    this.io.to(uuid).emit('device-left', { uuid, connections });
  }

  /** The socket's current token and device rooms; undefined when it is in no device room. */
  channelOf(socket: Socket): SocketChannel | undefined {
    const state = this.sockets.get(socket.id)?.state;
    if (!state || state.closed || state.rooms.size === 0) return undefined;
    let token: TokenInfo | undefined;
    for (const info of state.tokens.values()) token = info;
    if (!token) return undefined;
    const devices: SocketChannel['devices'] = [];
    for (const [ uuid, tokens ] of state.rooms) {
      const first = state.tokens.get(tokens.values().next().value ?? '');
      if (first) devices.push({ id: first.deviceId, uuid });
    }
    return { token, deviceName: deviceNameOf(state.clientName, token.note), devices };
  }

  /**
   * Sends `event` to every socket in the device rooms `uuids` but `from`, on every worker
   * and instance (one broadcast: a socket in several of the rooms receives it once).
   */
  relay(from: Socket, uuids: string[], event: string, payload: unknown) {
    from.to(uuids).emit(event, payload);
  }

  /** Runs after a socket disconnected (connection middleware, after `await next()`). */
  async detach(socket: Socket) {
    const entry = this.sockets.get(socket.id);
    if (!entry) return;
    entry.state.closed = true;
    this.sockets.delete(socket.id);
    for (const uuid of [ ...entry.state.rooms.keys() ]) {
      this.forget(socket.id, entry.state, uuid);
      const connections = await this.count(() => this.app.sharedState.presenceLeave(uuid, socket.id), uuid);
      this.io.to(uuid).emit('device-left', { uuid, connections });
    }
  }

  /** A token was uninstalled (on any worker): its sockets here leave its device room. */
  revoke(token: string, uuid: string) {
    if (this.resolving.has(token)) this.revokedWhileResolving.add(token);
    const holders = this.byToken.get(token);
    if (!holders) return;
    this.byToken.delete(token);
    for (const socketId of holders) {
      const entry = this.sockets.get(socketId);
      if (!entry) continue;
      entry.state.tokens.delete(token);
      const tokens = entry.state.rooms.get(uuid);
      tokens?.delete(token);
      if (tokens && tokens.size > 0) continue; // still joined with another valid token
      entry.state.rooms.delete(uuid);
      this.feeds.leave(socketId, uuid);
      entry.socket.leave(uuid);
      entry.socket.emit('left', { by: 'token', uuid, reason: 'token_revoked' });
      this.count(() => this.app.sharedState.presenceLeave(uuid, socketId), uuid)
        .then(connections => this.io.to(uuid).emit('device-left', { uuid, connections }))
        .catch(() => undefined);
    }
  }

  /** The device uuid a locally joined token resolved to. */
  private uuidOf(token: string): string | undefined {
    for (const socketId of this.byToken.get(token) ?? []) {
      const info = this.sockets.get(socketId)?.state.tokens.get(token);
      if (info) return info.uuid;
    }
    return undefined;
  }

  /** Tokens named by the revocation record (by hash, app/lib/revocations.ts): revoked here too. */
  revokeHashed(hashes: Set<string>) {
    for (const token of this.resolving.keys()) if (hashes.has(hashToken(token))) this.revokedWhileResolving.add(token);
    for (const token of [ ...this.byToken.keys() ]) {
      if (!hashes.has(hashToken(token))) continue;
      const uuid = this.uuidOf(token);
      if (uuid) this.revoke(token, uuid);
    }
  }

  /**
   * Checks the tokens of this worker's joined sockets against the database (one query per
   * RECHECK_CHUNK tokens); those uninstalled are revoked here (their sockets get `left`).
   * Catches revocations whose bus message and record never arrived. Rejects when the
   * database cannot answer.
   */
  async recheckJoined(): Promise<void> {
    const tokens = [ ...this.byToken.keys() ];
    for (let i = 0; i < tokens.length; i += RECHECK_CHUNK) {
      const chunk = tokens.slice(i, i + RECHECK_CHUNK);
      const rows = await this.app.model.query('SELECT token FROM app_installs WHERE token IN (?)', {
        replacements: [ chunk ], type: 'SELECT', raw: true,
      }) as Array<{ token: string }>;
      // The token column is case-insensitive on MySQL: compare exactly here.
      const alive = new Set(rows.map(r => r.token));
      for (const token of chunk) {
        if (alive.has(token)) continue;
        const uuid = this.uuidOf(token);
        this.app.tokenCache.delete(token);
        if (uuid) this.revoke(token, uuid);
      }
    }
  }
}
