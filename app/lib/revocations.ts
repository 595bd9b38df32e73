import crypto from 'node:crypto';
import type { BusMessage } from './state/types';

/** What Revocations needs of shared state (app/lib/state). */
export interface RevocationFeed {
  /** Appends a revoked token's hash to the record, kept at least `keepMs`. */
  revocationRecord(hash: string, keepMs: number): Promise<void>;
  /** The hashes recorded after `cursor` (null: from the start), oldest first, and the new cursor. */
  revocationsSince(cursor: string | null): Promise<{ cursor: string | null; hashes: string[] }>;
  publish(message: BusMessage): Promise<void>;
}

export interface RevocationOptions {
  /** How often the record is read (REVOCATION_POLL_MS). */
  pollMs: number;
  /** How long a record entry is kept: longer than a token cache entry lives. */
  keepMs: number;
  /** How often the tokens of joined sockets are checked against the database (TOKEN_RECHECK_MS; 0: never). */
  recheckMs: number;
  /** Tokens whose hash is in `hashes` were revoked: drop them (token cache, joined sockets). */
  revoked(hashes: Set<string>): void;
  /** Checks the tokens of this worker's joined sockets against the database; rejects when it cannot. */
  recheck(): Promise<void>;
  warn(message: string, ...args: unknown[]): void;
}

/** The name a revoked token has in the record: no token, even a dead one, is stored in Redis. */
export function hashToken(token: string): string {
  return crypto.createHash('sha256').update(token).digest('base64url');
}

/** A token cache hit is served only while the record was read this recently (a multiple of pollMs). */
export const STALE_POLLS = 3;
/** How long an uninstall's answer waits for its record and broadcast at most (ms). */
export const HOLD_MS = 1500;
/** How long one attempt to record or broadcast may take (ms). */
const ATTEMPT_MS = 1000;
/** Background retries of a record or broadcast that failed within HOLD_MS (ms). */
const RETRY_MS = 1000;

interface Job {
  token: string;
  uuid: string;
  hash: string;
  at: number;
  recorded: boolean;
  published: boolean;
}

function within<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms));

/**
 * Token revocation that does not depend on one bus message arriving. An uninstall
 * (after deleting the row, the truth) records the token's hash in shared state and
 * broadcasts `token-revoked`, retrying both; every worker reads the record every
 * pollMs and drops what it names, serves token cache hits only while that read is
 * recent (so not at all while Redis is away), and checks the tokens of its joined
 * sockets against the database every recheckMs and on every bus resync.
 * See docs/ARCHITECTURE.md ("Token revocation").
 */
export class Revocations {
  private cursor: string | null = null;
  /** When the last successful read of the record started (0: never). */
  private lastRead = 0;
  /** Hashes this worker already dropped (from the bus or its own uninstall) → when. */
  private readonly handled = new Map<string, number>();
  private readonly pending = new Set<Job>();
  private pollTimer?: NodeJS.Timeout;
  private recheckTimer?: NodeJS.Timeout;
  private retryTimer?: NodeJS.Timeout;
  private polling = false;
  private rechecking?: Promise<void>;
  private closed = false;
  private lastWarning = 0;

  constructor(private readonly feed: RevocationFeed, private readonly opts: RevocationOptions) {}

  /** Whether token cache hits may be served: the record was read within STALE_POLLS × pollMs. */
  get current(): boolean {
    return Date.now() - this.lastRead <= STALE_POLLS * this.opts.pollMs;
  }

  start() {
    this.closed = false;
    this.pollTimer = setInterval(() => this.poll(), this.opts.pollMs);
    this.pollTimer.unref();
    if (this.opts.recheckMs > 0) {
      this.recheckTimer = setInterval(() => this.recheckNow(), this.opts.recheckMs);
      this.recheckTimer.unref();
    }
    return this.poll();
  }

  close() {
    this.closed = true;
    clearInterval(this.pollTimer);
    clearInterval(this.recheckTimer);
    clearTimeout(this.retryTimer);
    this.pending.clear();
  }

