import type { Sequelize } from 'sequelize';

/**
 * A bound on every query of the app's MySQL pool (DB_QUERY_TIMEOUT_MS).
 *
 * Sequelize passes no timeout to mysql2, so a query sent to a server that keeps the
 * TCP connection open but never answers (a frozen or stalled MySQL: the kernel still
 * acknowledges) waits forever, and so does its request. mysql2's own `timeout`
 * option is not enough: its timer only starts when the command reaches the head of
 * the connection's queue (a query queued behind a stalled one has none), the
 * PREPARE step of `execute()` has none at all, and a timed-out command stays at the
 * head of the queue, so the connection, back in the pool and looking healthy, hangs
 * the next query sent on it.
 *
 * So every mysql2 connection of the pool gets `query()` and `execute()` wrappers
 * whose timer starts when the call is made. When it fires, the call fails with
 * mysql2's timeout error (`PROTOCOL_SEQUENCE_TIMEOUT`, fatal) and the connection is
 * closed: every other command still waiting on it fails with the same error at once,
 * and Sequelize's pool validation (`_closing`, `_fatalError`, `stream.destroyed`)
 * discards it instead of lending it again. A caller's own `timeout` option wins over
 * the default (0: no bound). `isDatabaseUnavailable()` counts the error as an
 * unreachable database, so requests are answered 503 `SERVICE_UNAVAILABLE`.
 *
 * Installed by the app workers only (app.ts): the agent's migrations may
 * legitimately run longer.
 */

/** mysql2's code for a query that got no answer in time (its own `timeout` option uses it too). */
export const QUERY_TIMEOUT_CODE = 'PROTOCOL_SEQUENCE_TIMEOUT';

/**
 * mysql2's prepared-statement cache per connection (its `maxPreparedStatements`). mysql2
 * allocates the cache's four arrays at full size when a connection opens: its default of
 * 16,000 entries is 512 KiB of heap per pooled connection. The server prepares a few
 * statements (Sequelize `bind` queries); 64 keeps them all (docs/PERFORMANCE.md §10).
 */
export const MYSQL_MAX_PREPARED_STATEMENTS = 64;

type Callback = (this: unknown, err: Error | null, ...results: unknown[]) => unknown;

interface Command {
  once?(event: string, listener: () => void): unknown;
  emit?(event: string, ...args: unknown[]): boolean;
  listenerCount?(event: string): number;
  onResult?: unknown;
}

/** The parts of a mysql2 connection this module uses. */
export interface GuardableConnection {
  query(...args: unknown[]): unknown;
  execute(...args: unknown[]): unknown;
  destroy(): void;
  stream?: { destroyed?: boolean; destroy(err?: Error): void };
}

const GUARD = Symbol('queryTimeout');

type Guarded = GuardableConnection & { [GUARD]?: number };

/** The error a call gets when the database does not answer within `ms`. */
export function queryTimeoutError(ms: number): Error {
  return Object.assign(new Error(`Query inactivity timeout: no answer from the database within ${ms} ms`), {
    code: QUERY_TIMEOUT_CODE,
    errno: QUERY_TIMEOUT_CODE,
    syscall: 'query',
    fatal: true,
  });
}

/** The bound (ms) a connection's queries have, or undefined when it is not guarded. */
export function queryTimeoutOf(conn: unknown): number | undefined {
  return conn && typeof conn === 'object' ? (conn as Guarded)[GUARD] : undefined;
}

/**
 * Closes a connection whose query got no answer. mysql2's own destroy() only ends
 * the socket and sets `_closing` (which silences its close handler, so commands
 * still queued would never be told); destroying the socket with `err` goes through
 * mysql2's network-error path, which fails every pending command with it.
 */
function kill(conn: GuardableConnection, err: Error) {
  if (conn.stream?.destroyed) return; // already dead (killed, or mysql2's own fatal-error path)
  try {
    conn.destroy();
  } catch {
    // already closed
  }
  conn.stream?.destroy(err);
}

function bounded(conn: GuardableConnection, original: (...args: unknown[]) => unknown, args: unknown[], ms: number): unknown {
  const options = args[0];
  const own = options && typeof options === 'object' ? (options as { timeout?: unknown }).timeout : undefined;
  const limit = typeof own === 'number' ? own : ms;
  if (!(limit > 0)) return original.apply(conn, args);

  let settled = false;
  let timer: NodeJS.Timeout | undefined;
  const settle = () => {
    settled = true;
    if (timer) clearTimeout(timer);
  };
  // query(sql, cb), query(sql, values, cb), execute(...) alike: the callback is the last function.
  let index = -1;
  for (let i = args.length - 1; i >= 1; i--) {
    if (typeof args[i] === 'function') {
      index = i;
      break;
    }
  }
  const callback = index >= 0 ? args[index] as Callback : undefined;
  if (callback) {
    args = args.slice();
    args[index] = function(this: unknown, err: Error | null, ...results: unknown[]) {
      if (settled) return; // already failed by the timer
      settle();
      // mysql2's own `timeout` fired (a caller's option): its command still holds the connection.
      if ((err as { code?: string } | null)?.code === QUERY_TIMEOUT_CODE) kill(conn, err!);
      return callback.call(this, err, ...results);
    };
  }
  // Armed before the call, so that it runs before a mysql2 timer of the same length.
  let command: Command | undefined;
  timer = setTimeout(() => {
    if (settled) return;
    settled = true;
    const err = queryTimeoutError(limit);
    if (callback) callback.call(command, err);
    else if (!command?.onResult && (command?.listenerCount?.('error') ?? 0) > 0) command!.emit!('error', err);
    kill(conn, err);
  }, limit);
  try {
    command = original.apply(conn, args) as Command | undefined;
  } catch (err) {
    settle();
    throw err;
  }
  // Event-emitter mode (no callback): the command emits 'end' when it is answered.
  if (!callback) command?.once?.('end', settle);
  return command;
}

/** Bounds every `query()` and `execute()` of a mysql2 connection to `ms` (0: leaves it alone). Idempotent. */
export function guardConnection<T extends object>(conn: T, ms: number): T {
  const c = conn as unknown as Guarded;
  if (!(ms > 0) || c[GUARD] !== undefined) return conn;
  c[GUARD] = ms;
  for (const method of [ 'query', 'execute' ] as const) {
    const original = c[method] as (...args: unknown[]) => unknown;
    c[method] = (...args: unknown[]) => bounded(c, original, args, ms);
  }
  return conn;
}

interface MysqlConnectionManager {
  lib: { createConnection(...args: unknown[]): GuardableConnection };
}

/**
 * Bounds every query of a Sequelize instance's MySQL connections, from the one that
 * opens them (`SET time_zone`) on: its connection manager creates connections
 * through a copy of the mysql2 module whose createConnection() guards them. Call it
 * before the first connection is opened. No-op on SQLite or with `ms` 0.
 */
export function installQueryTimeout(sequelize: Sequelize, ms: number) {
  if (!(ms > 0) || sequelize.getDialect() !== 'mysql') return;
  const manager = sequelize.connectionManager as unknown as MysqlConnectionManager;
  const lib = manager.lib;
  if ((lib as { [GUARD]?: number })[GUARD] !== undefined) return;
  manager.lib = Object.create(lib, {
    createConnection: { value: (...args: unknown[]) => guardConnection(lib.createConnection(...args), ms) },
    [GUARD]: { value: ms },
  });
}
