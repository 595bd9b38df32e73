import assert from 'node:assert';
import { app } from 'egg-mock/bootstrap';
import type { KvChange } from '../../../app/lib/kvEvents';
import { LogTrimmer } from '../../../app/lib/logTrimmer';
import { eventSeq } from '../../../app/service/changes';
import { deviceWithToken } from '../../support/factories';

interface Row {
  revision: number;
  type: string;
  key: string | null;
  action: string | null;
  created: boolean | null;
  batch: boolean | null;
}

/** The device's log rows, in store order, with booleans and numbers normalised across dialects. */
async function logRows(deviceId: number): Promise<Row[]> {
  const rows = await app.model.query('SELECT revision, type, `key`, action, created, batch FROM device_log WHERE deviceId = ? ORDER BY revision, seq', {
    replacements: [ deviceId ], type: 'SELECT', raw: true,
  }) as Array<Record<string, unknown>>;
  const bool = (v: unknown) => (v === null ? null : !!Number(v));
  return rows.map(r => ({
    revision: Number(r.revision),
    type: String(r.type),
    key: r.key as string | null,
    action: r.action as string | null,
    created: bool(r.created),
    batch: bool(r.batch),
  }));
}

/**
 * The device log (app/service/changes.ts): one store for KV changes (written in the
 * change's own transaction, on both write paths) and relayed events.
 */
