/** Where the latest committed revision of each device is known (SharedState). */
export interface RevisionStore {
  /** The highest committed KV revision known per device; null when unknown. */
  kvRevisions(deviceIds: number[]): Promise<Array<number | null>>;
  /** Raises the known revisions (never lowers one). */
  kvRevisionsRaise(changes: Array<{ deviceId: number; revision: number }>): Promise<void>;
  /** Makes revisions unknown for a while, whatever is raised meanwhile. */
  kvRevisionsDistrust(deviceIds: number[], forMs: number): Promise<void>;
  /**
   * Makes the devices' revisions unknown to every worker at once, with what still works
   * when shared state refuses writes (see SharedState.kvRevisionsForget); rejects only
   * when none of it did.
   */
  kvRevisionsForget(deviceIds: number[]): Promise<void>;
}

/**
 * How long a device's cached values are not served after one of its writes failed
 * in a way that may still commit (a commit whose answer was lost can land later).
 */
export const DISTRUST_MS = 10 * 60 * 1000;

/** How often a raise shared state did not take is tried again. */
export const RETRY_MS = 1000;

/**
 * Longest extra wait of a write's answer when its raise failed: the time given to
 * kvRevisionsForget() (a Redis that answers nothing within it is down for every worker,
 * whose bus then suspends their caches).
 */
export const FORGET_WAIT_MS = 1000;

interface Entry {
  value: string;
  /** The device revision the value was read under. */
  revision: number;
  bytes: number;
}

/** Rough per-entry overhead of the Map entry and its object. */
const ENTRY_OVERHEAD = 120;

const entryId = (deviceId: number, key: string) => `${deviceId}\u0000${key}`;

/**
 * Per-worker cache of stored values (the JSON text `GET /kv/:key` serves), never stale.
 *
 * Every KV write raises its device's revision in the same transaction. Each cached
 * value is tagged with the device revision it was read under (one statement reads
 * both). Shared state (Redis, or memory in the embedded default) holds the latest
 * committed revision of each device: a writer raises it after its commit and before it
 * answers or publishes `kv-key-changed`; a reader asks for it first and serves a cached
 * value only if its tag is that revision. Anything that starts after a write was
 * answered therefore sees a revision at least that write's, and a value read before the
 * write can never match it. Revisions only grow, so an old tag can never match again.
 *
 * The revision lookups and raises of one event-loop turn travel together (one MGET,
 * one script). If shared state cannot be reached the cache is bypassed (every read goes
 * to the database); a reader that finds no revision known (Redis restarted) puts back
 * the one it read. A write that fails without a clear outcome (a lost commit answer)
 * makes its device's revision unknown for DISTRUST_MS (unsure()). Bounded in bytes,
 * least recently used out; values over 1/64 of the bound are not kept.
 *
 * A raise shared state refuses (Redis at maxmemory with noeviction, a reset command
 * connection) would leave other workers serving the old value under the old tag: the
 * writer then makes the revision unknown everywhere before it answers
 * (kvRevisionsForget(): a DEL and a bus message, both accepted at maxmemory), every
 * worker drops the device (drop()), and the raise is retried in the background. An
 * epoch, bumped by every suspend(), resume() and drop(), keeps a database read that
 * started before one of them out of the cache (and its revision out of shared state):
 * it may have been read before a write the event announced.
 */
export class ValueCache {
  private readonly entries = new Map<string, Entry>();
  private bytes = 0;
  private lookups = new Map<number, Array<(revision: number | null) => void>>();
  private raises = new Map<number, number>();
  private raising?: Promise<void>;
  private lookupScheduled = false;
  /** Set while shared state may be missing raises (see suspend()). */
  private suspended = false;
  /** Raises that failed, retried every RETRY_MS until shared state takes them. */
  private unraised = new Map<number, number>();
  private retryTimer?: NodeJS.Timeout;
  /** Devices of the pending raise batch whose raise must reach every worker (see committed()). */
  private mustLand = new Set<number>();
  /** Bumped by suspend(), resume() and drop(): reads that started before are not cached. */
  private epoch = 0;

