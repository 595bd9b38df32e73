import assert from 'node:assert';
import net from 'node:net';
import mysql from 'mysql2';
import { DatabaseError, Options, QueryTypes, Sequelize } from 'sequelize';
import { app } from 'egg-mock/bootstrap';
import { GuardableConnection, QUERY_TIMEOUT_CODE, guardConnection, installQueryTimeout, queryTimeoutOf } from '../../../app/lib/queryTimeout';
import { isDatabaseUnavailable } from '../../../app/lib/errors';

/**
 * A MySQL-protocol server (mysql2's own server side) that answers every statement
 * with OK until it is frozen; then it keeps every connection open and answers
 * nothing, which is what a client sees of a MySQL stopped with SIGSTOP (the kernel
 * still accepts and acknowledges). The real thing, a frozen MariaDB under a running
 * cluster, is test/fault/mysql-freeze.test.ts.
 */
class FreezableServer {
  frozen = false;
  /** Connections accepted so far. */
  connections = 0;
  port = 0;
  private readonly server = mysql.createServer(conn => this.accept(conn as unknown as ServerConnection));
  private readonly sockets = new Set<net.Socket>();

  async start() {
    const inner = (this.server as unknown as { _server: net.Server })._server;
    inner.on('connection', s => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>(resolve => inner.listen(0, '127.0.0.1', resolve));
    this.port = (inner.address() as net.AddressInfo).port;
  }

  url() {
    return `mysql://root@127.0.0.1:${this.port}/stand_in`;
  }

  async stop() {
    for (const s of this.sockets) s.destroy();
    await new Promise(resolve => this.server.close(resolve));
  }

  private accept(conn: ServerConnection) {
    this.connections += 1;
    conn.on('error', () => undefined);
    // mysql2's server side does not restart its sequence ids per command: do it here.
    const ok = () => {
      if (this.frozen) return;
      conn.sequenceId = 1;
      conn.writeOk();
      conn.sequenceId = 0;
    };
    conn.serverHandshake({
      protocolVersion: 10, serverVersion: '10.11.0-MariaDB-stand-in', connectionId: this.connections, statusFlags: 2,
      characterSet: 8, capabilityFlags: 0xffffff,
      authCallback: (_params: unknown, done: (err: null) => void) => {
        done(null);
        conn.sequenceId = 0;
      },
    });
    // mysql2's server routes SET … to 'stmt_prepare'.
    conn.on('query', ok);
    conn.on('stmt_prepare', ok);
  }
}

interface ServerConnection {
  sequenceId: number;
  on(event: string, listener: (...args: any[]) => void): void;
  writeOk(): void;
  serverHandshake(args: Record<string, unknown>): void;
}

type Cb = (err: (Error & { code?: string }) | null) => void;
type RawConnection = Omit<GuardableConnection, 'query' | 'execute'> & {
  query(sql: unknown, cb: Cb): void;
  execute(sql: unknown, values: unknown[], cb: Cb): void;
  on(event: string, listener: (...args: any[]) => void): void;
  _closing?: boolean;
  _fatalError?: unknown;
};

function connect(server: FreezableServer): Promise<RawConnection> {
  const conn = mysql.createConnection({ host: '127.0.0.1', port: server.port, user: 'root', connectTimeout: 2000 }) as unknown as RawConnection;
  conn.on('error', () => undefined);
  return new Promise((resolve, reject) => {
    conn.query('SELECT 1', err => (err ? reject(err) : resolve(conn)));
  });
}

/** The error a callback-style call ends with (a hang fails the test by mocha's timeout). */
function failure(call: (cb: (err: (Error & { code?: string }) | null) => void) => void): Promise<Error & { code?: string; fatal?: boolean }> {
  return new Promise((resolve, reject) => call(err => (err ? resolve(err) : reject(new Error('the call succeeded')))));
}

function standInSequelize(server: FreezableServer, ms: number) {
  const sequelize = new Sequelize(server.url(), {
    logging: false,
    databaseVersion: '10.11.0', // the stand-in answers no SELECT VERSION()
    dialectOptions: { connectTimeout: 2000 },
    pool: { max: 2, min: 0, acquire: 5000, idle: 60000 },
  } as Options);
  installQueryTimeout(sequelize, ms);
  return sequelize;
}

describe('test/app/lib/queryTimeout.test.ts', () => {
  let server: FreezableServer;

  beforeEach(async () => {
    server = new FreezableServer();
    await server.start();
  });

  afterEach(async () => {
    await server.stop();
  });

  describe('guardConnection()', () => {
    it('a query the server never answers fails with PROTOCOL_SEQUENCE_TIMEOUT (fatal), and so does everything queued behind it, PREPARE included', async () => {
      const conn = guardConnection(await connect(server), 300);
      assert.strictEqual(queryTimeoutOf(conn), 300);
      server.frozen = true;
      const [ first, queued, executed ] = await Promise.all([
        failure(cb => conn.query({ sql: 'SELECT 1' }, cb)),
        failure(cb => conn.query('SELECT 2', cb)),
        failure(cb => conn.execute('SELECT ?', [ 3 ], cb)),
      ]);
      for (const err of [ first, queued, executed ]) {
        assert.strictEqual(err.code, QUERY_TIMEOUT_CODE, err.message);
        assert.strictEqual(err.fatal, true);
      }
      // Closed, so a pool's validation discards it; a new query fails at once.
      assert.strictEqual(conn._closing, true);
      assert.ok(conn._fatalError);
      assert.ok(conn.stream?.destroyed);
      const late = await failure(cb => conn.query('SELECT 4', cb));
      assert.strictEqual(late.fatal, true);
      for (const err of [ first, late ]) assert.strictEqual(isDatabaseUnavailable(new DatabaseError(err as Error & { sql: string })), true);
    });

    it("the caller's own timeout option wins, and the connection is closed as well", async () => {
      const conn = guardConnection(await connect(server), 600000);
      server.frozen = true;
      const err = await failure(cb => conn.query({ sql: 'SELECT 1', timeout: 200 }, cb));
      assert.strictEqual(err.code, QUERY_TIMEOUT_CODE);
      assert.strictEqual(conn._closing, true);
    });

    it('an answered query is untouched, and guarding twice or with 0 changes nothing', async () => {
      const conn = await connect(server);
      assert.strictEqual(guardConnection(conn, 0), conn);
      assert.strictEqual(queryTimeoutOf(conn), undefined);
      guardConnection(guardConnection(conn, 300), 100);
      assert.strictEqual(queryTimeoutOf(conn), 300);
      await new Promise<void>((resolve, reject) => conn.query('SELECT 1', err => (err ? reject(err) : resolve())));
      // Longer than the bound: the answered query's timer must not fire afterwards.
      await new Promise(resolve => setTimeout(resolve, 400));
      assert.notStrictEqual(conn._closing, true);
    });
  });

  describe('installQueryTimeout()', () => {
    it('Sequelize: idle pooled connections that stop answering fail their query as database-unavailable (503), are never lent again, and queries work again on a new connection', async () => {
      const sequelize = standInSequelize(server, 300);
      const manager = sequelize.connectionManager;
      try {
        // Two idle connections in the pool.
        const both = await Promise.all([ manager.getConnection({ type: 'read' }), manager.getConnection({ type: 'read' }) ]);
        both.forEach(c => manager.releaseConnection(c));
        assert.strictEqual(server.connections, 2);
        server.frozen = true;

        // Sequelize's own query path…
        const viaSequelize = await sequelize.query('SELECT 1', { type: QueryTypes.RAW }).then(() => undefined, (err: unknown) => err);
        assert.ok(viaSequelize instanceof DatabaseError, String(viaSequelize));
        assert.strictEqual((viaSequelize.parent as Error & { code?: string }).code, QUERY_TIMEOUT_CODE);
        assert.strictEqual(isDatabaseUnavailable(viaSequelize), true);

        // …and the direct one app/service/kv.ts takes (a borrowed connection, conn.query({ sql, values }, cb)).
        const conn = await manager.getConnection({ type: 'read' });
        let direct: unknown;
        try {
          assert.strictEqual(queryTimeoutOf(conn), 300);
          direct = await new Promise((resolve, reject) => {
            (conn as unknown as RawConnection).query({ sql: 'SELECT ?', values: [ 1 ] }, err => (err ? resolve(new DatabaseError(err as Error & { sql: string })) : reject(new Error('answered'))));
          });
        } finally {
          manager.releaseConnection(conn);
        }
        assert.strictEqual(isDatabaseUnavailable(direct), true);

        // A timed-out connection lent again would fail this at once (closed) or hang (not closed).
        server.frozen = false;
        await sequelize.query('SELECT 1', { type: QueryTypes.RAW });
        assert.ok(server.connections > 2, 'answered on a new connection');
      } finally {
        await sequelize.close();
      }
    });

    it('bounds the statement that opens a connection (SET time_zone): a server frozen after the handshake answers database-unavailable', async () => {
      const sequelize = standInSequelize(server, 300);
      try {
        server.frozen = true;
        const err = await sequelize.query('SELECT 1', { type: QueryTypes.RAW }).then(() => undefined, (e: unknown) => e);
        assert.strictEqual((err as Error).name, 'SequelizeConnectionError', String(err));
        assert.strictEqual(isDatabaseUnavailable(err), true);
      } finally {
        await sequelize.close();
      }
    });

    it('does nothing with 0 or on SQLite', async () => {
      const off = standInSequelize(server, 0);
      const sqlite = new Sequelize({ dialect: 'sqlite', storage: ':memory:', logging: false });
      try {
        installQueryTimeout(sqlite, 300);
        await sqlite.query('SELECT 1');
        await off.query('SELECT 1', { type: QueryTypes.RAW });
        const conn = await off.connectionManager.getConnection({ type: 'read' });
        assert.strictEqual(queryTimeoutOf(conn), undefined);
        off.connectionManager.releaseConnection(conn);
      } finally {
        await off.close();
        await sqlite.close();
      }
    });
  });

  it('the app lends bounded connections on MySQL (DB_QUERY_TIMEOUT_MS), plain ones on SQLite', async () => {
    const manager = app.model.connectionManager;
    const conn = await manager.getConnection({ type: 'read' });
    try {
      const ms = app.settings.dbQueryTimeoutMs;
      assert.strictEqual(queryTimeoutOf(conn), app.model.getDialect() === 'mysql' && ms > 0 ? ms : undefined);
    } finally {
      manager.releaseConnection(conn);
    }
  });
});
