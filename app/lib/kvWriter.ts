import mysql from 'mysql2';
import type { Pool, PoolConnection, ResultSetHeader } from 'mysql2';
import { ConnectionError, DatabaseError } from 'sequelize';
import { isDriverUnavailable } from './errors';
import { guardConnection, MYSQL_MAX_PREPARED_STATEMENTS } from './queryTimeout';

/** One `POST /kv/:key` write. */
export interface KvWrite {
  deviceId: number;
  key: string;
  /** The value's JSON text, stored as-is. */
  json: string;
  creatorIp: string;
  /** createdAt (when new) and updatedAt of the entry. */
  at: Date;
}

export interface KvWriteResult {
  created: boolean;
  /** The device revision this write was given (see KvService). */
  revision: number;
}

export interface KvWriterOptions {
  /** mysql:// URL of the database (the same as Sequelize's). */
  url: string;
  /** Connections of this worker's write pool = write transactions in flight at once. */
  connections: number;
  /** Most writes one transaction carries. */
  maxBatch: number;
  /** Bound on every statement round trip (ms, DB_QUERY_TIMEOUT_MS as in app/lib/queryTimeout.ts); 0 = none. */
  queryTimeoutMs: number;
  connectTimeoutMs: number;
}

interface Pending extends KvWrite {
  resolve(result: KvWriteResult): void;
  reject(err: unknown): void;
}

/** One write; its revision is the device's new one (@r) minus the writes after it. */
const UPSERT = 'INSERT INTO kv_entries (deviceId, `key`, value, creatorIp, revision, createdAt, updatedAt)' +
  ' VALUES (?, ?, ?, ?, @r - ?, ?, ?) ON DUPLICATE KEY UPDATE value = VALUES(value),' +
  ' creatorIp = VALUES(creatorIp), revision = VALUES(revision), updatedAt = VALUES(updatedAt)';
/** What its change-log record needs, kept right after it: created (ROW_COUNT() 1) and its revision. */
const REMEMBER = (n: number) => `SET @c${n} = ROW_COUNT(), @v${n} = @r - ?`;
/** The change-log records (app/service/changes.ts) of a whole batch: one multi-row insert before COMMIT. */
const LOG = 'INSERT INTO device_log (deviceId, revision, type, `key`, action, created, recordedAt) VALUES ';
const LOG_ROW = (n: number) => `(?, @v${n}, 'kv-key-changed', ?, 'upsert', @c${n} = 1, ?)`;

/**
 * Bytes one write may take in the batch's packet: mysql2 escapes values into the SQL
 * text (each byte at most doubled), the key appears in the upsert and in its log row,
 * plus the fixed text of its statements.
 */
export function writeBytes(w: Pick<KvWrite, 'key' | 'json'>): number {
  return 2 * Buffer.byteLength(w.json) + 4 * Buffer.byteLength(w.key) + 600;
}

/** The packet size assumed until the server's max_allowed_packet is known (MySQL 5.7's default, the smallest in use). */
const DEFAULT_MAX_PACKET = 4 * 1024 * 1024;
/** Room kept in a packet for the batch's fixed statements (START TRANSACTION, per-device UPDATE, COMMIT). */
const PACKET_RESERVE = 64 * 1024;

/** Errors of opening a connection (the database is not reachable at all). */
const unreachable = new WeakSet<object>();

/** mysql2 errors as Sequelize's, so the error handler answers an outage with 503. */
function wrap(err: unknown): Error {
  if (isDriverUnavailable(err)) return new ConnectionError(err as Error);
  if ((err as { sql?: string }).sql !== undefined) return new DatabaseError(err as Error & { sql: string });
  return err as Error;
}