  constructor(
    private readonly maxBytes: number,
    private readonly store: RevisionStore,
    private readonly onError: (what: string, err: Error) => void,
  ) {}

  get enabled(): boolean {
    return this.maxBytes > 0;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Drops every cached value (the database was replaced behind the server's back). */
  clear() {
    this.entries.clear();
    this.bytes = 0;
  }

  /**
   * The connection to shared state dropped: writes made meanwhile (on any worker) may
   * not reach it, and a value cached now could later match a revision that missed
   * them. Until resume(), every read goes to the database and nothing is cached.
   */
  suspend() {
    this.suspended = true;
    this.epoch += 1;
    this.clear();
  }

  /** Shared state is reachable again: caching starts over from empty. */
  resume() {
    this.clear();
    this.epoch += 1;
    this.suspended = false;
  }

  /**
   * Another worker (or this one) could not raise these devices' revisions (the
   * `kv-dropped` bus message): their values are dropped, and reads in flight are not
   * cached (they may predate the write).
   */
  drop(deviceIds: number[]) {
    this.epoch += 1;
    const devices = new Set(deviceIds);
    for (const [ id, e ] of this.entries) {
      if (devices.has(Number(id.slice(0, id.indexOf('\u0000'))))) this.remove(id, e);
    }
  }

  /** Stops retrying failed raises (shutdown). */
  close() {
    clearTimeout(this.retryTimer);
    this.unraised.clear();
  }

  /** The value of `key` if the cached one is current, else `read()`'s (stored for next time). */
  async get(deviceId: number, key: string, read: () => Promise<{ value: string; revision: number } | null>): Promise<string | null> {
    if (!this.enabled || this.suspended) return (await read())?.value ?? null;
    const epoch = this.epoch;
    const id = entryId(deviceId, key);
    const known = await this.knownRevision(deviceId);
    const hit = this.entries.get(id);
    if (hit && known !== null && hit.revision === known && epoch === this.epoch) {
      // Most recently used last.
      this.entries.delete(id);
      this.entries.set(id, hit);
      return hit.value;
    }
    const row = await read();
    // Suspended, resumed or dropped while reading (or before): the row may predate a write
    // whose revision shared state missed; it is served, not kept.
    if (this.suspended || epoch !== this.epoch) return row?.value ?? null;
    if (!row) {
      if (hit) this.remove(id, hit);
      return null;
    }
    this.put(id, row.value, row.revision);
    // Nothing known (Redis restarted empty, or the entry expired): put back what the database
    // says. Known but older: shared state missed a write; it must learn it (as a writer's).
    if (known === null) this.raise(deviceId, row.revision, false).catch(() => undefined);
    else if (known < row.revision) this.committed(deviceId, row.revision).catch(() => undefined);
    return row.value;
  }

  /**
   * Records a committed write: resolves once the device's known revision is at least
   * `revision` everywhere (call it before answering). Never rejects: the write is
   * committed; if shared state is unreachable, so it is for every reader.
   */
  committed(deviceId: number, revision: number): Promise<void> {
    return this.raise(deviceId, revision, true);
  }

  /**
   * Queues a raise for this turn's batch. If the store refuses the batch, the devices
   * whose raise `mustLand` (writes; not a reader putting back a revision nobody knew)
   * are made unknown on every worker before the promise resolves, within FORGET_WAIT_MS.
   */
  private raise(deviceId: number, revision: number, mustLand: boolean): Promise<void> {
    this.raises.set(deviceId, Math.max(revision, this.raises.get(deviceId) ?? 0));
    if (mustLand) this.mustLand.add(deviceId);
    if (!this.raising) {
      this.raising = new Promise<void>(resolve => setImmediate(resolve)).then(async () => {
        const changes = [ ...this.raises ].map(([ d, r ]) => ({ deviceId: d, revision: r }));
        const forget = [ ...this.mustLand ];
        this.raises = new Map();
        this.mustLand = new Set();
        this.raising = undefined;
        try {
          await this.store.kvRevisionsRaise(changes);
        } catch (err) {
          this.onError('cannot record a write\'s revision', err as Error);
          this.raiseFailed(changes);
          if (forget.length > 0) await this.forget(forget);
        }
      });
    }
    return this.raising;
  }

  /**
   * kvRevisionsForget(), tried again (50, 100, 200 ms …: a command connection that was
   * just reset is back within a few) until it goes through or FORGET_WAIT_MS has passed;
   * never rejects. Tried once only while this worker's bus is down (suspended): Redis is
   * away, for the other workers too as a rule, and writers are not held for it.
   */
  private async forget(deviceIds: number[]) {
    const deadline = Date.now() + FORGET_WAIT_MS;
    for (let wait = 50; ; wait *= 2) {
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          this.store.kvRevisionsForget(deviceIds),
          new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error(`no answer within ${FORGET_WAIT_MS} ms`)), Math.max(1, deadline - Date.now()));
          }),
        ]);
        return;
      } catch (err) {
        if (this.suspended || Date.now() + wait >= deadline) {
          this.onError('cannot make a device\'s revision unknown after a failed raise', err as Error);
          return;
        }
      } finally {
        clearTimeout(timer);
      }
      await new Promise(resolve => setTimeout(resolve, wait));
    }
  }

  /**
   * Shared state did not take these revisions: it is behind the database for those
   * devices. This worker's values are dropped (none was read under the missing
   * revision), and the raise is retried until it lands; writers do not wait for it.
   */
  private raiseFailed(changes: Array<{ deviceId: number; revision: number }>) {
    this.clear();
    for (const c of changes) this.unraised.set(c.deviceId, Math.max(c.revision, this.unraised.get(c.deviceId) ?? 0));
    if (this.retryTimer) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      const retry = [ ...this.unraised ].map(([ deviceId, revision ]) => ({ deviceId, revision }));
      this.unraised = new Map();
      this.store.kvRevisionsRaise(retry).catch(() => this.raiseFailed(retry));
    }, RETRY_MS);
    this.retryTimer.unref?.();
  }

  /**
   * A write of the device failed without a clear outcome (it may have committed, or may
   * still): its cached values are not served for DISTRUST_MS, on any worker.
   */
  async unsure(deviceId: number): Promise<void> {
    try {
      await this.store.kvRevisionsDistrust([ deviceId ], DISTRUST_MS);
    } catch (err) {
      this.onError('cannot mark a device after a failed write', err as Error);
      // At least drop it everywhere now (what Redis at maxmemory still takes).
      await this.forget([ deviceId ]);
    }
  }

  /** The latest committed revision of a device (null: unknown or unreachable). */
  private knownRevision(deviceId: number): Promise<number | null> {
    return new Promise(resolve => {
      const waiting = this.lookups.get(deviceId);
      if (waiting) waiting.push(resolve);
      else this.lookups.set(deviceId, [ resolve ]);
      if (!this.lookupScheduled) {
        this.lookupScheduled = true;
        setImmediate(() => this.lookup());
      }
    });
  }

  private async lookup() {
    this.lookupScheduled = false;
    const batch = this.lookups;
    this.lookups = new Map();
    const ids = [ ...batch.keys() ];
    let revisions: Array<number | null>;
    try {
      revisions = await this.store.kvRevisions(ids);
    } catch (err) {
      this.onError('cannot read revisions, reading the database', err as Error);
      revisions = ids.map(() => null);
    }
    ids.forEach((id, i) => batch.get(id)!.forEach(resolve => resolve(revisions[i])));
  }

  private put(id: string, value: string, revision: number) {
    const bytes = ENTRY_OVERHEAD + 2 * (value.length + id.length);
    const old = this.entries.get(id);
    if (old) this.remove(id, old);
    if (bytes > this.maxBytes / 64) return;
    this.entries.set(id, { value, revision, bytes });
    this.bytes += bytes;
    while (this.bytes > this.maxBytes) {
      const [ oldestId, oldest ] = this.entries.entries().next().value as [string, Entry];
      this.remove(oldestId, oldest);
    }
  }

  private remove(id: string, e: Entry) {
    this.entries.delete(id);
    this.bytes -= e.bytes;
  }
}
