import assert from 'node:assert';
import crypto from 'node:crypto';
import { app } from 'egg-mock/bootstrap';
import IORedis from 'ioredis';
import { CommandClient, RedisState } from '../../../app/lib/state/redis';

/**
 * Presence in Redis (app/lib/state/redis.ts): the joins and leaves of one event-loop turn
 * (a burst of sockets joining) reach Redis in one script call, applied in call order, each
 * answered with the room's count right after it.
 */
describe('test/app/lib/presence.test.ts', () => {
  let state: RedisState | undefined;
  let client: IORedis | undefined;
  afterEach(async () => {
    await state?.close();
    client?.disconnect();
    state = undefined;
    client = undefined;
  });

  it('one turn\'s joins and leaves: one script call, counts in call order, the rooms as applied one by one', async function() {
    const s = app.settings;
    if (!s.redisUrl) return this.skip(); // the embedded mode keeps presence in memory
    client = new IORedis(s.redisUrl);
    let calls = 0;
    const evalsha = client.evalsha.bind(client) as (...args: unknown[]) => Promise<unknown>;
    (client as unknown as { evalsha: typeof evalsha }).evalsha = (...args: unknown[]) => {
      calls += 1;
      return evalsha(...args);
    };
    const prefix = `${s.redisPrefix}presence-test-${crypto.randomBytes(4).toString('hex')}:`;
    state = new RedisState(client as unknown as CommandClient, {
      url: s.redisUrl, prefix, heartbeatMs: s.presenceHeartbeatMs, ttlMs: s.presenceTtlMs, logger: app.coreLogger,
    });
    const counts = await Promise.all([
      state.presenceJoin('dev-x', 'a1'),
      state.presenceJoin('dev-x', 'a2'),
      state.presenceJoin('dev-y', 'a3'),
      state.presenceLeave('dev-x', 'a1'),
      state.presenceJoin('dev-y', 'a4'),
      state.presenceLeave('dev-y', 'a4'),
    ]);
    assert.deepStrictEqual(counts, [ 1, 2, 1, 1, 2, 1 ]);
    assert.strictEqual(calls, 1);
    const list = (await state.presenceList()).sort((a, b) => a.uuid.localeCompare(b.uuid));
    assert.deepStrictEqual(list, [{ uuid: 'dev-x', connections: 1 }, { uuid: 'dev-y', connections: 1 }]);
    // The last socket of a device leaving takes the device off the list.
    assert.deepStrictEqual(await Promise.all([ state.presenceLeave('dev-x', 'a2'), state.presenceLeave('dev-y', 'a3') ]), [ 0, 0 ]);
    assert.strictEqual(calls, 2);
    assert.deepStrictEqual(await state.presenceList(), []);
  });
});