/**
 * The MySQL write path of `POST /kv/:key`: group commit in the application.
 *
 * Writes that arrive while this worker's write transactions are busy wait in a
 * queue; the next free connection takes all of them (up to `maxBatch`) in one
 * transaction sent as one multi-statement round trip (READ COMMITTED, set per session):
 *
 *   START TRANSACTION;
 *   per device, in device-id order (row locks in the same order in every batch, so two
 *   batches cannot deadlock):
 *     UPDATE devices SET revision = LAST_INSERT_ID(revision + n) WHERE id = ?
 *       (the OK packet's insert id is the device's new revision); SET @r = LAST_INSERT_ID();
 *     per write of that device, in arrival order:
 *       INSERT … VALUES (…, @r - <writes after it>, …) ON DUPLICATE KEY UPDATE …
 *       (affected rows: 1 = created, 2 = updated);
 *       SET @c<n> = ROW_COUNT(), @v<n> = <its revision> (what its change-log record needs);
 *   INSERT INTO device_log … VALUES <one row per write> (the change-log records of the whole
 *     batch in one statement: measured cheaper than one insert per write, bench/writer-log.js);
 *   COMMIT
 *
 * Each write keeps its own answer: its own revision (consecutive per device, in
 * arrival order), `created`, timestamps. A quiet server runs each write alone, so
 * batching adds no latency; under load one commit (one log flush) carries many
 * writes. A batch also stays below the server's `max_allowed_packet` (read from the
 * first connection; a larger packet makes the server drop the connection, which would
 * read as "database unavailable"): writes join it while their escaped size fits, and a
 * write too big to share a packet travels alone. If a batch fails for any reason but an
 * unreachable database, its writes are retried one per transaction, one after the
 * other in arrival order (two writes of one key must commit in the order they came),
 * so a write can only fail on its own account.
 *
 * The pool is this writer's own (multi-statement enabled here and nowhere else).
 */
export class MysqlKvWriter {
  private readonly pool: Pool;
  private queue: Pending[] = [];
  private inFlight = 0;
  private scheduled = false;
  private closed = false;
  /** Called for each device of a committed batch with its latest revision (the log trimmer's touch). */
  onCommitted?: (deviceId: number, revision: number) => void;
  /** Committed transactions and the writes they carried, and failed batches retried write by write, since start. */
  readonly stats = { transactions: 0, writes: 0, retriedBatches: 0 };
  /** The server's max_allowed_packet (bytes), read once from the first connection. */
  private maxPacket = DEFAULT_MAX_PACKET;
  private maxPacketRead = false;

  constructor(private readonly opts: KvWriterOptions) {
    this.pool = mysql.createPool({
      uri: opts.url,
      connectionLimit: opts.connections,
      maxIdle: opts.connections,
      idleTimeout: 10000,
      multipleStatements: true,
      charset: 'utf8mb4',
      timezone: 'Z',
      connectTimeout: opts.connectTimeoutMs,
      enableKeepAlive: true,
      maxPreparedStatements: MYSQL_MAX_PREPARED_STATEMENTS,
    });
    // READ COMMITTED: no gap locks, so first writes of neighbouring devices cannot deadlock.
    // Every connection's queries are bounded like the app pool's; a connection whose query
    // timed out is closed, never lent again.
    this.pool.on('connection', conn => {
      guardConnection(conn, opts.queryTimeoutMs);
      conn.query('SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED', () => undefined);
      if (!this.maxPacketRead) {
        this.maxPacketRead = true;
        conn.query('SELECT @@max_allowed_packet AS p', (err, rows) => {
          const p = Number((rows as Array<{ p?: unknown }> | undefined)?.[0]?.p);
          if (err || !Number.isFinite(p) || p <= 0) this.maxPacketRead = false; // read again on the next connection
          else this.maxPacket = p;
        });
      }
    });
  }

  upsert(write: KvWrite): Promise<KvWriteResult> {
    if (this.closed) return Promise.reject(new ConnectionError(new Error('kv writer closed')));
    return new Promise((resolve, reject) => {
      this.queue.push({ ...write, resolve, reject });
      this.schedule();
    });
  }

  async close() {
    this.closed = true;
    await this.pool.promise().end().catch(() => undefined);
  }