  /** A token revoked through the bus (or by this worker): a later read of the record skips it. */
  noteHandled(token: string) {
    this.handled.set(hashToken(token), Date.now());
  }

  /**
   * Records and broadcasts the revocation of `token` (its row is deleted). Waits at most
   * HOLD_MS; what has not gone through by then is retried in the background until it
   * does, or until no cache entry can hold the token any longer (keepMs). Never rejects.
   */
  async revoke(token: string, uuid: string): Promise<void> {
    const job: Job = { token, uuid, hash: hashToken(token), at: Date.now(), recorded: false, published: false };
    this.handled.set(job.hash, job.at);
    const deadline = job.at + HOLD_MS;
    for (let wait = 100; ; wait *= 2) {
      if (await this.attempt(job, Math.min(ATTEMPT_MS, Math.max(1, deadline - Date.now())))) return;
      if (Date.now() + wait >= deadline) break;
      await sleep(wait);
    }
    this.pending.add(job);
    this.scheduleRetry();
  }

  /** One try at what is still missing of `job`; true when nothing is. */
  private async attempt(job: Job, ms: number): Promise<boolean> {
    const [ recorded, published ] = await Promise.allSettled([
      job.recorded ? Promise.resolve() : within(this.feed.revocationRecord(job.hash, this.opts.keepMs), ms),
      job.published ? Promise.resolve() : within(this.feed.publish({ type: 'token-revoked', token: job.token, uuid: job.uuid }), ms),
    ]);
    if (recorded.status === 'fulfilled') job.recorded = true;
    if (published.status === 'fulfilled') job.published = true;
    const failed = [ recorded, published ].find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) this.warnThrottled('[revocations] recording or broadcasting a revocation failed, retrying: %s', (failed.reason as Error).message);
    return job.recorded && job.published;
  }

  private scheduleRetry() {
    if (this.retryTimer || this.closed || this.pending.size === 0) return;
    this.retryTimer = setTimeout(async () => {
      for (const job of [ ...this.pending ]) {
        // Past keepMs no cache entry can still hold the token: nothing left to tell.
        if (Date.now() - job.at > this.opts.keepMs || await this.attempt(job, ATTEMPT_MS)) this.pending.delete(job);
      }
      this.retryTimer = undefined;
      this.scheduleRetry();
    }, RETRY_MS);
    this.retryTimer.unref();
  }

  /** Reads the record from the cursor on; drops what it names that this worker did not drop yet. */
  async poll(): Promise<void> {
    if (this.polling || this.closed) return;
    this.polling = true;
    const started = Date.now();
    try {
      const fresh = new Set<string>();
      for (;;) {
        const { cursor, hashes } = await within(this.feed.revocationsSince(this.cursor), ATTEMPT_MS);
        for (const h of hashes) if (!this.handled.has(h)) fresh.add(h);
        if (cursor === this.cursor || hashes.length === 0) break;
        this.cursor = cursor;
      }
      if (fresh.size > 0) {
        for (const h of fresh) this.handled.set(h, started);
        try {
          this.opts.revoked(fresh);
        } catch (err) {
          this.opts.warn('[revocations] dropping revoked tokens failed: %s', (err as Error).message);
        }
      }
      this.lastRead = started;
      for (const [ h, at ] of this.handled) if (started - at > this.opts.keepMs) this.handled.delete(h);
    } catch (err) {
      this.warnThrottled('[revocations] cannot read the revocation record (token cache bypassed): %s', (err as Error).message);
    } finally {
      this.polling = false;
    }
  }

  /** Checks the joined sockets' tokens against the database now (one at a time); never rejects. */
  recheckNow(): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (!this.rechecking) {
      this.rechecking = this.opts.recheck()
        .catch(err => this.warnThrottled('[revocations] cannot re-check joined tokens: %s', (err as Error).message))
        .finally(() => {
          this.rechecking = undefined;
        });
    }
    return this.rechecking;
  }

  private warnThrottled(message: string, ...args: unknown[]) {
    if (Date.now() - this.lastWarning < 10000) return;
    this.lastWarning = Date.now();
    this.opts.warn(message, ...args);
  }
}
