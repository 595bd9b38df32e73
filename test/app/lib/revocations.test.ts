import assert from 'node:assert';
import { app } from 'egg-mock/bootstrap';
import { Revocations, RevocationFeed, hashToken, STALE_POLLS } from '../../../app/lib/revocations';
import type { BusMessage } from '../../../app/lib/state/types';
import { deviceWithToken, installApp } from '../../support/factories';
import { closeAllClients, COMBINATIONS, connectJoined, eventually, startServer, stopServer } from '../../support/socket';

/** Deletes an install behind the server's back: another worker uninstalled it and its broadcast was lost. */
async function deleteBehindItsBack(token: string) {
  await app.model.query('DELETE FROM app_installs WHERE token = ?', { replacements: [ token ] });
}

/** The shared state of this run (Redis or in-process), with switches that make its calls fail. */
class SwitchedFeed implements RevocationFeed {
  failRecord = 0;
  failPublish = 0;
  failRead = false;
  readonly published: BusMessage[] = [];

  async revocationRecord(hash: string, keepMs: number) {
    if (this.failRecord > 0) {
      this.failRecord -= 1;
      throw new Error('record refused');
    }
    await app.sharedState.revocationRecord(hash, keepMs);
  }

  async revocationsSince(cursor: string | null) {
    if (this.failRead) throw new Error('redis away');
    return app.sharedState.revocationsSince(cursor);
  }

  async publish(message: BusMessage) {
    if (this.failPublish > 0) {
      this.failPublish -= 1;
      throw new Error('publish refused');
    }
    this.published.push(message);
  }
}