describe('test/app/service/changes.test.ts', () => {
  let device: { id: number; uuid: string };
  let token: string;
  let events: KvChange[];
  let unsubscribe: () => void;

  beforeEach(async () => {
    const d = await deviceWithToken();
    device = d.device;
    token = d.token;
    events = [];
    unsubscribe = app.kvEvents.subscribe(c => events.push(c));
  });
  afterEach(() => unsubscribe());

  describe('KV changes are recorded with the write', () => {
    it('POST (create, update), batch and DELETE each leave one record with the revision, key, action, created and batch flags delivered', async () => {
      await app.httpRequest().post('/kv/a').set('x-app-token', token).send({ v: 1 })
        .expect(200);
      await app.httpRequest().post('/kv/a').set('x-app-token', token).send({ v: 2 })
        .expect(200);
      await app.httpRequest().post('/kv/_batchimport').set('x-app-token', token).send({ b: [], a: { v: 3 } })
        .expect(200);
      await app.httpRequest().delete('/kv/b').set('x-app-token', token).expect(204);
      assert.deepStrictEqual(await logRows(device.id), [
        { revision: 1, type: 'kv-key-changed', key: 'a', action: 'upsert', created: true, batch: null },
        { revision: 2, type: 'kv-key-changed', key: 'a', action: 'upsert', created: false, batch: null },
        { revision: 3, type: 'kv-key-changed', key: 'b', action: 'upsert', created: true, batch: true },
        { revision: 4, type: 'kv-key-changed', key: 'a', action: 'upsert', created: false, batch: true },
        { revision: 5, type: 'kv-key-changed', key: 'b', action: 'delete', created: null, batch: null },
      ]);
    });

    it('concurrent writes of one device (batched into one transaction on MySQL) get consecutive revisions and exact created flags in the log', async () => {
      const keys = Array.from({ length: 20 }, (_, i) => `k${i % 10}`);
      const info = await app.mockContext().service.appInstall.resolveToken(token);
      assert.ok(info);
      await Promise.all(keys.map((key, i) => app.mockContext().service.kv.upsert(info, key, { i }, '127.0.0.1')));
      const rows = await logRows(device.id);
      assert.deepStrictEqual(rows.map(r => r.revision), Array.from({ length: 20 }, (_, i) => i + 1));
      // Exactly the first write of each key created it, and the log agrees with the events sent.
      const byRevision = new Map(events.map(e => [ e.revision, e ]));
      for (const r of rows) {
        const e = byRevision.get(r.revision) as Extract<KvChange, { action: 'upsert' }>;
        assert.strictEqual(r.key, e.key);
        assert.strictEqual(r.created, e.created);
      }
      assert.strictEqual(rows.filter(r => r.created).length, 10);
    });

    it('failed writes leave no record (404 delete, read-only refusal, invalid body)', async () => {
      await app.httpRequest().delete('/kv/missing').set('x-app-token', token).expect(404);
      await app.httpRequest().post('/kv/x').set('x-app-token', token).expect(400);
      assert.deepStrictEqual(await logRows(device.id), []);
    });
  });

  describe('history()', () => {
    it('answers the most recent `limit` records after skipping `offset`, oldest first, as delivered plus type and recordedAt', async () => {
      for (let i = 0; i < 3; i++) {
        await app.httpRequest().post(`/kv/k${i}`).set('x-app-token', token).send({ i })
          .expect(200);
      }
      const at = new Date('2026-01-02T03:04:05.678Z');
      await app.mockContext().service.changes.recordEvent([ device.id ], 'notice', { eventId: 'e1', content: { text: '你好' } }, at);
      await app.httpRequest().delete('/kv/k0').set('x-app-token', token).expect(204);

      const ctx = app.mockContext();
      const all = await ctx.service.changes.history(device, 50, 0);
      assert.deepStrictEqual(all.map(r => r.type), [ 'kv-key-changed', 'kv-key-changed', 'kv-key-changed', 'notice', 'kv-key-changed' ]);
      assert.deepStrictEqual(all[0], { ...events[0], type: 'kv-key-changed', recordedAt: (events[0] as { updatedAt: string }).updatedAt });
      assert.deepStrictEqual(all[3], { eventId: 'e1', content: { text: '你好' }, type: 'notice', recordedAt: at.toISOString() });
      assert.deepStrictEqual(all[4], { ...events[3], type: 'kv-key-changed', recordedAt: (events[3] as { deletedAt: string }).deletedAt });

      const page = await ctx.service.changes.history(device, 2, 1);
      assert.deepStrictEqual(page, all.slice(2, 4));
      assert.deepStrictEqual(await ctx.service.changes.history(device, 10, 5), []);
    });

    it('a relayed event keeps its place between the changes before and after it, also several in one millisecond', async () => {
      await app.httpRequest().post('/kv/a').set('x-app-token', token).send({})
        .expect(200);
      const ctx = app.mockContext();
      const at = new Date();
      for (const name of [ 'e1', 'e2', 'e3' ]) await ctx.service.changes.recordEvent([ device.id ], name, { name }, at);
      await app.httpRequest().post('/kv/b').set('x-app-token', token).send({})
        .expect(200);
      await ctx.service.changes.recordEvent([ device.id ], 'e4', {}, at);
      const all = await ctx.service.changes.history(device, 50, 0);
      assert.deepStrictEqual(all.map(r => (r.type === 'kv-key-changed' ? r.key : r.type)), [ 'a', 'e1', 'e2', 'e3', 'b', 'e4' ]);
    });

    it('keeps devices apart', async () => {
      const other = await deviceWithToken();
      await app.httpRequest().post('/kv/mine').set('x-app-token', token).send({})
        .expect(200);
      await app.mockContext().service.changes.recordEvent([ other.device.id ], 'elsewhere', { x: 1 }, new Date());
      const mine = await app.mockContext().service.changes.history(device, 50, 0);
      assert.deepStrictEqual(mine.map(r => r.type), [ 'kv-key-changed' ]);
      const theirs = await app.mockContext().service.changes.history(other.device, 50, 0);
      assert.deepStrictEqual(theirs.map(r => r.type), [ 'elsewhere' ]);
    });
  });

  describe('trim()', () => {
    it('keeps the last CHANGES_RETENTION changes and the last 1000 relayed events; never touches the other kind', async () => {
      const s = app.config.classworks as { changesRetention: number; eventHistoryMax: number };
      const saved = [ s.changesRetention, s.eventHistoryMax ];
      s.changesRetention = 3;
      s.eventHistoryMax = 2;
      try {
        for (let i = 0; i < 5; i++) {
          await app.httpRequest().post(`/kv/k${i}`).set('x-app-token', token).send({ i })
            .expect(200);
        }
        for (let i = 0; i < 4; i++) await app.mockContext().service.changes.recordEvent([ device.id ], `e${i}`, { i }, new Date());
        await app.mockContext().service.changes.trim(device.id, 5, true);
        const rows = await logRows(device.id);
        assert.deepStrictEqual(rows.map(r => (r.type === 'kv-key-changed' ? r.revision : r.type)), [ 3, 4, 5, 'e2', 'e3' ]);
        // Unknown latest revision: changes are left alone.
        await app.mockContext().service.changes.trim(device.id, null, false);
        assert.strictEqual((await logRows(device.id)).length, 5);
      } finally {
        [ s.changesRetention, s.eventHistoryMax ] = saved;
      }
    });

    it('never past retention of the device\'s committed revision: a higher touched revision (an earlier device with the same id) keeps the newest changes', async () => {
      // Ids restart when the tables are emptied (and SQLite reuses a deleted highest id): the
      // trimmer may still hold the revision an earlier device with this id reached.
      const s = app.config.classworks as { changesRetention: number };
      const saved = s.changesRetention;
      s.changesRetention = 3;
      try {
        for (let i = 0; i < 5; i++) {
          await app.httpRequest().post(`/kv/k${i}`).set('x-app-token', token).send({ i })
            .expect(200);
        }
        await app.mockContext().service.changes.trim(device.id, 340, false);
        assert.deepStrictEqual((await logRows(device.id)).map(r => r.revision), [ 3, 4, 5 ]);
        const res = await app.httpRequest().get('/kv/_changes?since=2').set('x-app-token', token).expect(200);
        assert.deepStrictEqual(res.body.changes.map((c: KvChange) => c.revision), [ 3, 4, 5 ]);
        // Through the background trimmer: the stale touch and this device's own one merge (the highest wins).
        app.logTrimmer.touch(device.id, 340);
        await app.httpRequest().post('/kv/k5').set('x-app-token', token).send({ i: 5 })
          .expect(200);
        await app.logTrimmer.runOnce();
        assert.deepStrictEqual((await logRows(device.id)).map(r => r.revision), [ 4, 5, 6 ]);
      } finally {
        s.changesRetention = saved;
      }
    });
  });

  describe('eventSeq()', () => {
    it('is strictly increasing within a process, also within one millisecond and past 1000 a millisecond', () => {
      const now = Date.now() + 10000;
      const seqs = Array.from({ length: 2500 }, () => eventSeq(now));
      for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], `seq ${i}`);
      assert.ok(Number.isSafeInteger(seqs[seqs.length - 1]));
    });
  });

  describe('LogTrimmer', () => {
    it('trims each touched device once per round with its highest revision, and whether events were recorded', async () => {
      const calls: Array<[number, number | null, boolean]> = [];
      const trimmer = new LogTrimmer(async (id, rev, ev) => {
        calls.push([ id, rev, ev ]);
      }, () => undefined);
      trimmer.touch(1, 5);
      trimmer.touch(1, 7);
      trimmer.touch(1, 6);
      trimmer.touch(2, null);
      trimmer.touch(3, 2);
      trimmer.touch(3, null);
      await trimmer.runOnce();
      assert.deepStrictEqual(calls, [[ 1, 7, false ], [ 2, null, true ], [ 3, 2, true ]]);
      await trimmer.runOnce();
      assert.strictEqual(calls.length, 3);
    });

    it('runOnce() while a round runs: waits for it, then trims what was touched meanwhile before it resolves', async () => {
      const calls: number[] = [];
      let release!: () => void;
      const blocked = new Promise<void>(resolve => { release = resolve; });
      const trimmer = new LogTrimmer(async id => {
        if (id === 1) await blocked;
        calls.push(id);
      }, () => undefined);
      trimmer.touch(1, 5);
      const first = trimmer.runOnce();
      trimmer.touch(2, 5);
      const second = trimmer.runOnce();
      setImmediate(release);
      await second;
      assert.deepStrictEqual(calls, [ 1, 2 ]);
      await first;
    });

    it('a failing device does not stop the round; the error is reported', async () => {
      const errors: string[] = [];
      const done: number[] = [];
      const trimmer = new LogTrimmer(async id => {
        if (id === 1) throw new Error('db down');
        done.push(id);
      }, err => errors.push(err.message));
      trimmer.touch(1, 1);
      trimmer.touch(2, 1);
      await trimmer.runOnce();
      assert.deepStrictEqual([ errors, done ], [[ 'db down' ], [ 2 ]]);
    });
  });
});
