/**
 * A value fetched at most once per `ttlMs` (given at each call, so a changed setting
 * applies at once), with at most one fetch in flight: callers arriving meanwhile share
 * it. A failed fetch is not kept (the next call tries again).
 */
export class CachedFetch<T> {
  private value?: { at: number; value: T };
  private inFlight?: Promise<T>;
  /** Bumped by clear(): a fetch started before it does not fill the cache. */
  private generation = 0;

  get(fetch: () => Promise<T>, ttlMs: number): Promise<T> {
    if (this.value && Date.now() - this.value.at < ttlMs) return Promise.resolve(this.value.value);
    if (!this.inFlight) {
      const generation = this.generation;
      const current: Promise<T> = fetch().then(value => {
        if (generation === this.generation) this.value = { at: Date.now(), value };
        return value;
      }).finally(() => {
        if (this.inFlight === current) this.inFlight = undefined;
      });
      this.inFlight = current;
    }
    return this.inFlight;
  }

  /** Forgets the value (and any fetch in flight). */
  clear() {
    this.generation++;
    this.value = undefined;
    this.inFlight = undefined;
  }
}
