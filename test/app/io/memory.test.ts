import assert from 'node:assert';
import v8 from 'node:v8';
import vm from 'node:vm';
import { app } from 'egg-mock/bootstrap';
import { deviceWithToken } from '../../support/factories';
import { closeAllClients, COMBINATIONS, connectJoined, startServer, stopServer } from '../../support/socket';

/**
 * What a connected socket keeps alive (issue 13, target 2; docs/PERFORMANCE.md §10).
 * egg-socket.io creates an egg context for each connection to run the connection
 * middlewares (io/middleware/auth.ts, packetLimit.ts); it must not outlive the handshake
 * (patches/egg-socket.io: the chain ends once the socket is admitted), while the
 * socket's disconnect still clears its presence.
 */

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

/** A full collection; WeakRefs are cleared only after the current job, hence the turn in between. */
async function collectGarbage() {
  gc();
  await new Promise(resolve => setImmediate(resolve));
  gc();
}

/** Weak references to the egg contexts egg-socket.io creates (on a /socket.io request) while `fn` runs. */
async function trackingContexts<T>(fn: () => Promise<T>): Promise<{ result: T; contexts: Array<WeakRef<object>> }> {
  const contexts: Array<WeakRef<object>> = [];
  const original = app.createContext;
  app.createContext = function(this: unknown, ...args: Parameters<typeof original>) {
    const ctx = original.apply(this, args);
    if (String((args[0] as { url?: string } | undefined)?.url ?? '').startsWith('/socket.io')) contexts.push(new WeakRef(ctx));
    return ctx;
  } as typeof original;
  try {
    return { result: await fn(), contexts };
  } finally {
    app.createContext = original;
  }
}

describe('test/app/io/memory.test.ts', () => {
  it('MySQL: pooled mysql2 connections (Sequelize\'s and the KV writer\'s) open with a statement cache of 64, not 16,000 (512 KiB each)', async function() {
    if (!app.kvWriter) return this.skip(); // SQLite: no mysql2
    type Conn = { config: { maxPreparedStatements: number } };
    const manager = (app.model as unknown as { connectionManager: { getConnection(): Promise<Conn>; releaseConnection(c: Conn): Promise<void> } }).connectionManager;
    const conn = await manager.getConnection();
    try {
      assert.strictEqual(conn.config.maxPreparedStatements, 64);
    } finally {
      await manager.releaseConnection(conn);
    }
    const pool = (app.kvWriter as unknown as { pool: { config: { connectionConfig: { maxPreparedStatements: number } } } }).pool;
    assert.strictEqual(pool.config.connectionConfig.maxPreparedStatements, 64);
  });

  for (const combo of COMBINATIONS) {
    describe(combo.title, () => {
      before(async () => {
        await startServer();
      });
      afterEach(() => closeAllClients());
      after(() => stopServer());

      it('the egg context of the connection is not kept while the socket stays joined; its disconnect still clears its presence', async () => {
        const { device, token } = await deviceWithToken();
        const watcher = await connectJoined(combo, token, device.uuid, 1);
        const { result: client, contexts } = await trackingContexts(() => connectJoined(combo, token, device.uuid, 2));
        assert.deepStrictEqual(await watcher.expectNext('device-joined'), { uuid: device.uuid, connections: 2 });
        assert.ok(contexts.length >= 1, 'no egg context was created for the connection');
        await collectGarbage();
        assert.strictEqual(contexts.filter(ref => ref.deref() !== undefined).length, 0, 'an egg context of the connection is still alive');
        assert.strictEqual(client.connected, true);
        client.close();
        assert.deepStrictEqual(await watcher.expectNext('device-left'), { uuid: device.uuid, connections: 1 });
      });
    });
  }
});
