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
 */
export class TokenCache {
  private readonly map = new Map<string, { info: TokenInfo; expiresAt: number }>();
  private gen = 0;

  constructor(private readonly ttlMs: number, private readonly max: number) {}

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

  delete(token: string) {
    this.gen += 1;
    this.map.delete(token);
  }

  clear() {
    this.gen += 1;
    this.map.clear();
  }
}
