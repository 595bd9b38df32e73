/** What a KV token resolves to. */
export interface TokenInfo {
  installId: string;
  deviceId: number;
  uuid: string;
  token: string;
  appId: string;
  deviceType: string | null;
  /** Read-only tokens read and join, but every KV write and send-event is refused (§6.2). */
  isReadOnly: boolean;
  note: string | null;
}

/**
 * Per-worker cache of token → device. Bounded (oldest entries evicted first) and
 * time-limited; uninstalling a token deletes it from every worker's cache through
 * the shared-state bus, and a worker that lost its Redis link clears it entirely.
 *
 * It also remembers, briefly (`negativeTtlMs`, a few seconds), tokens that do not exist:
 * a client retrying a dead token costs no query. A token created afterwards (install)
 * is deleted from every worker's cache through the same bus (`token-updated`), so a
 * negative entry never outlives the creation of its token.
 */
export class TokenCache {
  private readonly map = new Map<string, { info: TokenInfo; expiresAt: number }>();
  /** token → until when it is known not to exist. */
  private readonly unknown = new Map<string, number>();
  /** token → the database read of it in flight, and the generation it started under (once()). */
  private readonly reading = new Map<string, { generation: number; promise: Promise<TokenInfo | null> }>();
  private gen = 0;

  constructor(private readonly ttlMs: number, private readonly max: number, private readonly negativeTtlMs = 0) {}

  get(token: string): TokenInfo | undefined {
    if (this.ttlMs === 0) return undefined;
    const hit = this.map.get(token);
    if (!hit) return undefined;
    if (hit.expiresAt <= Date.now()) {
      this.map.delete(token);
      return undefined;
    }
    return hit.info;
  }

  /**
   * Bumped by every invalidation. A lookup takes it before querying the database and
   * passes it to set(): a result read before an uninstall is then never cached after it.
   */
  get generation(): number {
    return this.gen;
  }

  set(info: TokenInfo, generation: number) {
    if (this.ttlMs === 0 || generation !== this.gen) return;
    if (this.map.size >= this.max) {
      const oldest = this.map.keys().next().value;
      if (oldest !== undefined) this.map.delete(oldest);
    }
    this.map.set(info.token, { info, expiresAt: Date.now() + this.ttlMs });
  }

  /** The cached tokens (app/lib/revocations.ts looks revoked ones up by hash). */
  tokens(): IterableIterator<string> {
    return this.map.keys();
  }

  /** True while `token` is remembered as not existing (setUnknown). */
  isUnknown(token: string): boolean {
    const until = this.unknown.get(token);
    if (until === undefined) return false;
    if (until > Date.now()) return true;
    this.unknown.delete(token);
    return false;
  }

  /**
   * Remembers that the lookup of `token` found nothing. Like set(), ignored when the
   * cache was invalidated since `generation` was taken: a lookup that raced with the
   * token's creation never leaves a negative entry behind it.
   */
  setUnknown(token: string, generation: number) {
    if (this.negativeTtlMs === 0 || generation !== this.gen) return;
    if (this.unknown.size >= this.max) {
      const oldest = this.unknown.keys().next().value;
      if (oldest !== undefined) this.unknown.delete(oldest);
    }
    this.unknown.delete(token); // re-inserted last: eviction stays oldest-first
    this.unknown.set(token, Date.now() + this.negativeTtlMs);
  }

  /**
   * One database read per token at a time: while `read` of `token` is in flight, a caller
   * shares its answer instead of reading again (ten sockets of a classroom joining at once
   * make one query, not ten). Only while nothing was invalidated since that read started:
   * after an uninstall or an update (delete(), clear()) the next caller reads anew, as it
   * would from an empty cache. `read` gets the generation to pass to set()/setUnknown().
   */
  once(token: string, read: (generation: number) => Promise<TokenInfo | null>): Promise<TokenInfo | null> {
    const running = this.reading.get(token);
    if (running && running.generation === this.gen) return running.promise;
    const generation = this.gen;
    const promise = read(generation);
    const entry = { generation, promise };
    this.reading.set(token, entry);
    const done = () => {
      if (this.reading.get(token) === entry) this.reading.delete(token);
    };
    promise.then(done, done);
    return promise;
  }

  delete(token: string) {
    this.gen += 1;
    this.map.delete(token);
    this.unknown.delete(token);
  }

  clear() {
    this.gen += 1;
    this.map.clear();
    this.unknown.clear();
  }
}
