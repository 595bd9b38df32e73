import assert from 'node:assert';
import { World, deviceWithToken, eventually, installToken, request, sleep } from './support';

/**
 * Issue 10, items 3 and 4: what a worker serves after an answered uninstall or write
 * when Redis does not take what it is told. Revocation: the broadcast of an uninstall
 * is refused (PUBLISH denied by an ACL), yet every worker refuses the token and the
 * sockets joined with it on the other worker leave the room, within the documented
 * bound (app/lib/revocations.ts). Freshness: Redis at maxmemory with noeviction refuses
 * the raise of a write's revision, yet no worker serves the value a 200 replaced
 * (app/lib/valueCache.ts).
 */
describe('test/fault/consistency.test.ts', () => {
  const POLL_MS = 500;
  const world = new World('fault_consistency', {
    PRESENCE_HEARTBEAT_MS: '500',
    PRESENCE_TTL_MS: '1500',
    REVOCATION_POLL_MS: String(POLL_MS),
    TOKEN_RECHECK_MS: '2000',
  });
  const VIA = [ '127.0.0.2', '127.0.0.3' ];

  before(async () => {
    await world.start();
    assert.notStrictEqual(await world.cluster.workerFor(VIA[0]), await world.cluster.workerFor(VIA[1]));
  });

  after(async () => {
    await world.stop();
  });

  it('uninstall whose broadcast Redis refuses: 204, then every worker refuses the token (HTTP 401) and the socket joined with it ' +
    'on the other worker gets left token_revoked and no more changes, within the bound', async () => {
    const c = world.cluster;
    const dev = await deviceWithToken(c, 'dev-rv');
    const keeper = await installToken(c, 'dev-rv', { appId: 'keeper' });
    const revoked = await world.joined({ token: dev.token, localAddress: VIA[1] });
    const watcher = await world.joined({ token: keeper.token, localAddress: VIA[1] });
    // Both workers hold the token in their cache.
    for (const localAddress of VIA) {
      for (let i = 0; i < 3; i++) {
        const res = await request(c, 'GET', '/kv/_info', { headers: { 'x-app-token': dev.token }, localAddress });
        assert.strictEqual(res.status, 200, res.text);
      }
    }

    assert.strictEqual(await world.redis.command('ACL SETUSER default -publish'), '+OK');
    try {
      const res = await request(c, 'DELETE', `/apps/devices/dev-rv/uninstall/${dev.installId}`, { localAddress: VIA[0] });
      assert.strictEqual(res.status, 204, res.text);
      // Within the bound (a few REVOCATION_POLL_MS; given generously here), by every worker.
      for (const localAddress of VIA) {
        await eventually(async () => {
          const r = await request(c, 'GET', '/kv/_info', { headers: { 'x-app-token': dev.token }, localAddress });
          assert.strictEqual(r.status, 401, `${localAddress}: ${r.text}`);
        }, 10000, 100);
      }
      const left = await revoked.waitFor('left', () => true, { timeoutMs: 10000 });
      assert.deepStrictEqual(left, { by: 'token', uuid: 'dev-rv', reason: 'token_revoked' });
    } finally {
      assert.strictEqual(await world.redis.command('ACL SETUSER default +publish'), '+OK');
    }
    // A change of the device made on that worker reaches the socket that kept a valid token, not the revoked one.
    const from = revoked.events.length;
    const w = await request(c, 'POST', '/kv/after-revocation', { body: { v: 1 }, headers: { 'x-app-token': keeper.token }, localAddress: VIA[1] });
    assert.strictEqual(w.status, 200, w.text);
    await watcher.waitFor('kv-key-changed', p => p.key === 'after-revocation', { timeoutMs: 5000 });
    await sleep(200);
    assert.deepStrictEqual(revoked.events.slice(from).filter(e => e.event === 'kv-key-changed'), []);
    assert.strictEqual(revoked.connected, true);
  });

  it('Redis at maxmemory with noeviction (raises refused): a value answered 200 is what every worker serves next, never the one it replaced', async () => {
    const c = world.cluster;
    const dev = await deviceWithToken(c, 'dev-oom');
    const auth = { 'x-app-token': dev.token };
    const put = async (v: number, localAddress: string) => {
      const res = await request(c, 'POST', '/kv/hot', { body: { v }, headers: auth, localAddress });
      assert.strictEqual(res.status, 200, res.text);
    };
    const read = async (localAddress: string) => {
      const res = await request(c, 'GET', '/kv/hot', { headers: auth, localAddress });
      assert.strictEqual(res.status, 200, res.text);
      return (res.json as { v: number }).v;
    };
    await put(1, VIA[0]);
    // Both workers cache v1, tagged with the revision Redis holds.
    for (const localAddress of VIA) for (let i = 0; i < 3; i++) assert.strictEqual(await read(localAddress), 1);

    assert.strictEqual(await world.redis.command('CONFIG SET maxmemory-policy noeviction'), '+OK');
    assert.strictEqual(await world.redis.command('CONFIG SET maxmemory 1'), '+OK');
    const seen: string[] = [];
    try {
      // Redis refuses writes now (a SET answers OOM).
      assert.match(await world.redis.command('SET probe 1'), /^-OOM/);
      for (let v = 2; v <= 7; v++) {
        await put(v, VIA[v % 2]);
        for (let i = 0; i < 3; i++) for (const localAddress of VIA) seen.push(`v${v} via ${localAddress}: ${await read(localAddress)}`);
      }
    } finally {
      assert.strictEqual(await world.redis.command('CONFIG SET maxmemory 0'), '+OK');
    }
    assert.deepStrictEqual(seen.filter(s => !s.startsWith(`v${s.split(': ')[1]} `)), []);
    // Redis takes writes again: the refused raises land and caching resumes, still fresh.
    await sleep(1500);
    await put(8, VIA[1]);
    for (const localAddress of VIA) for (let i = 0; i < 3; i++) assert.strictEqual(await read(localAddress), 8);
  });
});
