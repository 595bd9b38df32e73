import type { Application } from 'egg';
import type { Socket } from 'socket.io';
import type { KvChange } from './kvEvents';
import type { TokenInfo } from './tokenCache';
import { HttpError, describeError, isDatabaseUnavailable } from './errors';
import { SocketQueues } from './socketQueue';
import { requestIp } from './socketLimits';
import { describeUserAgent, deviceNameOf } from './userAgent';

export type AckResult =
  | { ok: true; uuid?: string }
  | { ok: false; reason: 'missing_token' | 'invalid_token' | 'database_error' | 'too_many_requests' };

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

  constructor(private readonly app: Application) {
    app.kvEvents.subscribe(change => this.broadcastChange(change));
    app.sharedState.onMessage(message => {
      if (message.type === 'token-revoked') {
        app.tokenCache.delete(message.token);
        this.revoke(message.token, message.uuid);
      } else if (message.type === 'token-updated') {
        app.tokenCache.delete(message.token);
        this.refreshToken(message.token).catch(() => undefined);
      } else if (message.type === 'resync') {
        app.tokenCache.clear();
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

  private broadcastChange(change: KvChange) {
    this.io.to(change.uuid).emit('kv-key-changed', change);
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

  /** Joins the token's device room (join-token, or the handshake token). Never throws. */
  join(socket: Socket, token: string): Promise<AckResult> {
    return this.serial(socket, () => this.doJoin(socket, token), tooManyRequests);
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

  private async doJoin(socket: Socket, token: string): Promise<AckResult> {
    // Rejoining with a token this socket holds changes nothing: no lookup, no presence
    // update, no `device-joined` to the room (a client looping on join-token would
    // otherwise flood its own room); the joiner alone is answered `joined`.
    const held = this.sockets.get(socket.id)?.state;
    const heldInfo = held && !held.closed ? held.tokens.get(token) : undefined;
    if (held && heldInfo) {
      held.tokens.delete(token); // re-inserted last: the most recent join
      held.tokens.set(token, heldInfo);
      this.emitJoined(socket, held, token, heldInfo);
      return { ok: true, uuid: heldInfo.uuid };
    }
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

    const connections = await this.count(() => this.app.sharedState.presenceJoin(uuid, socket.id), uuid);
    if (state.closed) {
      // Disconnected while we were registering: detach() has left the room; make sure.
      await this.count(() => this.app.sharedState.presenceLeave(uuid, socket.id), uuid);
      return { ok: false, reason: 'invalid_token' };
    }
    if (!state.rooms.get(uuid)?.has(token)) {
      // Revoked while we were registering: the socket already got `left`.
      return { ok: false, reason: 'invalid_token' };
    }
    this.io.to(uuid).emit('device-joined', { uuid, connections });
    this.emitJoined(socket, state, token, info);
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
      entry.socket.leave(uuid);
      entry.socket.emit('left', { by: 'token', uuid, reason: 'token_revoked' });
      this.count(() => this.app.sharedState.presenceLeave(uuid, socketId), uuid)
        .then(connections => this.io.to(uuid).emit('device-left', { uuid, connections }))
        .catch(() => undefined);
    }
  }
}
