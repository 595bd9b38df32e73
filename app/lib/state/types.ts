/**
 * Cross-worker state. One interface, two implementations: Redis (cluster, several
 * instances) and in-process memory (embedded default, one worker). Every key
 * name and TTL lives in the implementation, never in callers.
 */
export interface RateHit {
  count: number;
  /** Milliseconds until the window resets. */
  resetMs: number;
}

export interface DeviceCodeStatus {
  createdAt: number;
  token: string | null;
  /** Milliseconds left. */
  ttlMs: number;
}

export type ConsumeResult =
  | { status: 'success'; token: string }
  | { status: 'pending'; ttlMs: number }
  | { status: 'expired' };

export interface PresenceEntry {
  uuid: string;
  connections: number;
}

export type BusMessage =
  | { type: 'token-revoked'; token: string; uuid: string }
  /** The install behind a token changed (its note): workers drop their cached copy. */
  | { type: 'token-updated'; token: string }
  /**
   * A write's revision could not be raised in shared state (kvRevisionsForget): every
   * worker drops the devices' cached values and keeps reads in flight out of its cache.
   */
  | { type: 'kv-dropped'; deviceIds: number[] }
  /** Local only: the bus connection dropped; messages may be missed until 'resync'. */
  | { type: 'bus-lost' }
  /** Local only: the bus is live again; messages may have been missed while it was not. */
  | { type: 'resync' };

export interface SharedState {
  readonly kind: 'redis' | 'memory';

  /** Counts one hit in a fixed window of `windowMs` starting at the first hit. */
  rateHit(bucket: string, id: string, windowMs: number): Promise<RateHit>;
  /** Reads a counter without counting a hit (count 0 when absent). */
  ratePeek(bucket: string, id: string): Promise<RateHit>;

  /** Creates a device code if it does not exist yet; false when taken. */
  deviceCodeCreate(code: string, ttlMs: number, now: number): Promise<boolean>;
  /** Attaches a token to a live code; false when the code does not exist (or expired). */
  deviceCodeBind(code: string, token: string): Promise<boolean>;
  /** Returns the token and deletes the code when bound; pending or expired otherwise. */
  deviceCodeConsume(code: string): Promise<ConsumeResult>;
  deviceCodeStatus(code: string): Promise<DeviceCodeStatus | null>;

  /** Records a socket in a device room; returns the room's cluster-wide count. */
  presenceJoin(uuid: string, socketId: string): Promise<number>;
  /** Removes a socket from a device room; returns the remaining count. */
  presenceLeave(uuid: string, socketId: string): Promise<number>;
  presenceList(): Promise<PresenceEntry[]>;

  /** The highest committed KV revision known per device (null: unknown); see app/lib/valueCache.ts. */
  kvRevisions(deviceIds: number[]): Promise<Array<number | null>>;
  /** Raises the known revisions of devices (never lowers one). */
  kvRevisionsRaise(changes: Array<{ deviceId: number; revision: number }>): Promise<void>;
  /**
   * Makes the devices' revisions unknown for `forMs`, whatever is raised meanwhile: a
   * write failed in a way that may still commit later.
   */
  kvRevisionsDistrust(deviceIds: number[], forMs: number): Promise<void>;
  /**
   * A raise was refused: makes the devices' revisions unknown (a device marked by
   * kvRevisionsDistrust stays so) and sends `kv-dropped` to every worker, this one
   * included. Both also work when Redis refuses writes (maxmemory with noeviction
   * allows DEL and PUBLISH); rejects only when neither went through.
   */
  kvRevisionsForget(deviceIds: number[]): Promise<void>;

  /**
   * Appends a revoked token's hash to the revocation record (app/lib/revocations.ts),
   * kept at least `keepMs` (longer than a token cache entry lives).
   */
  revocationRecord(hash: string, keepMs: number): Promise<void>;
  /**
   * The hashes recorded after `cursor` (null: every one still kept), oldest first, at
   * most a page of them; the cursor to pass next (unchanged when there is nothing new).
   */
  revocationsSince(cursor: string | null): Promise<{ cursor: string | null; hashes: string[] }>;

  /**
   * Stores this worker's metrics snapshot (app/lib/metrics.ts). It lives as long as the
   * presence heartbeat of a worker: a worker that stops renewing it (crashed) drops out.
   */
  metricsSave(snapshot: string): Promise<void>;
  /** The latest snapshots of every other live worker, on every instance. */
  metricsOthers(): Promise<string[]>;
  /**
   * Short-lived single-use tickets shared by every worker (OAuth state + PKCE verifier, §8):
   * stores `value` under (`kind`, `id`) for `ttlMs` unless the id is taken (false then).
   */
  ticketPut(kind: string, id: string, value: string, ttlMs: number): Promise<boolean>;
  /** Returns a live ticket's value and deletes it in the same step (null: absent or expired). */
  ticketTake(kind: string, id: string): Promise<string | null>;
  /** Whether a live ticket exists (the revoked access tokens of logout, §8). */
  ticketExists(kind: string, id: string): Promise<boolean>;

  /** Resolves when the store answers (readiness and health probes); rejects otherwise. */
  probe(): Promise<void>;

  /** Sends a message to every worker of every instance, this one included. */
  publish(message: BusMessage): Promise<void>;
  onMessage(handler: (message: BusMessage) => void): void;

  start(): Promise<void>;
  close(): Promise<void>;
}
