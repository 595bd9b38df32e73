/**
 * Keeps `device_log` (app/service/changes.ts) within retention without touching the write
 * path: writers only mark a device as touched (with the latest revision they wrote); once
 * a second the touched devices are trimmed, one after the other, off the request path.
 */
export class LogTrimmer {
  /** deviceId → latest revision written here since the last round (null: none), and whether events were recorded. */
  private dirty = new Map<number, { revision: number | null; events: boolean }>();
  private timer?: NodeJS.Timeout;
  /** The round in progress, if any. */
  private round?: Promise<void>;

  constructor(
    private readonly trim: (deviceId: number, latestRevision: number | null, events: boolean) => Promise<void>,
    private readonly onError: (err: Error) => void,
    private readonly periodMs = 1000,
  ) {}

  touch(deviceId: number, revision: number | null) {
    const entry = this.dirty.get(deviceId);
    if (!entry) {
      this.dirty.set(deviceId, { revision, events: revision === null });
    } else if (revision === null) {
      entry.events = true;
    } else if (entry.revision === null || revision > entry.revision) {
      entry.revision = revision;
    }
  }

  start() {
    if (this.timer) return;
    this.timer = setInterval(() => {
      if (this.round) return; // the previous round is still going
      this.runOnce().catch(err => this.onError(err as Error));
    }, this.periodMs);
    this.timer.unref();
  }

  /**
   * One round over the devices touched since the last one. While a round runs (the
   * background one), waits for it first: what was touched before the call is trimmed when
   * it resolves.
   */
  async runOnce() {
    while (this.round) await this.round;
    if (this.dirty.size === 0) return;
    const round = this.trimAll(this.dirty);
    this.dirty = new Map();
    this.round = round;
    try {
      await round;
    } finally {
      if (this.round === round) this.round = undefined;
    }
  }

  private async trimAll(batch: Map<number, { revision: number | null; events: boolean }>) {
    for (const [ deviceId, { revision, events }] of batch) {
      try {
        await this.trim(deviceId, revision, events);
      } catch (err) {
        // Tried again with the device's next write; retention is a floor, not a ceiling.
        this.onError(err as Error);
      }
    }
  }

  close() {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
