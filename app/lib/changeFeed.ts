import type { KvChange } from './kvEvents';

/** One page of a device's change log after a revision (ChangesService#since). */
export interface ChangePage {
  changes: KvChange[];
  /** The device's latest revision when the page was read. */
  revision: number;
  more: boolean;
}

/** What a change feed needs from the rest of the worker (app/lib/realtime.ts wires it). */
export interface ChangeFeedDeps {
  /**
   * The device's changes with revision > `since`, oldest first (at most `limit`). Throws an
   * error with `status` 410 and `details.revision` when changes after `since` are gone, 404
   * when the device is.
   */
  read(device: { deviceId: number; uuid: string }, since: number, limit: number): Promise<ChangePage>;
  /** The latest committed revision of each device (absent: no such device). */
  latest(deviceIds: number[]): Promise<Map<number, number>>;
  /** Emits `kv-key-changed` to this worker's sockets in the device room, but those in `except`. */
  emitRoom(uuid: string, change: KvChange, except: string[]): void;
  /** Emits an event to one socket of this worker. */
  emitTo(socket: FeedSocket, event: string, payload: unknown): void;
  /** Emits an event to this worker's sockets in the device room. */
  emitRoomEvent(uuid: string, event: string, payload: unknown): void;
  warn(message: string, ...args: unknown[]): void;
}

export interface ChangeFeedOptions {
  /** How long an out-of-order change waits for the ones before it before they are read from the log. */
  gapMs: number;
  /** How often the devices' revisions are compared with what was delivered (recovery of lost broadcasts). */
  pollMs: number;
  /** Changes read per query (catch-up, gap fills). */
  pageSize: number;
  /** Devices per revision query. */
  pollChunk: number;
}

export interface FeedSocket {
  readonly id: string;
  readonly connected: boolean;
}

/** A socket of the device that does not take the room's deliveries yet (it joined with `since`, or is just joining). */
interface CatchUp {
  socket: FeedSocket;
  /** The last revision this socket has been sent (its floor); null: "from the feed's position on" (a join without since). */
  sent: number | null;
  /** Not to be sent anything now: its `joined` is not out yet, or a log read for it is in flight. */
  busy: boolean;
  /** Replaced by a later join or gone: its pump stops. */
  cancelled: boolean;
}

/** The delivery state of one device with sockets on this worker. */
interface DeviceFeed {
  deviceId: number;
  uuid: string;
  /** The last revision delivered to the room; null while the feed's starting point is read. */
  last: number | null;
  /** Changes received ahead of `last + 1`, by revision. */
  buffer: Map<number, KvChange>;
  /** Highest revision known to be committed (from a received change or the revision poll). */
  target: number;
  /** Sockets of this worker joined to the device. */
  members: Set<string>;
  /** Members that are not taking room deliveries (yet), by socket id. */
  catchUps: Map<string, CatchUp>;
  gapTimer?: NodeJS.Timeout;
  filling: boolean;
  starting: boolean;
  /** Joins waiting for `last` to be known (ChangeFeeds.ready()). */
  waiters: Array<() => void>;
  closed: boolean;
}

const isExpired = (err: unknown): err is { status: 410; details: { revision: number } } =>
  (err as { status?: number })?.status === 410;
const isGone = (err: unknown) => (err as { status?: number })?.status === 404;

/**
 * Gap-free, ordered delivery of `kv-key-changed` to the sockets of one worker (CONTRACT.md §7).
 *
 * Every committed change reaches every worker (Socket.IO adapter, `serverSideEmit`), in
 * whatever order the writing workers sent them. Per device with joined sockets here, the
 * feed keeps the last revision it delivered to the room: the next one is emitted to the
 * room at once (one room emit, the common case), later ones wait in a buffer, older ones
 * (duplicates) are dropped. A gap that is not closed within `gapMs` is filled from the
 * change log (revisions are consecutive and commit in order, so a committed revision
 * means every earlier one is committed and logged). Every `pollMs` the devices' revisions
 * are read once for all feeds: a change whose worker died before broadcasting it is then
 * read from the log like a gap.
 *
 * A socket that joins is held out of the room's deliveries (`except`) until it has caught
 * up: after its `joined`, it is sent the log after its `since` (or starts at the feed's
 * position without one), then each delivered revision right after what it was sent, and
 * it takes the room's deliveries from the moment its floor equals the room's: no gap, no
 * duplicate, whatever lands meanwhile.
 */