describe('test/app/lib/revocations.test.ts', () => {
  const info = (token: string) => app.httpRequest().get('/kv/_info').set('x-app-token', token);

  it('the record (both backends): hashes come back oldest first after the cursor; the cursor stays when nothing is new', async () => {
    const first = await app.sharedState.revocationsSince(null);
    await app.sharedState.revocationRecord('h1', 60000);
    await app.sharedState.revocationRecord('h2', 60000);
    const next = await app.sharedState.revocationsSince(first.cursor);
    assert.deepStrictEqual(next.hashes, [ 'h1', 'h2' ]);
    assert.deepStrictEqual(await app.sharedState.revocationsSince(next.cursor), { cursor: next.cursor, hashes: [] });
    await app.sharedState.revocationRecord('h3', 60000);
    assert.deepStrictEqual((await app.sharedState.revocationsSince(next.cursor)).hashes, [ 'h3' ]);
    assert.notStrictEqual(hashToken('a'), hashToken('b'));
    assert.ok(!hashToken('secret-token').includes('secret'));
  });

  it('a revocation whose broadcast never arrived: the record drops the token from this worker\'s token cache at the next read', async () => {
    const { token } = await deviceWithToken();
    await info(token).expect(200);
    assert.ok(app.tokenCache.get(token), 'cached');
    await deleteBehindItsBack(token);
    await info(token).expect(200); // still served from the cache: nothing told this worker yet
    await app.sharedState.revocationRecord(hashToken(token), 60000);
    await app.revocations.poll();
    assert.strictEqual(app.tokenCache.get(token), undefined);
    await info(token).expect(401);
  });

  it('the token cache is bypassed while the record cannot be read (a revocation could be missed)', async () => {
    const feed = new SwitchedFeed();
    const r = new Revocations(feed, {
      pollMs: 100, keepMs: 60000, recheckMs: 0, revoked: () => undefined, recheck: async () => undefined, warn: () => undefined,
    });
    try {
      await r.start();
      assert.strictEqual(r.current, true);
      feed.failRead = true;
      await eventually(() => assert.strictEqual(r.current, false), STALE_POLLS * 100 + 2000);
      feed.failRead = false;
      await eventually(() => assert.strictEqual(r.current, true), 2000);
    } finally {
      r.close();
    }
  });

  it('revoke(): a refused broadcast or record is retried; the answer waits at most for the hold, what is left goes on in the background', async () => {
    const feed = new SwitchedFeed();
    const revoked: string[][] = [];
    const r = new Revocations(feed, {
      pollMs: 60000, keepMs: 60000, recheckMs: 0, revoked: h => revoked.push([ ...h ]), recheck: async () => undefined, warn: () => undefined,
    });
    try {
      await r.start();
      revoked.length = 0; // what earlier tests recorded
      feed.failPublish = 2;
      feed.failRecord = 1;
      await r.revoke('tok-1', 'dev-1');
      assert.deepStrictEqual(feed.published, [{ type: 'token-revoked', token: 'tok-1', uuid: 'dev-1' }]);
      await r.poll();
      assert.deepStrictEqual(revoked, [], 'its own revocation is not dropped twice');
      const other = await app.sharedState.revocationsSince(null);
      assert.ok(other.hashes.includes(hashToken('tok-1')), 'recorded');

      feed.failPublish = 1000;
      await r.revoke('tok-2', 'dev-1'); // resolves (after the hold) although every broadcast failed
      assert.deepStrictEqual(feed.published.length, 1);
      feed.failPublish = 0;
      await eventually(() => assert.deepStrictEqual(feed.published.map(m => (m as { token: string }).token), [ 'tok-1', 'tok-2' ]), 5000);
    } finally {
      r.close();
    }
  });

  for (const combo of COMBINATIONS.slice(0, 1)) {
    describe(`joined sockets (${combo.title})`, () => {
      before(() => startServer());
      afterEach(() => closeAllClients());
      after(() => stopServer());

      it('recheckJoined(): a socket joined with a token uninstalled behind this worker\'s back gets left token_revoked and no more changes', async () => {
        const { device, token } = await deviceWithToken();
        const other = (await installApp(device, { appId: 'other-app' })).token;
        const client = await connectJoined(combo, token, device.uuid, 1);
        await deleteBehindItsBack(token);
        await app.revocations.recheckNow();
        assert.deepStrictEqual(await client.expectNext('left'), { by: 'token', uuid: device.uuid, reason: 'token_revoked' });
        await app.httpRequest().post('/kv/after').set('x-app-token', other).send({ v: 1 }).expect(200);
        // The socket's next event is the answer to a later join, not the write's change.
        assert.deepStrictEqual(await client.request('join-token', { token: other }), { ok: true, uuid: device.uuid });
        assert.strictEqual((await client.expectNext('device-joined')).uuid, device.uuid);
      });

      it('the record also reaches joined sockets (by hash), and a bus resync re-checks them', async () => {
        const { device, token } = await deviceWithToken();
        const second = (await installApp(device, { appId: 'second-app' })).token;
        const a = await connectJoined(combo, token, device.uuid, 1);
        const b = await connectJoined(combo, second, device.uuid, 2);
        await a.expectNext('device-joined');
        await deleteBehindItsBack(token);
        await app.sharedState.revocationRecord(hashToken(token), 60000);
        await app.revocations.poll();
        assert.deepStrictEqual(await a.expectNext('left'), { by: 'token', uuid: device.uuid, reason: 'token_revoked' });
        assert.deepStrictEqual(await b.expectNext('device-left'), { uuid: device.uuid, connections: 1 });

        await deleteBehindItsBack(second);
        const seen: BusMessage[] = [];
        app.sharedState.onMessage(m => seen.push(m));
        // What the Redis state emits once its subscription is live again after a loss.
        (app.sharedState as unknown as { local?: { emit(e: string, m: BusMessage): void } }).local?.emit('message', { type: 'resync' });
        if (app.sharedState.kind === 'memory') await app.sharedState.publish({ type: 'resync' });
        assert.deepStrictEqual(await b.expectNext('left'), { by: 'token', uuid: device.uuid, reason: 'token_revoked' });
        assert.deepStrictEqual(seen, [{ type: 'resync' }]);
      });
    });
  }
});
