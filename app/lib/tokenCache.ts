/** What a KV token resolves to. */
export interface TokenInfo {
  installId: string;
  deviceId: number;
  uuid: string;
  token: string;
}

/**
 * Per-worker cache of token → device. Bounded (oldest entries evicted first) and
 * time-limited; uninstalling a token deletes it from every worker's cache through
 * the shared-state bus, and a worker that lost its Redis link clears it entirely.
 */
export class TokenCache {
  private readonly map = new Map<string, { info: TokenInfo; expiresAt: number }>();

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

  set(info: TokenInfo) {
    if (this.ttlMs === 0) return;
    if (this.map.size >= this.max) {
      const oldest = this.map.keys().next().value;
      if (oldest !== undefined) this.map.delete(oldest);
    }
    this.map.set(info.token, { info, expiresAt: Date.now() + this.ttlMs });
  }

  delete(token: string) {
    this.map.delete(token);
  }

  clear() {
    this.map.clear();
  }
}