export class ChangeFeeds {
  private readonly feeds = new Map<string, DeviceFeed>();
  /** Feeds begun this turn, waiting for their starting revision (readStarts). */
  private beginning: DeviceFeed[] = [];
  private pollTimer?: NodeJS.Timeout;
  private polling = false;
  private closed = false;

  constructor(private readonly deps: ChangeFeedDeps, private readonly opts: ChangeFeedOptions) {}

  start() {
    if (this.pollTimer || this.closed) return;
    this.pollTimer = setInterval(() => {
      this.poll().catch(err => this.deps.warn('[changes] revision poll failed: %s', (err as Error).message));
    }, this.opts.pollMs);
    this.pollTimer.unref();
  }

  close() {
    this.closed = true;
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.pollTimer = undefined;
    for (const feed of this.feeds.values()) this.drop(feed);
    this.feeds.clear();
  }

  /** A committed change, from this worker or another one. */
  receive(change: KvChange) {
    const feed = this.feeds.get(change.uuid);
    if (feed) this.offer(feed, change);
  }

  /**
   * `socket` joins the device (it has just been put in the device's Socket.IO room). It is
   * held out of the room's deliveries until `release()` (after its `joined`). A socket that
   * is already a member keeps its stream unless it gives `since`: then it is sent the log
   * after `since` again, and takes the room's deliveries once caught up.
   */
  join(socket: FeedSocket, device: { deviceId: number; uuid: string }, since: number | undefined) {
    const feed = this.feedOf(device);
    const member = feed.members.has(socket.id);
    if (member && since === undefined) return;
    feed.members.add(socket.id);
    const old = feed.catchUps.get(socket.id);
    if (old) old.cancelled = true;
    feed.catchUps.set(socket.id, { socket, sent: since ?? null, busy: true, cancelled: false });
  }

  /**
   * Resolves once the device's feed knows its starting revision (at once when it does, or
   * when there is no feed). A socket joining without `since` starts at the feed's position
   * when its `joined` is out; that position must predate `joined`: were the starting
   * revision read after `joined` (a slow read), it could already count a change the client
   * made after `joined`, and the socket would never be sent it. So `joined` waits for this.
   * Gives up after `ms` (the read failing, e.g. the database down): false.
   */
  ready(uuid: string, ms: number): Promise<boolean> {
    const feed = this.feeds.get(uuid);
    if (!feed || feed.closed || feed.last !== null) return Promise.resolve(true);
    return new Promise(resolve => {
      let timer: NodeJS.Timeout | undefined;
      const wake = () => {
        clearTimeout(timer);
        resolve(true);
      };
      timer = setTimeout(() => {
        const i = feed.waiters.indexOf(wake);
        if (i >= 0) feed.waiters.splice(i, 1);
        resolve(false);
      }, ms);
      feed.waiters.push(wake);
    });
  }

  /** The socket's `joined` is out: it is sent what it missed, then takes the room's deliveries. */
  release(socketId: string, uuid: string) {
    const feed = this.feeds.get(uuid);
    const c = feed?.catchUps.get(socketId);
    if (!feed || !c || !c.busy) return;
    c.busy = false;
    this.settle(feed, c);
  }

  /** The socket left the device (leave, revocation, disconnect). */
  leave(socketId: string, uuid: string) {
    const feed = this.feeds.get(uuid);
    if (!feed) return;
    feed.members.delete(socketId);
    const c = feed.catchUps.get(socketId);
    if (c) {
      c.cancelled = true;
      feed.catchUps.delete(socketId);
    }
    if (feed.members.size === 0) {
      this.drop(feed);
      this.feeds.delete(uuid);
    }
  }

  private drop(feed: DeviceFeed) {
    feed.closed = true;
    for (const wake of feed.waiters.splice(0)) wake();
    if (feed.gapTimer) clearTimeout(feed.gapTimer);
    feed.gapTimer = undefined;
    for (const c of feed.catchUps.values()) c.cancelled = true;
  }

  private feedOf(device: { deviceId: number; uuid: string }): DeviceFeed {
    let feed = this.feeds.get(device.uuid);
    if (!feed) {
      feed = {
        deviceId: device.deviceId, uuid: device.uuid, last: null, buffer: new Map(), target: 0,
        members: new Set(), catchUps: new Map(), filling: false, starting: false, closed: false, waiters: [],
      };
      this.feeds.set(device.uuid, feed);
      this.begin(feed);
    }
    return feed;
  }

