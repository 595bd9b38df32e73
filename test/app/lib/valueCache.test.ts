import assert from 'node:assert';
import { ValueCache, RevisionStore, DISTRUST_MS, RETRY_MS } from '../../../app/lib/valueCache';

/** The revision store of the embedded default, with call counts and a switch to fail. */
class FakeStore implements RevisionStore {
  readonly known = new Map<number, number>();
  readonly distrusted = new Map<number, number>();
  lookups: number[][] = [];
  raises: Array<Array<{ deviceId: number; revision: number }>> = [];
  down = false;
  gate?: Promise<void>;

  async kvRevisions(ids: number[]) {
    this.lookups.push(ids);
    if (this.down) throw new Error('redis away');
    return ids.map(d => ((this.distrusted.get(d) ?? 0) > Date.now() ? null : this.known.get(d) ?? null));
  }

  async kvRevisionsRaise(changes: Array<{ deviceId: number; revision: number }>) {
    this.raises.push(changes);
    if (this.gate) await this.gate;
    if (this.down) throw new Error('redis away');
    if (this.refusingWrites) throw new Error('OOM command not allowed when used memory > \'maxmemory\'.');
    for (const c of changes) if (c.revision > (this.known.get(c.deviceId) ?? -1)) this.known.set(c.deviceId, c.revision);
  }

  async kvRevisionsDistrust(ids: number[], forMs: number) {
    if (this.down) throw new Error('redis away');
    if (this.refusingWrites) throw new Error('OOM command not allowed when used memory > \'maxmemory\'.');
    for (const d of ids) this.distrusted.set(d, Date.now() + forMs);
  }

  /** Redis at maxmemory with noeviction: raises refused, DEL and PUBLISH still work. */
  refusingWrites = false;
  /** The value caches of every worker on this store (the kv-dropped message reaches them all). */
  readonly workers: ValueCache[] = [];

  forgets = 0;

  /** Forget calls to refuse first (a command connection being reset). */
  forgetFailures = 0;

  async kvRevisionsForget(ids: number[]) {
    this.forgets += 1;
    if (this.down) throw new Error('redis away');
    if (this.forgetFailures > 0) {
      this.forgetFailures -= 1;
      throw new Error('Connection is closed.');
    }
    for (const d of ids) this.known.delete(d);
    for (const w of this.workers) w.drop(ids);
  }
}

