import assert from 'node:assert';
import { Cluster, World, deviceWithToken, installToken, request, sleep } from './support';

const A2 = '127.0.0.2';
const A3 = '127.0.0.3';

describe('test/fault/security.test.ts', () => {
  const world = new World('fault_security', {
    RATE_LIMIT_KV_READ: '5',
    RATE_LIMIT_PASSWORD: '3',
    // Device and token setup must not run into the per-IP quota.
    RATE_LIMIT_IP: '0',
    // So that one client address can reach both workers (X-Forwarded-For), see the password test.
    TRUST_PROXY: 'true',
  });
  let c: Cluster;
  let a: { uuid: string; token: string };
  let b: { uuid: string; token: string };
  /** A fresh token of device A or B: each has its own read quota of 5. */
  const fresh = async (d: { uuid: string }, password?: string) => (await installToken(c, d.uuid, { password })).token;
  const notFoundKey = (key: string) => ({ success: false, message: `未找到键名为 '${key}' 的记录`, details: null });

  before(async () => {
    await world.start();
    c = world.cluster;
    assert.notStrictEqual(await c.workerFor(A2), await c.workerFor(A3), 'the two source addresses must reach different workers');
    a = await deviceWithToken(c, 'dev-a');
    b = await deviceWithToken(c, 'dev-b', { password: 'b-secret' });
    const wb = await request(c, 'POST', '/kv/secret', { body: { b: 1 }, headers: { 'x-app-token': b.token }, localAddress: A3 });
    assert.strictEqual(wb.status, 200, wb.text);
    const wa = await request(c, 'POST', '/kv/mine', { body: { a: 1 }, headers: { 'x-app-token': a.token }, localAddress: A2 });
    assert.strictEqual(wa.status, 200, wa.text);
  });

  after(async () => {
    await world.stop();
  });

  describe('device isolation', () => {
    it('200/404: a token of device A reads only A, whatever uuid the request names, on both workers', async () => {
      for (const localAddress of [ A2, A3 ]) {
        const attempts: Array<{ path: string; headers?: Record<string, string> }> = [
          { path: '/kv/secret' },
          { path: '/kv/secret', headers: { 'x-device-uuid': b.uuid } },
          { path: `/kv/secret?uuid=${b.uuid}&deviceId=2` },
          { path: `/kv/secret?token=${b.token}` }, // the header wins: still A
          { path: '/kv/secret/metadata' },
        ];
        for (const at of attempts) {
          const res = await request(c, 'GET', at.path, { headers: { 'x-app-token': await fresh(a), ...at.headers }, localAddress });
          assert.deepStrictEqual([ res.status, res.json ], [ 404, notFoundKey('secret') ], at.path);
        }
        const info = await request(c, 'GET', '/kv/_info', { headers: { 'x-app-token': await fresh(a), 'x-device-uuid': b.uuid }, localAddress });
        assert.strictEqual(info.json.device.uuid, a.uuid);
      }
    });

    it('200: listing with a token of device A shows A\'s keys only', async () => {
      const list = await request(c, 'GET', '/kv', { headers: { 'x-app-token': await fresh(a) } });
      assert.deepStrictEqual(list.json.items.map((i: { key: string }) => i.key), [ 'mine' ]);
      const keys = await request(c, 'GET', `/kv/_keys?uuid=${b.uuid}`, { headers: { 'x-app-token': await fresh(a) } });
      assert.deepStrictEqual([ keys.json.keys, keys.json.total_rows ], [[ 'mine' ], 1 ]);
    });

    it('401/400: device B\'s tokens are not listed to A\'s token or without B\'s password', async () => {
      for (const localAddress of [ A2, A3 ]) {
        for (const p of [ `/apps/devices/${b.uuid}/apps`, `/apps/tokens?uuid=${b.uuid}` ]) {
          const res = await request(c, 'GET', p, { headers: { 'x-app-token': a.token }, localAddress });
          assert.deepStrictEqual([ res.status, res.json ], [ 401, { success: false, message: '需要提供密码或JWT token', details: null }], p);
        }
        const mixed = await request(c, 'GET', `/apps/tokens?uuid=${a.uuid}`, { headers: { 'x-device-uuid': b.uuid }, localAddress });
        assert.strictEqual(mixed.status, 400);
        assert.strictEqual(mixed.json.message, '设备UUID不匹配');
      }
    });

    it('200/404: writes, deletes and batch imports with a token of A never touch B', async () => {
      const del = await request(c, 'DELETE', '/kv/secret', { headers: { 'x-app-token': a.token, 'x-device-uuid': b.uuid } });
      assert.deepStrictEqual([ del.status, del.json ], [ 404, notFoundKey('secret') ]);
      const up = await request(c, 'POST', `/kv/secret?uuid=${b.uuid}`, { body: { hacked: true, uuid: b.uuid }, headers: { 'x-app-token': a.token }, localAddress: A3 });
      assert.deepStrictEqual([ up.status, up.json.deviceId, up.json.created ], [ 200, (await request(c, 'GET', '/kv/_info', { headers: { 'x-app-token': await fresh(a) } })).json.device.id, true ]);
      const batch = await request(c, 'POST', '/kv/_batchimport', { body: { secret: { hacked: 2 }, other: {} }, headers: { 'x-app-token': a.token }, localAddress: A2 });
      assert.strictEqual(batch.status, 200, batch.text);
      const tb = await fresh(b, 'b-secret');
      const still = await request(c, 'GET', '/kv/secret', { headers: { 'x-app-token': tb } });
      assert.deepStrictEqual([ still.status, still.json ], [ 200, { b: 1 }]);
      const bKeys = await request(c, 'GET', '/kv/_keys', { headers: { 'x-app-token': tb } });
      assert.deepStrictEqual(bKeys.json.keys, [ 'secret' ]);
    });

    it('a socket joined with a token of A never receives B\'s changes, on either worker', async () => {
      const sockets = [ await world.joined({ token: a.token, localAddress: A2 }), await world.joined({ token: a.token, localAddress: A3 }) ];
      for (const s of sockets) {
        // Naming B in the payload changes nothing: the token decides.
        assert.deepStrictEqual(await s.request('join-token', { token: a.token, uuid: b.uuid }), { ok: true, uuid: a.uuid });
      }
      for (const via of [ A2, A3 ]) {
        const w = await request(c, 'POST', '/kv/b-only', { body: { via }, headers: { 'x-app-token': b.token }, localAddress: via });
        assert.strictEqual(w.status, 200, w.text);
      }
      const marker = await request(c, 'POST', '/kv/a-marker', { body: {}, headers: { 'x-app-token': a.token }, localAddress: A3 });
      assert.strictEqual(marker.status, 200);
      const uuidB = b.uuid;
      for (const s of sockets) {
        await s.waitFor('kv-key-changed', p => p.key === 'a-marker');
        assert.deepStrictEqual(s.events.filter(e => JSON.stringify(e.args).includes(uuidB)), []);
        s.close();
      }
    });
  });

  describe('[DELETE /apps/devices/:uuid/uninstall/:installId] uninstall()', () => {
    it('204: the token loses HTTP and socket access at once on every worker', async () => {
      const x = await deviceWithToken(c, 'dev-x');
      const keep = await installToken(c, x.uuid);
      // Both workers know (cache) the token and hold a socket joined with it.
      for (const localAddress of [ A2, A3 ]) {
        const res = await request(c, 'GET', '/kv/_info', { headers: { 'x-app-token': x.token }, localAddress });
        assert.strictEqual(res.status, 200, res.text);
      }
      const s2 = await world.joined({ token: x.token, localAddress: A2 });
      const s3 = await world.joined({ token: x.token, localAddress: A3 });
      const control = await world.joined({ token: keep.token, localAddress: A3 });

      const del = await request(c, 'DELETE', `/apps/devices/${x.uuid}/uninstall/${x.installId}`, { localAddress: A2 });
      assert.strictEqual(del.status, 204, del.text);
      const invalid = { success: false, message: '无效的token', details: null };
      for (const localAddress of [ A3, A2 ]) {
        const res = await request(c, 'GET', '/kv/_info', { headers: { 'x-app-token': x.token }, localAddress });
        assert.deepStrictEqual([ res.status, res.json ], [ 401, invalid ], `via ${localAddress}`);
      }
      const write = await request(c, 'POST', '/kv/k', { body: {}, headers: { 'x-app-token': x.token }, localAddress: A3 });
      assert.deepStrictEqual([ write.status, write.json ], [ 401, invalid ]);
      for (const s of [ s2, s3 ]) {
        await s.waitFor('left');
        assert.deepStrictEqual(s.named('left')[0].args, [{ by: 'token', uuid: x.uuid, reason: 'token_revoked' }]);
        assert.deepStrictEqual(await s.request('join-token', { token: x.token }), { ok: false, reason: 'invalid_token' });
      }
      // Changes of the device keep flowing to valid sockets only.
      const after = await request(c, 'POST', '/kv/after-uninstall', { body: {}, headers: { 'x-app-token': keep.token }, localAddress: A2 });
      assert.strictEqual(after.status, 200);
      await control.waitFor('kv-key-changed', p => p.key === 'after-uninstall');
      await sleep(200);
      for (const s of [ s2, s3 ]) assert.deepStrictEqual(s.named('kv-key-changed'), []);
    });
  });

  describe('rate limits', () => {
    it('429: RATE_LIMIT_KV_READ=5 holds across workers (reads spread over both do not raise the quota)', async () => {
      const t = await fresh(a);
      const statuses: number[] = [];
      let refused;
      for (let i = 0; i < 10; i++) {
        const res = await request(c, 'GET', '/kv/mine', { headers: { 'x-app-token': t }, localAddress: i % 2 ? A3 : A2 });
        statuses.push(res.status);
        if (res.status === 429) refused = res;
      }
      assert.deepStrictEqual(statuses, [ 200, 200, 200, 200, 200, 429, 429, 429, 429, 429 ]);
      assert.ok(refused);
      assert.strictEqual(refused.headers['ratelimit-policy'], '5;w=60');
      assert.match(String(refused.headers['retry-after']), /^\d+$/);
      assert.deepStrictEqual(refused.json, {
        success: false, message: '请求过于频繁，请稍后再试', code: 'RATE_LIMITED',
        details: { limit: 5, windowSeconds: 60, retryAfter: Number(refused.headers['retry-after']) },
      });
    });

    it('429: password guessing is throttled per client and device across workers (RATE_LIMIT_PASSWORD=3)', async () => {
      const guesser = { 'x-forwarded-for': '203.0.113.9' };
      const wrong = { success: false, message: '密码错误', details: null };
      for (let i = 0; i < 3; i++) {
        const res = await request(c, 'PUT', `/devices/${b.uuid}/name`, {
          body: { name: 'x' }, headers: { ...guesser, 'x-device-password': `guess-${i}` }, localAddress: i % 2 ? A3 : A2,
        });
        assert.deepStrictEqual([ res.status, res.json ], [ 401, wrong ]);
      }
      // Past the limit even the right password is refused for this client, on both workers.
      for (const localAddress of [ A2, A3 ]) {
        const res = await request(c, 'PUT', `/devices/${b.uuid}/name`, {
          body: { name: 'x' }, headers: { ...guesser, 'x-device-password': 'b-secret' }, localAddress,
        });
        assert.strictEqual(res.status, 429, res.text);
        assert.deepStrictEqual(res.json, {
          success: false, message: '密码尝试次数过多，请稍后再试', code: 'TOO_MANY_ATTEMPTS',
          details: { limit: 3, windowSeconds: 60, retryAfter: Number(res.headers['retry-after']) },
        });
      }
      // Another client is not locked out by the guesser.
      const owner = await request(c, 'PUT', `/devices/${b.uuid}/name`, {
        body: { name: 'B renamed' }, headers: { 'x-forwarded-for': '203.0.113.10', 'x-device-password': 'b-secret' }, localAddress: A3,
      });
      assert.strictEqual(owner.status, 200, owner.text);
    });
  });
});