  /**
   * Reads where a new feed starts: the device's latest revision; what arrived meanwhile was
   * buffered. The feeds begun in one event-loop turn (a burst of joins to many devices) read
   * theirs in one query (pollChunk devices per query).
   */
  private begin(feed: DeviceFeed) {
    if (feed.starting || feed.closed) return;
    feed.starting = true;
    this.beginning.push(feed);
    if (this.beginning.length === 1) setImmediate(() => this.readStarts());
  }

  private readStarts() {
    const feeds = this.beginning.splice(0).filter(f => !f.closed);
    for (let i = 0; i < feeds.length; i += this.opts.pollChunk) {
      const chunk = feeds.slice(i, i + this.opts.pollChunk);
      this.deps.latest(chunk.map(f => f.deviceId)).then(revisions => {
        for (const feed of chunk) this.started(feed, revisions.get(feed.deviceId) ?? 0);
      }, err => {
        this.deps.warn('[changes] reading revision of devices %s failed: %s', chunk.map(f => f.deviceId).join(', '), (err as Error).message);
        for (const feed of chunk) {
          feed.starting = false;
          const retry = setTimeout(() => this.begin(feed), this.opts.gapMs * 4);
          retry.unref();
        }
      });
    }
  }

  private started(feed: DeviceFeed, latest: number) {
    feed.starting = false;
    if (feed.closed) return;
    feed.last = latest;
    for (const r of [ ...feed.buffer.keys() ]) if (r <= latest) feed.buffer.delete(r);
    this.drain(feed);
    if (feed.buffer.size > 0) this.scheduleFill(feed);
    for (const c of [ ...feed.catchUps.values() ]) this.settle(feed, c);
    for (const wake of feed.waiters.splice(0)) wake();
  }

  private offer(feed: DeviceFeed, change: KvChange) {
    const r = change.revision;
    if (r > feed.target) feed.target = r;
    if (feed.last === null) {
      feed.buffer.set(r, change);
      return;
    }
    if (r <= feed.last) return; // delivered already
    if (r === feed.last + 1) {
      this.deliver(feed, change);
      this.drain(feed);
      return;
    }
    feed.buffer.set(r, change);
    this.scheduleFill(feed);
  }

  /** Delivers the buffered changes that follow `last` without a gap. */
  private drain(feed: DeviceFeed) {
    if (feed.last === null) return;
    for (let next = feed.buffer.get(feed.last + 1); next; next = feed.buffer.get(feed.last + 1)) {
      feed.buffer.delete(next.revision);
      this.deliver(feed, next);
    }
  }

  /** Delivers `change` (revision last + 1): the room at once, sockets still catching up one by one. */
  private deliver(feed: DeviceFeed, change: KvChange) {
    const r = change.revision;
    this.deps.emitRoom(feed.uuid, change, feed.catchUps.size ? [ ...feed.catchUps.keys() ] : []);
    feed.last = r;
    for (const c of [ ...feed.catchUps.values() ]) {
      if (c.busy) continue;
      if (c.sent === r - 1) {
        this.deps.emitTo(c.socket, 'kv-key-changed', change);
        c.sent = r;
      }
      this.settle(feed, c);
    }
  }

  /**
   * A catch-up that is not busy: done when its floor is the room's (it takes the room's
   * deliveries from now on), reads the log while it is behind, waits while it is ahead
   * (the room's deliveries reach its floor, a gap fill makes sure of it).
   */
  private settle(feed: DeviceFeed, c: CatchUp) {
    if (c.busy || c.cancelled || feed.last === null) return;
    if (c.sent === null) c.sent = feed.last;
    if (c.sent === feed.last) {
      feed.catchUps.delete(c.socket.id);
    } else if (c.sent < feed.last) {
      this.pump(feed, c).catch(err => this.deps.warn('[changes] catch-up failed: %s', (err as Error).message));
    } else {
      if (c.sent > feed.target) feed.target = c.sent;
      this.scheduleFill(feed);
    }
  }

