import assert from 'node:assert';
import { app, mm } from 'egg-mock/bootstrap';
import type { KvChange } from '../../../app/lib/kvEvents';
import { deviceWithToken } from '../../support/factories';

/**
 * The way out of a committed change (app/lib/realtime.ts broadcastChange): the copy for the
 * other workers and instances (the adapter's serverSideEmit, one PUBLISH) leaves before this
 * worker writes the change to its own sockets, so that they are not held behind it.
 */
describe('test/app/io/broadcast.test.ts', () => {
  afterEach(() => mm.restore());

  it('POST /kv/:key: the change is published to the other workers first, then given to this worker\'s feed', async function() {
    if (!app.settings.redisUrl) return this.skip(); // one process: no other worker to publish to
    const { token } = await deviceWithToken();
    const order: string[] = [];
    const nsp = app.io.of('/');
    const serverSideEmit = nsp.serverSideEmit.bind(nsp);
    mm(nsp, 'serverSideEmit', (event: string, ...args: unknown[]) => {
      if (event === 'ckv:kv-change') order.push(`publish ${(args[0] as KvChange).key}`);
      return serverSideEmit(event, ...args);
    });
    const feeds = app.realtime.feeds;
    const receive = feeds.receive.bind(feeds);
    mm(feeds, 'receive', (change: KvChange) => {
      order.push(`local ${change.key}`);
      return receive(change);
    });
    await app.httpRequest().post('/kv/first').set('x-app-token', token).send({ v: 1 }).expect(200);
    assert.deepStrictEqual(order, [ 'publish first', 'local first' ]);
  });
});
