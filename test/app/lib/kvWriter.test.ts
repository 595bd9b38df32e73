import assert from 'node:assert';
import net from 'node:net';
import { MysqlKvWriter } from '../../../app/lib/kvWriter';
import { isDatabaseUnavailable } from '../../../app/lib/errors';

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>(resolve => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise(resolve => srv.close(resolve));
  return port;
}

describe('test/app/lib/kvWriter.test.ts', () => {
  const write = { deviceId: 1, key: 'k', json: '1', creatorIp: '127.0.0.1', at: new Date() };

  it('an unreachable database rejects every write, queued ones included, with an error the handler answers 503', async () => {
    const writer = new MysqlKvWriter({
      url: `mysql://root@127.0.0.1:${await closedPort()}/nope`, connections: 2, maxBatch: 8, queryTimeoutMs: 1000, connectTimeoutMs: 1000,
    });
    try {
      // 2 connections, batches of 8: 30 writes make 2 batches in flight and 14 queued.
      const outcomes = await Promise.allSettled(Array.from({ length: 30 }, (_, i) => writer.upsert({ ...write, key: `k${i}` })));
      assert.strictEqual(outcomes.length, 30);
      for (const o of outcomes) {
        assert.strictEqual(o.status, 'rejected');
        const err = (o as PromiseRejectedResult).reason;
        assert.strictEqual(err.name, 'SequelizeConnectionError');
        assert.strictEqual(isDatabaseUnavailable(err), true);
      }
    } finally {
      await writer.close();
    }
  });

  it('after close(), a write is refused the same way', async () => {
    const writer = new MysqlKvWriter({
      url: 'mysql://root@127.0.0.1:3306/test', connections: 1, maxBatch: 1, queryTimeoutMs: 1000, connectTimeoutMs: 1000,
    });
    await writer.close();
    await assert.rejects(writer.upsert(write), (err: Error) => err.name === 'SequelizeConnectionError' && isDatabaseUnavailable(err));
  });
});