  /** Sends a catch-up the log after its floor, page by page, then settles it again. */
  private async pump(feed: DeviceFeed, c: CatchUp) {
    c.busy = true;
    let failures = 0;
    try {
      for (;;) {
        if (c.cancelled || !c.socket.connected) return;
        let page: ChangePage;
        try {
          page = await this.deps.read(feed, c.sent!, this.opts.pageSize);
        } catch (err) {
          if (c.cancelled) return;
          if (isExpired(err)) {
            // The changes after its floor are gone: the client re-reads its keys, then live events.
            this.deps.emitTo(c.socket, 'resync-required', { uuid: feed.uuid, revision: err.details.revision });
            c.sent = err.details.revision;
            continue;
          }
          if (isGone(err)) {
            c.sent = feed.last;
            break;
          }
          failures += 1;
          this.deps.warn('[changes] catch-up read failed (attempt %s): %s', failures, (err as Error).message);
          const wait = Math.min(2000, 100 * 2 ** failures);
          await new Promise(resolve => setTimeout(resolve, wait));
          continue;
        }
        if (c.cancelled) return;
        for (const change of page.changes) {
          if (change.revision !== c.sent! + 1) continue;
          this.deps.emitTo(c.socket, 'kv-key-changed', change);
          c.sent = change.revision;
        }
        if (page.revision > feed.target) feed.target = page.revision;
        if (!page.more) break;
      }
    } finally {
      c.busy = false;
    }
    this.settle(feed, c);
  }

  private scheduleFill(feed: DeviceFeed) {
    if (feed.gapTimer || feed.filling || feed.closed) return;
    feed.gapTimer = setTimeout(() => {
      feed.gapTimer = undefined;
      this.fill(feed).catch(err => this.deps.warn('[changes] gap fill failed: %s', (err as Error).message));
    }, this.opts.gapMs);
    feed.gapTimer.unref();
  }

  private behind(feed: DeviceFeed) {
    return feed.last !== null && (feed.buffer.size > 0 || feed.target > feed.last);
  }

  /** Reads from the log what the room is missing (a gap, or a broadcast that never came). */
  private async fill(feed: DeviceFeed) {
    if (feed.closed || feed.filling || !this.behind(feed)) return;
    feed.filling = true;
    let failed = false;
    try {
      for (;;) {
        let page: ChangePage;
        try {
          page = await this.deps.read(feed, feed.last!, this.opts.pageSize);
        } catch (err) {
          if (feed.closed) return;
          if (isExpired(err)) {
            // The room fell further behind than the log keeps: its sockets re-read their keys.
            const revision = err.details.revision;
            this.deps.emitRoomEvent(feed.uuid, 'resync-required', { uuid: feed.uuid, revision });
            feed.last = revision;
            for (const r of [ ...feed.buffer.keys() ]) if (r <= revision) feed.buffer.delete(r);
            for (const c of [ ...feed.catchUps.values() ]) this.settle(feed, c);
            this.drain(feed);
            continue;
          }
          if (!isGone(err)) failed = true;
          throw err;
        }
        if (feed.closed) return;
        for (const change of page.changes) this.offer(feed, change);
        if (page.revision > feed.target) feed.target = page.revision;
        if (!page.more) break;
      }
    } finally {
      feed.filling = false;
      if (!feed.closed && this.behind(feed)) {
        if (failed) {
          const retry = setTimeout(() => this.scheduleFill(feed), this.opts.gapMs * 4);
          retry.unref();
        } else {
          this.scheduleFill(feed);
        }
      }
    }
  }

  /** Compares every feed's position with its device's revision; a feed behind is filled from the log. */
  async poll() {
    if (this.polling || this.feeds.size === 0) return;
    this.polling = true;
    try {
      const byId = new Map<number, DeviceFeed>();
      for (const feed of this.feeds.values()) if (feed.last !== null) byId.set(feed.deviceId, feed);
      const ids = [ ...byId.keys() ];
      for (let i = 0; i < ids.length; i += this.opts.pollChunk) {
        const revisions = await this.deps.latest(ids.slice(i, i + this.opts.pollChunk));
        for (const [ id, revision ] of revisions) {
          const feed = byId.get(id);
          if (!feed || feed.closed || feed.last === null || revision <= feed.last) continue;
          if (revision > feed.target) feed.target = revision;
          this.scheduleFill(feed);
        }
      }
    } finally {
      this.polling = false;
    }
  }
}
