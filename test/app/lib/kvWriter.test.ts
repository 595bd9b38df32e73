import assert from 'node:assert';
import net from 'node:net';
import mysql from 'mysql2/promise';
import { app, mock } from 'egg-mock/bootstrap';
import { MysqlKvWriter } from '../../../app/lib/kvWriter';
import { isDatabaseUnavailable } from '../../../app/lib/errors';
import { deviceWithToken } from '../../support/factories';
import { eventually } from '../../support/socket';

const isMysql = () => app.settings.database.dialect === 'mysql';
const dbUrl = () => (app.settings.database as { url: string }).url;
/** A writer of its own (released in afterEach), in place of the app's. */
function ownWriter(connections: number): MysqlKvWriter {
  const writer = new MysqlKvWriter({ url: dbUrl(), connections, maxBatch: 64, queryTimeoutMs: 0, connectTimeoutMs: 3000 });
  mock(app, 'kvWriter', writer);
  return writer;
}
const queued = (w: MysqlKvWriter) => (w as unknown as { queue: unknown[] }).queue.length;

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

  describe('batches (issue 10, item 9)', () => {
    let writer: MysqlKvWriter | undefined;
    afterEach(async () => {
      await writer?.close();
      writer = undefined;
    });

    it('20 writes of 1.9 MB at once all answer 200 and read back: a batch stays below max_allowed_packet (was one 38 MB packet: 503 for all)', async () => {
      const { device, token } = await deviceWithToken();
      const N = 20;
      const values = Array.from({ length: N }, (_, i) => ({ i, v: String.fromCharCode(97 + i).repeat(1900 * 1000) }));
      const post = (i: number) => app.httpRequest().post(`/kv/big${i}`).set('x-app-token', token).send(values[i]).then(r => r);
      let lock: mysql.Connection | undefined;
      let pending: Array<Promise<{ status: number; body: unknown }>>;
      if (isMysql()) {
        // One write connection, held up by a lock on the device row: the first write waits in
        // its transaction while the other 19 queue, then leave together.
        writer = ownWriter(1);
        lock = await mysql.createConnection({ uri: dbUrl() });
        const [[ row ]] = await lock.query('SELECT id FROM devices WHERE uuid = ?', [ device.uuid ]) as unknown as [Array<{ id: number }>];
        await lock.query('START TRANSACTION');
        await lock.query('SELECT id FROM devices WHERE id = ? FOR UPDATE', [ row.id ]);
        pending = values.map((_, i) => post(i));
        await eventually(() => assert.strictEqual(queued(writer!), N - 1), 60000);
        await lock.query('COMMIT');
        await lock.end();
      } else {
        pending = values.map((_, i) => post(i));
      }
      const answers = await Promise.all(pending);
      assert.deepStrictEqual(answers.map(a => a.status), Array(N).fill(200), JSON.stringify(answers.find(a => a.status !== 200)?.body));
      for (let i = 0; i < N; i++) {
        const res = await app.httpRequest().get(`/kv/big${i}`).set('x-app-token', token).expect(200);
        assert.ok(res.body.i === i && res.body.v === values[i].v, `big${i}`);
      }
      if (writer) {
        // 16 MB packets: the 19 queued writes (3.8 MB each once escaped, at most) leave 4 by 4,
        // and no batch fails (before: one 36 MB batch, refused by the server, then 19 retries).
        assert.deepStrictEqual(writer.stats, { transactions: 6, writes: N, retriedBatches: 0 });
      }
    });

    it('when a batch fails on one write, the others are retried one after the other: two writes of one key commit in arrival order (MySQL writer)', async () => {
      const { device } = await deviceWithToken();
      if (!isMysql()) return; // the embedded default writes one by one through Sequelize: no batches
      const wr = ownWriter(4);
      writer = wr;
      const row = await app.model.Device.findOne({ where: { uuid: device.uuid }, raw: true }) as unknown as { id: number };
      const at = new Date();
      const w = { deviceId: row.id, creatorIp: '127.0.0.1', at };
      await wr.upsert({ ...w, key: 'warm', json: '1' }); // the writer now knows max_allowed_packet
      // Four open connections, so that the retries start at once.
      const pool = (wr as unknown as { pool: mysql.Pool }).pool as unknown as { getConnection(cb: (e: unknown, c: { release(): void }) => void): void };
      const conns = await Promise.all(Array.from({ length: 4 }, () => new Promise<{ release(): void }>((resolve, reject) => pool.getConnection((e, c) => (e ? reject(e) : resolve(c))))));
      for (const c of conns) c.release();
      // The first write's packet is much longer than the second's: sent in parallel, the
      // second would reach the server (and the device's row lock) first.
      const big = JSON.stringify({ first: 'x'.repeat(6 * 1000 * 1000) });
      for (let round = 0; round < 3; round++) {
        const outcomes = await Promise.allSettled([
          wr.upsert({ ...w, key: 'k', json: big }),
          wr.upsert({ ...w, key: 'k', json: `"second ${round}"` }),
          // Longer than the creatorIp column: fails on its own account (strict mode), so the batch is retried write by write.
          wr.upsert({ ...w, key: 'bad', json: '1', creatorIp: 'x'.repeat(300) }),
        ]);
        assert.deepStrictEqual(outcomes.map(o => o.status), [ 'fulfilled', 'fulfilled', 'rejected' ]);
        const [ first, second ] = outcomes.map(o => (o as PromiseFulfilledResult<{ revision: number }>).value);
        assert.ok(first.revision < second.revision, `round ${round}: ${first.revision} < ${second.revision}`);
        const [[ stored ]] = await app.model.query('SELECT value, revision FROM kv_entries WHERE deviceId = ? AND `key` = ?', { replacements: [ row.id, 'k' ] }) as unknown as [Array<{ value: string; revision: number }>];
        assert.deepStrictEqual([ stored.value, Number(stored.revision) ], [ `"second ${round}"`, second.revision ]);
      }
      assert.strictEqual(wr.stats.retriedBatches, 3);
    });
  });
});