describe('test/app/lib/valueCache.test.ts', () => {
  let store: FakeStore;
  let errors: string[];
  let cache: ValueCache;
  /** What the database holds: deviceId → key → value, and each device's revision. */
  let db: Map<string, string>;
  let revision: Map<number, number>;
  let reads: number;

  const read = (deviceId: number, key: string) => async () => {
    reads++;
    const value = db.get(`${deviceId}/${key}`);
    return value === undefined ? null : { value, revision: revision.get(deviceId) ?? 0 };
  };
  const get = (deviceId: number, key: string) => cache.get(deviceId, key, read(deviceId, key));
  /** A committed write, recorded as KvService records it. */
  async function write(deviceId: number, key: string, value: string) {
    revision.set(deviceId, (revision.get(deviceId) ?? 0) + 1);
    db.set(`${deviceId}/${key}`, value);
    await cache.committed(deviceId, revision.get(deviceId)!);
  }

  beforeEach(() => {
    store = new FakeStore();
    errors = [];
    cache = new ValueCache(1024 * 1024, store, (what, err) => errors.push(`${what}: ${err.message}`));
    store.workers.push(cache);
    db = new Map();
    revision = new Map();
    reads = 0;
  });

  it('serves the cached value while its device revision is the known one; a write moves it and the next read goes to the database', async () => {
    await write(1, 'a', '"a1"');
    assert.strictEqual(await get(1, 'a'), '"a1"');
    assert.strictEqual(await get(1, 'a'), '"a1"');
    assert.strictEqual(reads, 1);
    await write(1, 'a', '"a2"');
    assert.strictEqual(await get(1, 'a'), '"a2"');
    assert.strictEqual(reads, 2);
    // Another key of the same device changed: this one is read again (per-device revisions).
    await write(1, 'b', '"b1"');
    assert.strictEqual(await get(1, 'a'), '"a2"');
    assert.strictEqual(reads, 3);
    assert.strictEqual(await get(1, 'a'), '"a2"');
    assert.strictEqual(reads, 3);
  });

  it('a value changed behind its back is served until the device revision moves (the cache is really used)', async () => {
    await write(2, 'k', '1');
    await get(2, 'k');
    db.set('2/k', '"behind"');
    assert.strictEqual(await get(2, 'k'), '1');
    revision.set(2, 2);
    await store.kvRevisionsRaise([{ deviceId: 2, revision: 2 }]);
    assert.strictEqual(await get(2, 'k'), '"behind"');
  });

  it('a read that raced a write (old value, old revision) is stored under the old revision and never served after the write', async () => {
    await write(3, 'k', '"old"');
    // The read sees the database before the write commits...
    const slowRead = cache.get(3, 'k', async () => {
      const row = { value: db.get('3/k')!, revision: revision.get(3)! };
      await write(3, 'k', '"new"'); // ...and the write commits and is recorded before the read returns.
      return row;
    });
    assert.strictEqual(await slowRead, '"old"');
    assert.strictEqual(await get(3, 'k'), '"new"');
  });

  it('with no revision known (Redis restarted empty), reads go to the database and put the revision back', async () => {
    db.set('4/k', '"v"');
    revision.set(4, 7);
    assert.strictEqual(await get(4, 'k'), '"v"');
    await new Promise(resolve => setImmediate(resolve));
    assert.strictEqual(store.known.get(4), 7);
    assert.strictEqual(await get(4, 'k'), '"v"');
    assert.strictEqual(reads, 1);
  });

  it('a missing key is not cached, and drops what was cached for it', async () => {
    await write(5, 'k', '1');
    await get(5, 'k');
    db.delete('5/k');
    revision.set(5, 2);
    await cache.committed(5, 2);
    assert.strictEqual(await get(5, 'k'), null);
    assert.strictEqual(await get(5, 'k'), null);
    assert.strictEqual(reads, 3);
    assert.strictEqual(cache.size, 0);
  });

  it('shared state unreachable: every read goes to the database (nothing served from the cache), one warning per failure', async () => {
    await write(6, 'k', '1');
    await get(6, 'k');
    store.down = true;
    db.set('6/k', '2');
    assert.strictEqual(await get(6, 'k'), '2');
    assert.strictEqual(await get(6, 'k'), '2');
    assert.strictEqual(reads, 3);
    assert.strictEqual(errors.filter(e => e === 'cannot read revisions, reading the database: redis away').length, 2, errors.join('\n'));
    errors.length = 0;
    await cache.committed(6, 9); // resolves although the store failed
    assert.deepStrictEqual(errors, [
      'cannot record a write\'s revision: redis away',
      'cannot make a device\'s revision unknown after a failed raise: redis away',
    ]);
  });

  it('suspended (the shared-state bus dropped): every read goes to the database, nothing is cached or looked up; resume() starts from empty', async () => {
    await write(1, 'a', '"a1"');
    assert.strictEqual(await get(1, 'a'), '"a1"');
    assert.strictEqual(cache.size, 1);
    cache.suspend();
    assert.strictEqual(cache.size, 0);
    const lookups = store.lookups.length;
    assert.strictEqual(await get(1, 'a'), '"a1"');
    assert.strictEqual(await get(1, 'a'), '"a1"');
    assert.deepStrictEqual([ reads, store.lookups.length, cache.size ], [ 3, lookups, 0 ]);
    cache.resume();
    assert.strictEqual(await get(1, 'a'), '"a1"');
    assert.strictEqual(await get(1, 'a'), '"a1"');
    assert.deepStrictEqual([ reads, cache.size ], [ 4, 1 ]);
  });

  it('a raise shared state did not take drops this worker\'s values and is retried until it lands; writers do not wait for the retry', async () => {
    await write(1, 'a', '"a1"');
    assert.strictEqual(await get(1, 'a'), '"a1"');
    store.down = true;
    const attempts = store.raises.length;
    await write(1, 'a', '"a2"');
    assert.strictEqual(store.raises.length, attempts + 1, 'the writer was answered after one attempt, before any retry');
    assert.strictEqual(cache.size, 0);
    assert.strictEqual(store.known.get(1), 1, 'the store missed revision 2');
    store.down = false;
    await new Promise(resolve => setTimeout(resolve, RETRY_MS + 200));
    assert.strictEqual(store.known.get(1), 2);
    assert.strictEqual(await get(1, 'a'), '"a2"');
  });

  it('a raise refused (Redis at maxmemory): before the writer is answered every worker drops the device, so no worker serves the value the write replaced', async () => {
    const other = new ValueCache(1024 * 1024, store, () => undefined);
    store.workers.push(other);
    const getOther = (key: string) => other.get(1, key, read(1, key));
    try {
      await write(1, 'a', '"a1"');
      await write(1, 'b', '"b1"');
      assert.strictEqual(await getOther('a'), '"a1"');
      assert.strictEqual(await getOther('b'), '"b1"');
      assert.strictEqual(await get(1, 'a'), '"a1"');
      store.refusingWrites = true;
      await write(1, 'a', '"a2"'); // answered once this resolves
      assert.deepStrictEqual([ other.size, store.known.has(1) ], [ 0, false ]);
      assert.strictEqual(await getOther('a'), '"a2"');
      assert.strictEqual(await get(1, 'a'), '"a2"');
      assert.ok(errors.includes('cannot record a write\'s revision: OOM command not allowed when used memory > \'maxmemory\'.'), errors.join('\n'));
      // A reader putting back a revision nobody knew makes nothing unknown when refused.
      const forgets = store.forgets;
      assert.strictEqual(await getOther('b'), '"b1"');
      await new Promise(resolve => setImmediate(resolve));
      assert.strictEqual(store.forgets, forgets);
      store.refusingWrites = false;
      await new Promise(resolve => setTimeout(resolve, RETRY_MS + 200));
      assert.strictEqual(store.known.get(1), 3, 'the refused raise was retried');
    } finally {
      other.close();
    }
  });

  it('a refused raise whose first forget also fails (the command connection was being reset): the forget is tried again before the writer is answered', async () => {
    const other = new ValueCache(1024 * 1024, store, () => undefined);
    store.workers.push(other);
    await write(1, 'a', '"a1"');
    assert.strictEqual(await other.get(1, 'a', read(1, 'a')), '"a1"');
    store.refusingWrites = true;
    store.forgetFailures = 2;
    await write(1, 'a', '"a2"');
    assert.deepStrictEqual([ store.forgets, other.size, store.known.has(1) ], [ 3, 0, false ]);
    assert.strictEqual(await other.get(1, 'a', read(1, 'a')), '"a2"');
    other.close();
  });

  it('unsure() whose mark is refused (Redis at maxmemory): the device is dropped on every worker instead', async () => {
    const other = new ValueCache(1024 * 1024, store, () => undefined);
    store.workers.push(other);
    await write(1, 'a', '"a1"');
    assert.strictEqual(await other.get(1, 'a', read(1, 'a')), '"a1"');
    assert.strictEqual(other.size, 1);
    store.refusingWrites = true;
    await cache.unsure(1);
    assert.deepStrictEqual([ other.size, store.known.has(1), store.forgets ], [ 0, false, 1 ]);
  });

  it('epoch: a database read that started before a suspend(), resume() or drop() is served but not cached', async () => {
    await write(1, 'a', '"a1"');
    for (const between of [ () => { cache.suspend(); cache.resume(); }, () => cache.drop([ 1 ]) ]) {
      let release!: () => void;
      const gate = new Promise<void>(resolve => { release = resolve; });
      const slow = cache.get(1, 'a', async () => {
        await gate;
        return read(1, 'a')();
      });
      await new Promise(resolve => setTimeout(resolve, 20)); // the lookup is done, the read is running
      between();
      release();
      assert.strictEqual(await slow, '"a1"');
      assert.strictEqual(cache.size, 0, 'the read of the older epoch was not cached');
      const before = reads;
      assert.strictEqual(await get(1, 'a'), '"a1"');
      assert.strictEqual(reads, before + 1);
      cache.clear();
    }
  });

  it(`unsure(): after a write with no clear outcome, the device's cached values are not served for ${DISTRUST_MS / 60000} min, whatever is raised meanwhile`, async () => {
    await write(7, 'k', '1');
    await get(7, 'k');
    await cache.unsure(7);
    db.set('7/k', '"late commit"');
    assert.strictEqual(await get(7, 'k'), '"late commit"');
    await cache.committed(7, 1);
    assert.strictEqual(await get(7, 'k'), '"late commit"');
    assert.strictEqual(reads, 3);
    assert.ok(Math.abs(store.distrusted.get(7)! - (Date.now() + DISTRUST_MS)) < 5000);
  });

  it('the revision lookups of one event-loop turn are one store call; so are the raises, and committed() resolves after the store answered', async () => {
    await write(8, 'a', '1');
    await write(9, 'a', '2');
    store.lookups = [];
    await Promise.all([ get(8, 'a'), get(9, 'a'), get(8, 'a') ]);
    assert.deepStrictEqual(store.lookups, [[ 8, 9 ]]);

    let release!: () => void;
    store.gate = new Promise(resolve => { release = resolve; });
    store.raises = [];
    let done = 0;
    const p = [ cache.committed(8, 5).then(() => done++), cache.committed(9, 6).then(() => done++), cache.committed(8, 4).then(() => done++) ];
    await new Promise(resolve => setImmediate(resolve));
    await new Promise(resolve => setImmediate(resolve));
    assert.deepStrictEqual(store.raises, [[{ deviceId: 8, revision: 5 }, { deviceId: 9, revision: 6 }]]);
    assert.strictEqual(done, 0);
    release();
    await Promise.all(p);
    assert.strictEqual(done, 3);
  });

  it('stays within its byte bound, least recently used out; skips values over 1/64 of it; VALUE_CACHE_BYTES=0 reads every time', async () => {
    cache = new ValueCache(64 * 1024, store, () => undefined);
    const value = 'v'.repeat(400); // ~1 KiB per entry with overhead
    await write(10, 'k0', value);
    for (let i = 1; i < 200; i++) db.set(`10/k${i}`, value);
    for (let i = 0; i < 200; i++) {
      await get(10, `k${i}`);
      await get(10, 'k0'); // keeps k0 recently used
    }
    assert.ok(cache.size < 200 && cache.size > 40, `size ${cache.size}`);
    const before = reads;
    await get(10, 'k0');
    await get(10, 'k199');
    assert.strictEqual(reads, before, 'k0 and k199 cached');
    await get(10, 'k1');
    assert.strictEqual(reads, before + 1, 'k1 evicted');
    db.set('10/big', 'b'.repeat(1024));
    await get(10, 'big');
    await get(10, 'big');
    assert.strictEqual(reads, before + 3, 'big values are not kept');

    const off = new ValueCache(0, store, () => undefined);
    assert.strictEqual(off.enabled, false);
    reads = 0;
    await off.get(10, 'k0', read(10, 'k0'));
    await off.get(10, 'k0', read(10, 'k0'));
    assert.strictEqual(reads, 2);
  });
});