  /**
   * Starts batches while connections are free. Deferred to the check phase, so that
   * the writes parsed in the same event-loop turn travel together.
   */
  private schedule() {
    if (this.scheduled || this.queue.length === 0 || this.inFlight >= this.opts.connections) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      while (this.queue.length > 0 && this.inFlight < this.opts.connections) {
        const batch = this.queue.splice(0, this.batchLength());
        this.inFlight++;
        this.runBatch(batch).finally(() => {
          this.inFlight--;
          this.schedule();
        });
      }
    });
  }

  /** How many queued writes the next batch takes: at most maxBatch, within the packet budget, at least one. */
  private batchLength(): number {
    const budget = this.maxPacket - PACKET_RESERVE;
    let bytes = 0;
    let n = 0;
    while (n < this.queue.length && n < this.opts.maxBatch) {
      bytes += writeBytes(this.queue[n]);
      if (n > 0 && bytes > budget) break;
      n++;
    }
    return n;
  }

  private async runBatch(batch: Pending[]) {
    let results: KvWriteResult[];
    try {
      results = await this.transaction(batch);
    } catch (err) {
      if (batch.length > 1 && !isDriverUnavailable(err)) {
        // Every write on its own, so that one bad write cannot fail the others; one after
        // the other, so that writes of one key still commit in arrival order.
        this.stats.retriedBatches++;
        for (const w of batch) await this.runBatch([ w ]);
        return;
      }
      const wrapped = wrap(err);
      // No connection could be opened: the writes still queued would each wait for their
      // own connect timeout to learn the same; they are answered now.
      const doomed = unreachable.has(err as object) ? this.queue.splice(0) : [];
      for (const w of [ ...batch, ...doomed ]) w.reject(wrapped);
      return;
    }
    batch.forEach((w, i) => w.resolve(results[i]));
  }

  private async transaction(batch: Pending[]): Promise<KvWriteResult[]> {
    const conn = await this.connection().catch(err => {
      if (err && typeof err === 'object') unreachable.add(err);
      throw err;
    });
    let open = false;
    try {
      // Devices in id order (row locks in the same order in every batch: no deadlock), each
      // followed by its writes in arrival order; LAST_INSERT_ID() holds the device's new
      // (last) revision while its writes are inserted.
      const byDevice = new Map<number, Pending[]>();
      for (const w of batch) {
        const list = byDevice.get(w.deviceId);
        if (list) list.push(w);
        else byDevice.set(w.deviceId, [ w ]);
      }
      const devices = [ ...byDevice.keys() ].sort((a, b) => a - b);
      const statements = [ 'START TRANSACTION' ];
      const values: unknown[] = [];
      const logRows: string[] = [];
      const logValues: unknown[] = [];
      for (const d of devices) {
        const writes = byDevice.get(d)!;
        statements.push('UPDATE devices SET revision = LAST_INSERT_ID(revision + ?) WHERE id = ?', 'SET @r = LAST_INSERT_ID()');
        values.push(writes.length, d);
        writes.forEach((w, j) => {
          const n = logRows.length;
          statements.push(UPSERT, REMEMBER(n));
          values.push(w.deviceId, w.key, w.json, w.creatorIp, writes.length - 1 - j, w.at, w.at, writes.length - 1 - j);
          logRows.push(LOG_ROW(n));
          logValues.push(w.deviceId, w.key, w.at);
        });
      }
      statements.push(LOG + logRows.join(', '), 'COMMIT');
      values.push(...logValues);
      open = true;
      const r = await this.query(conn, statements.join('; '), values) as ResultSetHeader[];
      open = false;

      const results = new Map<Pending, KvWriteResult>();
      let i = 1;
      for (const d of devices) {
        const writes = byDevice.get(d)!;
        const bump = r[i];
        i += 2; // the UPDATE and SET @r
        if (bump.affectedRows !== 1) throw new Error(`device ${d} does not exist`);
        const first = Number(bump.insertId) - writes.length + 1;
        // affectedRows: 1 = inserted, 2 = an existing row updated; each upsert is followed by its SET @c, @v.
        for (let j = 0; j < writes.length; j++, i += 2) results.set(writes[j], { created: r[i].affectedRows === 1, revision: first + j });
        this.onCommitted?.(d, first + writes.length - 1);
      }
      this.stats.transactions++;
      this.stats.writes += batch.length;
      return batch.map(w => results.get(w)!);
    } catch (err) {
      if (open) await this.rollback(conn, err);
      throw err;
    } finally {
      conn.release(); // a no-op for a destroyed connection
    }
  }

  /** Undoes an open transaction; a connection that cannot is closed, never reused. */
  private async rollback(conn: PoolConnection, cause: unknown) {
    if (isDriverUnavailable(cause)) {
      conn.destroy();
      return;
    }
    try {
      await this.query(conn, 'ROLLBACK', []);
    } catch {
      conn.destroy();
    }
  }

  private connection(): Promise<PoolConnection> {
    return new Promise((resolve, reject) => {
      this.pool.getConnection((err, conn) => (err ? reject(err) : resolve(conn)));
    });
  }

  private query(conn: PoolConnection, sql: string, values: unknown[]): Promise<unknown> {
    return new Promise((resolve, reject) => {
      conn.query({ sql, values }, (err, rows) => (err ? reject(err) : resolve(rows)));
    });
  }
}
