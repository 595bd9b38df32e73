import assert from 'node:assert';
import { ChangeFeeds, FeedSocket } from '../../../app/lib/changeFeed';
import type { KvChange } from '../../../app/lib/kvEvents';

const tick = () => new Promise(resolve => setImmediate(resolve));

function change(uuid: string, revision: number): KvChange {
  return { uuid, key: `k${revision}`, action: 'upsert', created: true, updatedAt: new Date(0).toISOString(), revision };
}

/** ChangeFeeds with recording dependencies: every device is at revision 10 * its id. */
function feeds(opts: { pollChunk?: number } = {}) {
  const latestCalls: number[][] = [];
  const room: Array<{ uuid: string; revision: number }> = [];
  const f = new ChangeFeeds({
    read: async () => ({ changes: [], revision: 0, more: false }),
    latest: async ids => {
      latestCalls.push([ ...ids ]);
      return new Map(ids.map(id => [ id, 10 * id ]));
    },
    emitRoom: (uuid, c) => room.push({ uuid, revision: c.revision }),
    emitTo: () => undefined,
    emitRoomEvent: () => undefined,
    warn: () => undefined,
  }, { gapMs: 1000, pollMs: 60000, pageSize: 100, pollChunk: opts.pollChunk ?? 500 });
  return { f, latestCalls, room };
}

const socket = (id: string): FeedSocket => ({ id, connected: true });

/** app/lib/changeFeed.ts: where the feeds of a burst of joins start. */
describe('test/app/lib/changeFeed.test.ts', () => {
  it('the feeds begun in one turn (joins to three devices) read their starting revisions in one query, and each delivers from its own', async () => {
    const { f, latestCalls, room } = feeds();
    for (const id of [ 1, 2, 3 ]) {
      f.join(socket(`s${id}`), { deviceId: id, uuid: `d${id}` }, undefined);
      f.join(socket(`t${id}`), { deviceId: id, uuid: `d${id}` }, undefined);
    }
    await tick();
    await tick();
    assert.deepStrictEqual(latestCalls, [[ 1, 2, 3 ]]);
    for (const id of [ 1, 2, 3 ]) for (const s of [ 's', 't' ]) f.release(`${s}${id}`, `d${id}`);
    // Each feed starts at its device's revision: the next one is delivered at once, an older one is a duplicate.
    f.receive(change('d1', 10));
    f.receive(change('d1', 11));
    f.receive(change('d2', 21));
    f.receive(change('d3', 31));
    assert.deepStrictEqual(room, [{ uuid: 'd1', revision: 11 }, { uuid: 'd2', revision: 21 }, { uuid: 'd3', revision: 31 }]);
    f.close();
  });

  it('more feeds begun in one turn than pollChunk: one query per chunk', async () => {
    const { f, latestCalls } = feeds({ pollChunk: 2 });
    for (const id of [ 1, 2, 3, 4, 5 ]) f.join(socket(`s${id}`), { deviceId: id, uuid: `d${id}` }, undefined);
    await tick();
    await tick();
    assert.deepStrictEqual(latestCalls, [[ 1, 2 ], [ 3, 4 ], [ 5 ]]);
    f.close();
  });
});
