import assert from 'node:assert';
import http from 'node:http';
import { app } from 'egg-mock/bootstrap';
import { createDevice, deviceWithToken, installApp } from '../../support/factories';
import { closeAllClients, COMBINATIONS, connectJoined, startServer, stopServer } from '../../support/socket';

const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const BATCH_MESSAGE = '请提供有效的JSON数据，格式为 {"key":{}, "key2":{}}';
const KEY_MESSAGE = '键名无效：需要 1 到 191 个字符的字符串';
const INVALID_BATCH_KEYS = '批量导入包含无效的键名（需要 1 到 191 个字符，不能包含 NUL，不能是保留名称），未写入任何数据';
const SORT_BY_ERROR = { success: false, message: 'sortBy 只能是 key、createdAt 或 updatedAt', details: { field: 'sortBy', allowed: [ 'key', 'createdAt', 'updatedAt' ] } };
const SORT_DIR_ERROR = { success: false, message: 'sortDir 只能是 asc 或 desc', details: { field: 'sortDir', allowed: [ 'asc', 'desc' ] } };
const limitError = (value: string) => ({ success: false, message: 'limit 必须是 0 到 1000 之间的整数', details: { field: 'limit', value } });
const skipError = (value: string) => ({ success: false, message: 'skip 必须是 0 到 2147483647 之间的整数', details: { field: 'skip', value } });
const notFoundBody = (key: string) => ({ success: false, message: `未找到键名为 '${key}' 的记录`, details: null });

const enc = encodeURIComponent;

function put(token: string, key: string, value: unknown) {
  return app.httpRequest().post(`/kv/${enc(key)}`).set('x-app-token', token).send(value as object);
}

async function keysOf(token: string): Promise<string[]> {
  const res = await app.httpRequest().get('/kv/_keys').set('x-app-token', token).expect(200);
  return res.body.keys;
}

/** An ISO time as the dialect stores DATE(3) text (MySQL session time zone is +00:00). */
function dbTime(iso: string): string {
  const t = iso.replace('T', ' ').replace('Z', '');
  return app.model.getDialect() === 'sqlite' ? `${t} +00:00` : t;
}

/** Sets a row's timestamps directly, so sorting by them is deterministic. */
async function setTimes(deviceId: number, key: string, createdAt: string, updatedAt: string) {
  await app.model.query('UPDATE kv_entries SET createdAt = ?, updatedAt = ? WHERE deviceId = ? AND `key` = ?', {
    replacements: [ dbTime(createdAt), dbTime(updatedAt), deviceId, key ],
  });
}

describe('test/app/controller/kv.test.ts', () => {
  describe('KV token authentication (kvAuth)', () => {
    it('401 需要提供有效的token without any token, on every /kv route', async () => {
      const body = { success: false, message: '需要提供有效的token', details: null };
      const requests = [
        () => app.httpRequest().get('/kv/_info'),
        () => app.httpRequest().get('/kv/_keys'),
        () => app.httpRequest().get('/kv'),
        () => app.httpRequest().get('/kv/k'),
        () => app.httpRequest().get('/kv/k/metadata'),
        () => app.httpRequest().post('/kv/k').send({ a: 1 }),
        () => app.httpRequest().post('/kv/_batchimport').send({ a: 1 }),
        () => app.httpRequest().delete('/kv/k'),
      ];
      for (const r of requests) {
        const res = await r().expect(401);
        assert.deepStrictEqual(res.body, body);
      }
    });

    it('401 需要提供有效的token for empty token values and a non-Bearer Authorization', async () => {
      const body = { success: false, message: '需要提供有效的token', details: null };
      for (const r of [
        () => app.httpRequest().get('/kv/_info').set('x-app-token', ''),
        () => app.httpRequest().get('/kv/_info?token=&apptoken='),
        () => app.httpRequest().get('/kv/_info').set('authorization', 'Basic dXNlcjpwYXNz'),
        () => app.httpRequest().get('/kv/_info').set('authorization', 'Bearer '),
      ]) {
        assert.deepStrictEqual((await r().expect(401)).body, body);
      }
    });

    it('401 无效的token for an unknown token from every source', async () => {
      const body = { success: false, message: '无效的token', details: null };
      const bad = 'f'.repeat(64);
      for (const r of [
        () => app.httpRequest().get('/kv/_info').set('x-app-token', bad),
        () => app.httpRequest().get('/kv/_info').set('authorization', `Bearer ${bad}`),
        () => app.httpRequest().get(`/kv/_info?token=${bad}`),
        () => app.httpRequest().get(`/kv/_info?apptoken=${bad}`),
        () => app.httpRequest().post('/kv/k').send({ token: bad }),
        () => app.httpRequest().post('/kv/k').send({ apptoken: bad }),
        () => app.httpRequest().get('/kv/_info').set('x-app-token', 'x'.repeat(5000)),
      ]) {
        assert.deepStrictEqual((await r().expect(401)).body, body);
      }
    });

    it('401 无效的token once the token is uninstalled', async () => {
      const { device, install, token } = await deviceWithToken();
      await app.httpRequest().get('/kv/_info').set('x-app-token', token).expect(200);
      await app.httpRequest().delete(`/apps/devices/${enc(device.uuid)}/uninstall/${install.id}`).expect(204);
      const res = await app.httpRequest().get('/kv/_info').set('x-app-token', token).expect(401);
      assert.deepStrictEqual(res.body, { success: false, message: '无效的token', details: null });
    });

    it('200 with each of the six sources alone', async () => {
      const { device, token } = await deviceWithToken();
      const sources = [
        () => app.httpRequest().get('/kv/_info').set('x-app-token', token),
        () => app.httpRequest().get('/kv/_info').set('authorization', `Bearer ${token}`),
        () => app.httpRequest().get('/kv/_info').set('authorization', `bearer ${token}`),
        () => app.httpRequest().get(`/kv/_info?token=${token}`),
        () => app.httpRequest().get(`/kv/_info?apptoken=${token}`),
      ];
      for (const r of sources) assert.strictEqual((await r().expect(200)).body.device.uuid, device.uuid);
      await app.httpRequest().post('/kv/from-body').send({ token, v: 1 }).expect(200);
      await app.httpRequest().post('/kv/from-body-app').send({ apptoken: token, v: 2 }).expect(200);
      assert.deepStrictEqual(await keysOf(token), [ 'from-body', 'from-body-app' ]);
    });

    it('uses the first source in the order header, Bearer, query token, query apptoken, body token, body apptoken', async () => {
      // Six devices; source i carries device i's token, and sources before i carry nothing.
      const devices = [];
      for (let i = 0; i < 6; i++) devices.push(await deviceWithToken());
      const t = devices.map(d => d.token);
      const send = (from: number) => {
        const query = new URLSearchParams();
        if (from <= 2) query.set('token', t[2]);
        if (from <= 3) query.set('apptoken', t[3]);
        const body: Record<string, unknown> = { v: from };
        if (from <= 4) body.token = t[4];
        body.apptoken = t[5];
        const r = app.httpRequest().post(`/kv/probe?${query.toString()}`);
        if (from <= 0) r.set('x-app-token', t[0]);
        if (from <= 1) r.set('authorization', `Bearer ${t[1]}`);
        return r.send(body);
      };
      for (let from = 0; from < 6; from++) {
        const res = await send(from).expect(200);
        assert.strictEqual(res.body.deviceId, devices[from].device.id, `source ${from}`);
        assert.deepStrictEqual(await keysOf(t[from]), [ 'probe' ]);
      }
    });

    it('401 无效的token when the first source is wrong even if a later one is valid', async () => {
      const { token } = await deviceWithToken();
      const res = await app.httpRequest().get(`/kv/_info?token=${token}`).set('x-app-token', 'nope').expect(401);
      assert.deepStrictEqual(res.body, { success: false, message: '无效的token', details: null });
    });

    it('removes a body `token` before storing the value', async () => {
      const { token } = await deviceWithToken();
      await app.httpRequest().post('/kv/k').send({ token, keep: 'me' }).expect(200);
      const res = await app.httpRequest().get('/kv/k').set('x-app-token', token).expect(200);
      assert.deepStrictEqual(res.body, { keep: 'me' });
    });

    it('removes a body `apptoken` (and only it) before storing the value', async () => {
      const { token } = await deviceWithToken();
      await app.httpRequest().post('/kv/k').send({ apptoken: token, token: '', keep: 1 }).expect(200);
      const res = await app.httpRequest().get('/kv/k').set('x-app-token', token).expect(200);
      assert.deepStrictEqual(res.body, { token: '', keep: 1 });
    });

    it('removes a body token sent as text/plain JSON too', async () => {
      const { token } = await deviceWithToken();
      await app.httpRequest().post('/kv/k').set('content-type', 'text/plain').send(JSON.stringify({ token, a: [ 1 ] })).expect(200);
      const res = await app.httpRequest().get('/kv/k').set('x-app-token', token).expect(200);
      assert.deepStrictEqual(res.body, { a: [ 1 ] });
    });

    it('keeps `token`/`apptoken` fields of the value when the token came from a header or the query', async () => {
      const { token } = await deviceWithToken();
      const value = { token: 'stored-token', apptoken: 'stored-apptoken' };
      await put(token, 'h', value).expect(200);
      await app.httpRequest().post(`/kv/b?token=${token}`).send(value).expect(200);
      await app.httpRequest().post('/kv/c').set('authorization', `Bearer ${token}`).send(value).expect(200);
      for (const k of [ 'h', 'b', 'c' ]) {
        const res = await app.httpRequest().get(`/kv/${k}`).set('x-app-token', token).expect(200);
        assert.deepStrictEqual(res.body, value);
      }
    });

    it('stores {} when the body held only the token', async () => {
      const { token } = await deviceWithToken();
      await app.httpRequest().post('/kv/k').send({ token }).expect(200);
      const res = await app.httpRequest().get('/kv/k').set('x-app-token', token).expect(200);
      assert.strictEqual(res.text, '{}');
    });

    it('all tokens of one device see the same keys', async () => {
      const { device, token } = await deviceWithToken();
      const second = await installApp(device, { appId: 'other-app' });
      await put(token, 'shared', { n: 1 }).expect(200);
      const res = await app.httpRequest().get('/kv/shared').set('x-app-token', second.token).expect(200);
      assert.deepStrictEqual(res.body, { n: 1 });
      const upd = await put(second.token, 'shared', { n: 2 }).expect(200);
      assert.strictEqual(upd.body.created, false);
      assert.deepStrictEqual(await keysOf(token), [ 'shared' ]);
    });

    it("a token of device A never sees device B's keys", async () => {
      const a = await deviceWithToken();
      const b = await deviceWithToken();
      await put(b.token, 'secret', { b: true }).expect(200);
      await put(a.token, 'mine', { a: true }).expect(200);
      assert.deepStrictEqual((await app.httpRequest().get('/kv/secret').set('x-app-token', a.token).expect(404)).body, notFoundBody('secret'));
      await app.httpRequest().get('/kv/secret/metadata').set('x-app-token', a.token).expect(404);
      await app.httpRequest().delete('/kv/secret').set('x-app-token', a.token).expect(404);
      assert.deepStrictEqual(await keysOf(a.token), [ 'mine' ]);
      const list = await app.httpRequest().get('/kv').set('x-app-token', a.token).expect(200);
      assert.deepStrictEqual(list.body.items.map((i: { key: string }) => i.key), [ 'mine' ]);
      assert.strictEqual(list.body.total_rows, 1);
      // Writing the same key from A creates A's own entry and leaves B's alone.
      assert.strictEqual((await put(a.token, 'secret', { a: 1 }).expect(200)).body.created, true);
      assert.deepStrictEqual((await app.httpRequest().get('/kv/secret').set('x-app-token', b.token).expect(200)).body, { b: true });
      const info = await app.httpRequest().get('/kv/_info').set('x-app-token', a.token).expect(200);
      assert.strictEqual(info.body.device.uuid, a.device.uuid);
    });
  });

  describe('[GET /kv/_info] info()', () => {
    it('200 with the token device and hasAccount:false (no device is bound to an account yet, so uuid is shown)', async () => {
      const device = await createDevice({ name: '教室一' });
      const { token } = await installApp(device);
      const res = await app.httpRequest().get('/kv/_info').set('x-app-token', token).expect(200);
      const d = res.body.device;
      assert.ok(ISO_MS.test(d.createdAt), d.createdAt);
      assert.ok(ISO_MS.test(d.updatedAt), d.updatedAt);
      assert.deepStrictEqual(res.body, {
        device: { id: device.id, uuid: device.uuid, name: '教室一', createdAt: d.createdAt, updatedAt: d.updatedAt },
        hasAccount: false,
      });
      assert.deepStrictEqual(Object.keys(res.body), [ 'device', 'hasAccount' ]);
      assert.deepStrictEqual(Object.keys(d), [ 'id', 'uuid', 'name', 'createdAt', 'updatedAt' ]);
    });
  });

  describe('[GET /kv/_keys] keys() and [GET /kv] list()', () => {
    let deviceId: number;
    let token: string;
    const T = (n: number) => `2025-10-25T08:30:0${n}.${n}00Z`;

    beforeEach(async () => {
      const d = await deviceWithToken();
      deviceId = d.device.id;
      token = d.token;
      // createdAt order: b, c, a, e, d ; updatedAt order: a, c, e, d, b
      const data: Array<[string, number, number]> = [[ 'a', 3, 1 ], [ 'b', 1, 5 ], [ 'c', 2, 2 ], [ 'd', 5, 4 ], [ 'e', 4, 3 ]];
      for (const [ k ] of data) await put(token, k, { k }).expect(200);
      for (const [ k, c, u ] of data) await setTimes(deviceId, k, T(c), T(u));
    });

    const getKeys = (q = '') => app.httpRequest().get(`/kv/_keys${q}`).set('x-app-token', token);
    const getList = (q = '') => app.httpRequest().get(`/kv${q}`).set('x-app-token', token);

    it('200 _keys with defaults: key asc, limit 100, skip 0, no load_more', async () => {
      const res = await getKeys().expect(200);
      assert.deepStrictEqual(res.body, {
        keys: [ 'a', 'b', 'c', 'd', 'e' ],
        total_rows: 5,
        current_page: { limit: 100, skip: 0, count: 5 },
      });
    });

    it('200 _keys sorted by key/createdAt/updatedAt asc and desc', async () => {
      const expected: Record<string, string[]> = {
        'key:asc': [ 'a', 'b', 'c', 'd', 'e' ],
        'key:desc': [ 'e', 'd', 'c', 'b', 'a' ],
        'createdAt:asc': [ 'b', 'c', 'a', 'e', 'd' ],
        'createdAt:desc': [ 'd', 'e', 'a', 'c', 'b' ],
        'updatedAt:asc': [ 'a', 'c', 'e', 'd', 'b' ],
        'updatedAt:desc': [ 'b', 'd', 'e', 'c', 'a' ],
      };
      for (const [ spec, keys ] of Object.entries(expected)) {
        const [ sortBy, sortDir ] = spec.split(':');
        const res = await getKeys(`?sortBy=${sortBy}&sortDir=${sortDir}`).expect(200);
        assert.deepStrictEqual(res.body.keys, keys, spec);
        const list = await getList(`?sortBy=${sortBy}&sortDir=${sortDir}`).expect(200);
        assert.deepStrictEqual(list.body.items.map((i: { key: string }) => i.key), keys, spec);
      }
    });

    it('200 sortDir is case-insensitive and load_more carries it lower-cased', async () => {
      const res = await getKeys('?sortDir=DESC&limit=2').expect(200);
      assert.deepStrictEqual(res.body, {
        keys: [ 'e', 'd' ],
        total_rows: 5,
        current_page: { limit: 2, skip: 0, count: 2 },
        load_more: '/kv/_keys?sortBy=key&sortDir=desc&limit=2&skip=2',
      });
    });

    it('200 _keys pages with limit/skip; total_rows is the device total; load_more until the end', async () => {
      let res = await getKeys('?sortBy=createdAt&limit=2').expect(200);
      assert.deepStrictEqual(res.body, {
        keys: [ 'b', 'c' ],
        total_rows: 5,
        current_page: { limit: 2, skip: 0, count: 2 },
        load_more: '/kv/_keys?sortBy=createdAt&sortDir=asc&limit=2&skip=2',
      });
      res = await getKeys(res.body.load_more.slice('/kv/_keys'.length)).expect(200);
      assert.deepStrictEqual(res.body, {
        keys: [ 'a', 'e' ],
        total_rows: 5,
        current_page: { limit: 2, skip: 2, count: 2 },
        load_more: '/kv/_keys?sortBy=createdAt&sortDir=asc&limit=2&skip=4',
      });
      res = await getKeys(res.body.load_more.slice('/kv/_keys'.length)).expect(200);
      assert.deepStrictEqual(res.body, { keys: [ 'd' ], total_rows: 5, current_page: { limit: 2, skip: 4, count: 1 } });
    });

    it('200 no load_more when skip+limit equals the total, when limit is 0, or past the end', async () => {
      assert.deepStrictEqual((await getKeys('?limit=5').expect(200)).body,
        { keys: [ 'a', 'b', 'c', 'd', 'e' ], total_rows: 5, current_page: { limit: 5, skip: 0, count: 5 } });
      assert.deepStrictEqual((await getKeys('?skip=3&limit=2').expect(200)).body,
        { keys: [ 'd', 'e' ], total_rows: 5, current_page: { limit: 2, skip: 3, count: 2 } });
      assert.deepStrictEqual((await getKeys('?limit=0').expect(200)).body,
        { keys: [], total_rows: 5, current_page: { limit: 0, skip: 0, count: 0 } });
      assert.deepStrictEqual((await getKeys('?skip=10').expect(200)).body,
        { keys: [], total_rows: 5, current_page: { limit: 100, skip: 10, count: 0 } });
      assert.deepStrictEqual((await getList('?limit=0').expect(200)).body, { items: [], total_rows: 5 });
      assert.deepStrictEqual((await getList('?skip=5').expect(200)).body, { items: [], total_rows: 5 });
    });

    it('200 /kv with defaults: items with metadata, key asc, no load_more', async () => {
      const res = await getList().expect(200);
      const item = (k: string, c: number, u: number) => ({ deviceId, key: k, metadata: { creatorIp: '127.0.0.1', createdAt: T(c), updatedAt: T(u) } });
      assert.deepStrictEqual(res.body, {
        items: [ item('a', 3, 1), item('b', 1, 5), item('c', 2, 2), item('d', 5, 4), item('e', 4, 3) ],
        total_rows: 5,
      });
    });

    it('200 a page read again is the same JSON text; after a write, a delete and a batch import it shows them at once (pages are cached per device revision)', async () => {
      const first = await getList('?limit=3').expect(200);
      const again = await getList('?limit=3').expect(200);
      assert.strictEqual(again.text, first.text);
      assert.strictEqual(again.headers['content-type'], 'application/json; charset=utf-8');
      const keys = await getKeys('?limit=3').expect(200);
      assert.strictEqual((await getKeys('?limit=3').expect(200)).text, keys.text);
      assert.strictEqual(keys.headers['content-type'], 'application/json; charset=utf-8');

      await put(token, '0', { v: 0 }).expect(200);
      assert.deepStrictEqual((await getKeys('?limit=3').expect(200)).body,
        { keys: [ '0', 'a', 'b' ], total_rows: 6, current_page: { limit: 3, skip: 0, count: 3 }, load_more: '/kv/_keys?sortBy=key&sortDir=asc&limit=3&skip=3' });
      let list = await getList('?limit=3').expect(200);
      assert.deepStrictEqual(list.body.items.map((i: { key: string }) => i.key), [ '0', 'a', 'b' ]);
      assert.strictEqual(list.body.total_rows, 6);
      assert.match(list.body.items[0].metadata.createdAt, ISO_MS);

      await app.httpRequest().delete('/kv/a').set('x-app-token', token).expect(204);
      assert.deepStrictEqual((await getKeys('?limit=3').expect(200)).body.keys, [ '0', 'b', 'c' ]);
      list = await getList('?limit=3').expect(200);
      assert.deepStrictEqual([ list.body.items.map((i: { key: string }) => i.key), list.body.total_rows ], [[ '0', 'b', 'c' ], 5 ]);

      await app.httpRequest().post('/kv/_batchimport').set('x-app-token', token).send({ '00': { v: 1 }, '01': { v: 2 } }).expect(200);
      assert.deepStrictEqual((await getKeys('?limit=3').expect(200)).body.keys, [ '0', '00', '01' ]);
      list = await getList('?limit=3').expect(200);
      assert.deepStrictEqual([ list.body.items.map((i: { key: string }) => i.key), list.body.total_rows ], [[ '0', '00', '01' ], 7 ]);
      // Another query of the same device is its own page.
      assert.deepStrictEqual((await getKeys('?limit=2&sortDir=desc').expect(200)).body.keys, [ 'e', 'd' ]);
    });

    it('200 another device\'s pages are its own (same query, cached on this worker)', async () => {
      await getKeys().expect(200);
      const other = await deviceWithToken();
      await put(other.token, 'z', { z: 1 }).expect(200);
      const res = await app.httpRequest().get('/kv/_keys').set('x-app-token', other.token).expect(200);
      assert.deepStrictEqual(res.body, { keys: [ 'z' ], total_rows: 1, current_page: { limit: 100, skip: 0, count: 1 } });
      const list = await app.httpRequest().get('/kv').set('x-app-token', other.token).expect(200);
      assert.deepStrictEqual(list.body.items.map((i: { deviceId: number; key: string }) => [ i.deviceId, i.key ]), [[ other.device.id, 'z' ]]);
    });

    it('200 /kv pages with limit/skip and the exact load_more', async () => {
      const res = await getList('?sortBy=updatedAt&sortDir=desc&limit=2&skip=1').expect(200);
      assert.deepStrictEqual(res.body.items.map((i: { key: string }) => i.key), [ 'd', 'e' ]);
      assert.strictEqual(res.body.total_rows, 5);
      assert.strictEqual(res.body.load_more, '/kv?sortBy=updatedAt&sortDir=desc&limit=2&skip=3');
      assert.deepStrictEqual(Object.keys(res.body), [ 'items', 'total_rows', 'load_more' ]);
      const last = await getList('?sortBy=updatedAt&sortDir=desc&limit=2&skip=3').expect(200);
      assert.deepStrictEqual(Object.keys(last.body), [ 'items', 'total_rows' ]);
      assert.deepStrictEqual(last.body.items.map((i: { key: string }) => i.key), [ 'c', 'a' ]);
    });

    it('200 limit 1000 is accepted; repeated parameters use the first value', async () => {
      assert.strictEqual((await getKeys('?limit=1000').expect(200)).body.current_page.limit, 1000);
      const res = await getKeys('?limit=1&limit=2&sortDir=desc&sortDir=asc').expect(200);
      assert.deepStrictEqual(res.body.keys, [ 'e' ]);
      assert.strictEqual(res.body.load_more, '/kv/_keys?sortBy=key&sortDir=desc&limit=1&skip=1');
    });

    it('200 empty device: no keys, total_rows 0', async () => {
      const other = await deviceWithToken();
      const res = await app.httpRequest().get('/kv/_keys').set('x-app-token', other.token).expect(200);
      assert.deepStrictEqual(res.body, { keys: [], total_rows: 0, current_page: { limit: 100, skip: 0, count: 0 } });
      const list = await app.httpRequest().get('/kv').set('x-app-token', other.token).expect(200);
      assert.deepStrictEqual(list.body, { items: [], total_rows: 0 });
    });

    [ '/kv/_keys', '/kv' ].forEach(path => {
      it(`400 ${path} with an invalid sortBy / sortDir / limit / skip (never 500)`, async () => {
        const cases: Array<[string, object]> = [
          [ 'sortBy=name', SORT_BY_ERROR ],
          [ 'sortBy=KEY', SORT_BY_ERROR ],
          [ 'sortBy=value', SORT_BY_ERROR ],
          [ 'sortBy=key%3BDROP%20TABLE%20kv_entries', SORT_BY_ERROR ],
          [ 'sortDir=up', SORT_DIR_ERROR ],
          [ 'sortDir=asc%20', SORT_DIR_ERROR ],
          [ 'limit=1001', limitError('1001') ],
          [ 'limit=-1', limitError('-1') ],
          [ 'limit=1.5', limitError('1.5') ],
          [ 'limit=abc', limitError('abc') ],
          [ 'limit=1e3', limitError('1e3') ],
          [ 'limit=%201', limitError(' 1') ],
          [ 'limit=99999999999999999999', limitError('99999999999999999999') ],
          [ 'skip=-1', skipError('-1') ],
          [ 'skip=1.5', skipError('1.5') ],
          [ 'skip=abc', skipError('abc') ],
          [ 'skip=2147483648', skipError('2147483648') ],
        ];
        for (const [ q, body ] of cases) {
          const res = await app.httpRequest().get(`${path}?${q}`).set('x-app-token', token);
          assert.strictEqual(res.status, 400, q);
          assert.deepStrictEqual(res.body, body, q);
        }
      });
    });
  });

  describe('[GET /kv/:key] show()', () => {
    it('200 with the stored JSON itself: objects, arrays, {} and [], unicode', async () => {
      const { token } = await deviceWithToken();
      const values: Record<string, unknown> = {
        obj: { a: 1, b: [ true, null, 'x' ], c: { d: 1.5 } },
        arr: [ 1, 'two', { three: 3 }, [ 4 ]],
        emptyObj: {},
        emptyArr: [],
        unicode: { 中文: '值', emoji: '🙂👍🏽', rtl: 'مرحبا', nul: 'a\u0000b', quote: '\'"\\' },
        '键🙂': [ '🙂' ],
      };
      for (const [ k, v ] of Object.entries(values)) await put(token, k, v).expect(200);
      for (const [ k, v ] of Object.entries(values)) {
        const res = await app.httpRequest().get(`/kv/${enc(k)}`).set('x-app-token', token)
          .expect(200).expect('Content-Type', 'application/json; charset=utf-8');
        assert.deepStrictEqual(res.body, v, k);
        assert.strictEqual(res.text, JSON.stringify(v), k);
      }
    });

    it("404 未找到键名为 '<key>' 的记录 for a missing key (also unicode)", async () => {
      const { token } = await deviceWithToken();
      for (const k of [ 'nope', '键🙂', 'a/b' ]) {
        const res = await app.httpRequest().get(`/kv/${enc(k)}`).set('x-app-token', token).expect(404);
        assert.deepStrictEqual(res.body, notFoundBody(k));
      }
    });

    it('404 for GET /kv/_batchimport (a reserved name, only POST is a route there)', async () => {
      const { token } = await deviceWithToken();
      const res = await app.httpRequest().get('/kv/_batchimport').set('x-app-token', token).expect(404);
      assert.deepStrictEqual(res.body, notFoundBody('_batchimport'));
    });
  });

  describe('[GET /kv/:key/metadata] metadata()', () => {
    it('200 with deviceId, key and metadata; createdAt kept and updatedAt moved by an update', async () => {
      const { device, token } = await deviceWithToken();
      const first = await put(token, 'm', { v: 1 }).expect(200);
      const second = await put(token, 'm', { v: 2 }).set('x-forwarded-for', '203.0.113.9').expect(200);
      const res = await app.httpRequest().get('/kv/m/metadata').set('x-app-token', token).expect(200);
      assert.deepStrictEqual(res.body, {
        deviceId: device.id,
        key: 'm',
        // TRUST_PROXY is off: X-Forwarded-For is ignored and the peer address is recorded.
        metadata: { creatorIp: '127.0.0.1', createdAt: first.body.updatedAt, updatedAt: second.body.updatedAt },
      });
    });

    it("404 未找到键名为 '<key>' 的记录", async () => {
      const { token } = await deviceWithToken();
      const res = await app.httpRequest().get('/kv/none/metadata').set('x-app-token', token).expect(404);
      assert.deepStrictEqual(res.body, notFoundBody('none'));
    });
  });

  describe('[POST /kv/:key] upsert()', () => {
    it('200 created true on the first write, then false; updatedAt ISO-ms', async () => {
      const { device, token } = await deviceWithToken();
      const first = await put(token, 'k', { v: 1 }).expect(200);
      assert.ok(ISO_MS.test(first.body.updatedAt), first.body.updatedAt);
      assert.deepStrictEqual(first.body, { deviceId: device.id, key: 'k', created: true, updatedAt: first.body.updatedAt });
      const second = await put(token, 'k', [ 2 ]).expect(200);
      assert.ok(ISO_MS.test(second.body.updatedAt));
      assert.deepStrictEqual(second.body, { deviceId: device.id, key: 'k', created: false, updatedAt: second.body.updatedAt });
      assert.deepStrictEqual((await app.httpRequest().get('/kv/k').set('x-app-token', token).expect(200)).body, [ 2 ]);
    });

    it('200 stores {} and [] (an empty array clears a list)', async () => {
      const { token } = await deviceWithToken();
      await put(token, 'list', [ 1, 2 ]).expect(200);
      await put(token, 'list', []).expect(200);
      assert.strictEqual((await app.httpRequest().get('/kv/list').set('x-app-token', token).expect(200)).text, '[]');
      await put(token, 'obj', {}).expect(200);
      assert.strictEqual((await app.httpRequest().get('/kv/obj').set('x-app-token', token).expect(200)).text, '{}');
    });

    it('400 请提供有效的JSON值 without a body: no content, empty JSON, empty text/plain, whitespace', async () => {
      const { token } = await deviceWithToken();
      const body = { success: false, message: '请提供有效的JSON值', details: null };
      const requests = [
        () => app.httpRequest().post('/kv/k').set('x-app-token', token),
        () => app.httpRequest().post('/kv/k').set('x-app-token', token).set('content-type', 'application/json').send(''),
        () => app.httpRequest().post('/kv/k').set('x-app-token', token).set('content-type', 'text/plain').send(''),
        () => app.httpRequest().post('/kv/k').set('x-app-token', token).set('content-type', 'application/x-www-form-urlencoded').send(''),
        () => app.httpRequest().post('/kv/k').set('x-app-token', token).set('content-type', 'application/json').send('  \n '),
        () => app.httpRequest().post('/kv/k').set('x-app-token', token).set('content-type', 'text/plain').send('  \n '),
      ];
      for (const r of requests) assert.deepStrictEqual((await r().expect(400)).body, body);
      assert.deepStrictEqual(await keysOf(token), []);
    });

    it('200 accepts JSON sent as text/plain, form-urlencoded or octet-stream (curl -d)', async () => {
      const { token } = await deviceWithToken();
      const value = { a: [ 1, { b: '中' }] };
      for (const type of [ 'text/plain', 'application/x-www-form-urlencoded', 'application/octet-stream' ]) {
        const key = `t-${type.split('/')[1]}`;
        await app.httpRequest().post(`/kv/${key}`).set('x-app-token', token).set('content-type', type)
          .send(JSON.stringify(value)).expect(200);
        assert.deepStrictEqual((await app.httpRequest().get(`/kv/${key}`).set('x-app-token', token).expect(200)).body, value, type);
      }
    });

    it('200 with a key of 191 characters (also 191 emoji); 400 with 192', async () => {
      const { token } = await deviceWithToken();
      for (const k of [ 'k'.repeat(191), '🙂'.repeat(191), '键'.repeat(191) ]) {
        await put(token, k, { ok: true }).expect(200);
        assert.deepStrictEqual((await app.httpRequest().get(`/kv/${enc(k)}`).set('x-app-token', token).expect(200)).body, { ok: true });
      }
      for (const k of [ 'k'.repeat(192), '🙂'.repeat(192) ]) {
        const res = await put(token, k, { ok: false }).expect(400);
        assert.deepStrictEqual(res.body, { success: false, message: KEY_MESSAGE, details: { key: k.slice(0, 256), max: 191 } });
      }
      assert.strictEqual((await keysOf(token)).length, 3);
    });

    it("keys are case-sensitive and byte-exact: 'a', 'A' and 'a ' are three keys", async () => {
      const { token } = await deviceWithToken();
      assert.strictEqual((await put(token, 'a', { v: 'a' }).expect(200)).body.created, true);
      assert.strictEqual((await put(token, 'A', { v: 'A' }).expect(200)).body.created, true);
      assert.strictEqual((await put(token, 'a ', { v: 'a ' }).expect(200)).body.created, true);
      assert.strictEqual((await put(token, 'é', { v: 'é' }).expect(200)).body.created, true);
      assert.strictEqual((await put(token, 'e\u0301', { v: 'e+accent' }).expect(200)).body.created, true);
      for (const k of [ 'a', 'A', 'a ', 'é' ]) {
        assert.deepStrictEqual((await app.httpRequest().get(`/kv/${enc(k)}`).set('x-app-token', token).expect(200)).body, { v: k });
      }
      assert.deepStrictEqual(await keysOf(token), [ 'A', 'a', 'a ', 'e\u0301', 'é' ]);
      await app.httpRequest().delete('/kv/a%20').set('x-app-token', token).expect(204);
      assert.deepStrictEqual(await keysOf(token), [ 'A', 'a', 'e\u0301', 'é' ]);
    });

    it('/kv/a%2Fb is the key a/b (write, read, metadata, list, delete)', async () => {
      const { token } = await deviceWithToken();
      const res = await app.httpRequest().post('/kv/a%2Fb').set('x-app-token', token).send({ s: 1 }).expect(200);
      assert.strictEqual(res.body.key, 'a/b');
      assert.deepStrictEqual((await app.httpRequest().get('/kv/a%2Fb').set('x-app-token', token).expect(200)).body, { s: 1 });
      assert.strictEqual((await app.httpRequest().get('/kv/a%2Fb/metadata').set('x-app-token', token).expect(200)).body.key, 'a/b');
      assert.deepStrictEqual(await keysOf(token), [ 'a/b' ]);
      await app.httpRequest().delete('/kv/a%2Fb').set('x-app-token', token).expect(204);
      assert.deepStrictEqual(await keysOf(token), []);
    });

    it('400 for the reserved names _info, _keys, _token and _changes (they could never be read back)', async () => {
      const { token } = await deviceWithToken();
      for (const k of [ '_info', '_keys', '_token', '_changes' ]) {
        const res = await put(token, k, { v: 1 }).expect(400);
        assert.deepStrictEqual(res.body, {
          success: false,
          message: `键名 '${k}' 是保留名称，不能写入`,
          details: { key: k, reserved: [ '_info', '_keys', '_batchimport', '_token', '_changes' ] },
        });
      }
      // GET of the reserved names still reaches their own routes.
      await app.httpRequest().get('/kv/_info').set('x-app-token', token).expect(200);
      assert.strictEqual((await app.httpRequest().get('/kv/_token').set('x-app-token', token).expect(200)).body.token, token);
      assert.deepStrictEqual(await keysOf(token), []);
    });
  });

  describe('[DELETE /kv/:key] destroy()', () => {
    it('204 with an empty body, then 404', async () => {
      const { token } = await deviceWithToken();
      await put(token, 'gone', { v: 1 }).expect(200);
      const res = await app.httpRequest().delete('/kv/gone').set('x-app-token', token).expect(204);
      assert.strictEqual(res.text, '');
      assert.deepStrictEqual(res.body, {});
      assert.deepStrictEqual((await app.httpRequest().delete('/kv/gone').set('x-app-token', token).expect(404)).body, notFoundBody('gone'));
      assert.deepStrictEqual((await app.httpRequest().get('/kv/gone').set('x-app-token', token).expect(404)).body, notFoundBody('gone'));
    });
  });

  describe('[POST /kv/_batchimport] batchImport()', () => {
    it('200 with both generations\' shapes: {deviceId,total,successful,failed:0,results,code:200,message,data{deviceId,summary,results}}, in input order', async () => {
      const { device, token } = await deviceWithToken();
      await put(token, 'exists', { old: true }).expect(200);
      const res = await app.httpRequest().post('/kv/_batchimport').set('x-app-token', token)
        .send({ zeta: { z: 1 }, exists: [ 'new' ], alpha: [], '键🙂': {}, n: 5, s: 'str', nil: null }).expect(200);
      const order = [[ 'zeta', true ], [ 'exists', false ], [ 'alpha', true ], [ '键🙂', true ], [ 'n', true ], [ 's', true ], [ 'nil', true ]] as const;
      assert.deepStrictEqual(res.body, {
        deviceId: device.id,
        total: 7,
        successful: 7,
        failed: 0,
        results: order.map(([ key, created ]) => ({ key, created })),
        code: 200,
        message: '批量导入成功',
        data: {
          deviceId: device.id,
          summary: { total: 7, successful: 7, failed: 0 },
          results: order.map(([ key, isNew ]) => ({ key, isNew })),
        },
      });
      assert.deepStrictEqual(Object.keys(res.body), [ 'deviceId', 'total', 'successful', 'failed', 'results', 'code', 'message', 'data' ]);
      assert.deepStrictEqual(Object.keys(res.body.data), [ 'deviceId', 'summary', 'results' ]);
      assert.deepStrictEqual(Object.keys(res.body.data.summary), [ 'total', 'successful', 'failed' ]);
      assert.deepStrictEqual(Object.keys(res.body.results[0]), [ 'key', 'created' ]);
      assert.deepStrictEqual(Object.keys(res.body.data.results[0]), [ 'key', 'isNew' ]);
      const get = async (k: string) => (await app.httpRequest().get(`/kv/${enc(k)}`).set('x-app-token', token).expect(200)).text;
      assert.strictEqual(await get('zeta'), '{"z":1}');
      assert.strictEqual(await get('exists'), '["new"]');
      assert.strictEqual(await get('alpha'), '[]');
      assert.strictEqual(await get('n'), '5');
      assert.strictEqual(await get('s'), '"str"');
      assert.strictEqual(await get('nil'), 'null');
      assert.deepStrictEqual(await keysOf(token), [ 'alpha', 'exists', 'n', 'nil', 's', 'zeta', '键🙂' ]);
    });

    it('removes a body token before importing (it does not become a key)', async () => {
      const { token } = await deviceWithToken();
      const res = await app.httpRequest().post('/kv/_batchimport').send({ token, a: 1 }).expect(200);
      assert.deepStrictEqual(res.body.results, [{ key: 'a', created: true }]);
      assert.deepStrictEqual(await keysOf(token), [ 'a' ]);
    });

    it('400 with the exact message for a missing, empty, {} or array body', async () => {
      const { token } = await deviceWithToken();
      const body = { success: false, message: BATCH_MESSAGE, details: null };
      for (const r of [
        () => app.httpRequest().post('/kv/_batchimport').set('x-app-token', token),
        () => app.httpRequest().post('/kv/_batchimport').set('x-app-token', token).set('content-type', 'application/json').send(''),
        () => app.httpRequest().post('/kv/_batchimport').set('x-app-token', token).send({}),
        () => app.httpRequest().post('/kv/_batchimport').set('x-app-token', token).send([{ a: 1 }]),
        () => app.httpRequest().post('/kv/_batchimport').send({ token }),
      ]) {
        assert.deepStrictEqual((await r().expect(400)).body, body);
      }
    });

    it('400 listing the invalid keys, and nothing is written', async () => {
      const { token } = await deviceWithToken();
      const long = 'x'.repeat(192);
      const res = await app.httpRequest().post('/kv/_batchimport').set('x-app-token', token)
        .send({ good: 1, [long]: 2, '': 3, _info: 4, also: 5 }).expect(400);
      assert.deepStrictEqual(res.body, { success: false, message: INVALID_BATCH_KEYS, details: { invalidKeys: [ long, '', '_info' ] } });
      assert.deepStrictEqual(await keysOf(token), []);
    });

    it('413 beyond the batch limit, checked before key validation; the limit itself is fine', async () => {
      const { token } = await deviceWithToken();
      const saved = app.config.classworks.batchLimit;
      app.config.classworks.batchLimit = 2;
      try {
        const res = await app.httpRequest().post('/kv/_batchimport').set('x-app-token', token)
          .send({ a: 1, b: 2, ['x'.repeat(300)]: 3 }).expect(413);
        assert.deepStrictEqual(res.body, {
          success: false, message: '批量导入最多 2 个键，本次 3 个', details: { limit: 2, count: 3 }, code: 'BATCH_TOO_LARGE',
        });
        assert.deepStrictEqual(await keysOf(token), []);
        await app.httpRequest().post('/kv/_batchimport').set('x-app-token', token).send({ a: 1, b: 2 }).expect(200);
      } finally {
        app.config.classworks.batchLimit = saved;
      }
      assert.deepStrictEqual(await keysOf(token), [ 'a', 'b' ]);
    });

    it('200 with exactly the default limit of 1000 keys', async () => {
      const { token } = await deviceWithToken();
      assert.strictEqual(app.config.classworks.batchLimit, 1000);
      const body: Record<string, number> = {};
      for (let i = 0; i < 1000; i++) body[`k${i}`] = i;
      const res = await app.httpRequest().post('/kv/_batchimport').set('x-app-token', token).send(body).expect(200);
      assert.strictEqual(res.body.total, 1000);
      body.k1000 = 1000;
      await app.httpRequest().post('/kv/_batchimport').set('x-app-token', token).send(body).expect(413);
      const keys = await app.httpRequest().get('/kv/_keys?limit=0').set('x-app-token', token).expect(200);
      assert.strictEqual(keys.body.total_rows, 1000);
    });
  });

  describe('[GET /kv/_token] token()', () => {
    it('200 {success, token, appId, deviceType, isReadOnly, note, installedAt, updatedAt, device:{id, uuid, name, namespace}}', async () => {
      const device = await createDevice({ name: '三年二班' });
      const inst = await installApp(device, { appId: 'classworks', note: '讲台', deviceType: 'teacher' });
      const res = await app.httpRequest().get('/kv/_token').set('x-app-token', inst.token).expect(200).expect('Content-Type', /application\/json/);
      assert.match(res.body.updatedAt, ISO_MS);
      assert.deepStrictEqual(res.body, {
        success: true,
        token: inst.token,
        appId: 'classworks',
        deviceType: 'teacher',
        isReadOnly: false,
        note: '讲台',
        installedAt: inst.installedAt,
        updatedAt: res.body.updatedAt,
        device: { id: device.id, uuid: device.uuid, name: '三年二班', namespace: device.uuid },
      });
      assert.deepStrictEqual(Object.keys(res.body), [ 'success', 'token', 'appId', 'deviceType', 'isReadOnly', 'note', 'installedAt', 'updatedAt', 'device' ]);
      assert.deepStrictEqual(Object.keys(res.body.device), [ 'id', 'uuid', 'name', 'namespace' ]);
    });

    it('200 for every kind of token (read-only ones too), from every token source', async () => {
      const device = await createDevice();
      const kinds: Array<[string | null, boolean]> = [[ 'teacher', false ], [ 'student', true ], [ 'classroom', false ], [ 'parent', true ], [ null, false ]];
      for (const [ deviceType, isReadOnly ] of kinds) {
        const { token } = await installApp(device, { deviceType, isReadOnly });
        for (const r of [
          () => app.httpRequest().get('/kv/_token').set('x-app-token', token),
          () => app.httpRequest().get('/kv/_token').set('authorization', `Bearer ${token}`),
          () => app.httpRequest().get(`/kv/_token?token=${token}`),
          () => app.httpRequest().get(`/kv/_token?apptoken=${token}`),
        ]) {
          const res = await r().expect(200);
          assert.deepStrictEqual([ res.body.token, res.body.deviceType, res.body.isReadOnly, res.body.note ], [ token, deviceType, isReadOnly, null ]);
        }
      }
    });

    it('200 read from the database, not the token cache: the note, the device name and namespace are current', async () => {
      const device = await createDevice({ name: 'old' });
      const { token } = await installApp(device, { deviceType: 'student' });
      await app.httpRequest().get('/kv/_token').set('x-app-token', token).expect(200);
      assert.strictEqual(app.tokenCache.get(token)?.note, null);
      // Behind the cache's back (no bus message): the cached copy keeps the old note.
      await app.model.AppInstall.update({ note: '张三' }, { where: { token } });
      await app.model.Device.update({ name: 'new', namespace: 'room-7' }, { where: { id: device.id } });
      const res = await app.httpRequest().get('/kv/_token').set('x-app-token', token).expect(200);
      assert.strictEqual(app.tokenCache.get(token)?.note, null);
      assert.strictEqual(res.body.note, '张三');
      assert.deepStrictEqual(res.body.device, { id: device.id, uuid: device.uuid, name: 'new', namespace: 'room-7' });
      // And after a note change through the API, updatedAt moves with it.
      const put = await app.httpRequest().put(`/apps/tokens/${token}/note`).send({ note: '李四' }).expect(200);
      const after = await app.httpRequest().get('/kv/_token').set('x-app-token', token).expect(200);
      assert.deepStrictEqual([ after.body.note, after.body.updatedAt ], [ '李四', put.body.updatedAt ]);
    });

    it('401 without a token or with an unknown one; POST and DELETE do not describe the token', async () => {
      assert.deepStrictEqual((await app.httpRequest().get('/kv/_token').expect(401)).body, { success: false, message: '需要提供有效的token', details: null });
      assert.deepStrictEqual((await app.httpRequest().get('/kv/_token').set('x-app-token', 'f'.repeat(64)).expect(401)).body,
        { success: false, message: '无效的token', details: null });
      const { token } = await deviceWithToken();
      assert.strictEqual((await put(token, '_token', { v: 1 }).expect(400)).body.message, "键名 '_token' 是保留名称，不能写入");
      assert.deepStrictEqual((await app.httpRequest().delete('/kv/_token').set('x-app-token', token).expect(404)).body, notFoundBody('_token'));
    });
  });

  describe('read-only tokens (kvAuth)', () => {
    const READ_ONLY = { success: false, message: '当前token为只读模式,无法修改数据', details: null };
    before(() => startServer());
    afterEach(() => closeAllClients());
    after(() => stopServer());

    /** A device with a read-write token (it wrote key `k`) and a read-only token. */
    async function readOnlySetup() {
      const device = await createDevice();
      const rw = await installApp(device, { appId: 'screen', deviceType: 'classroom' });
      const ro = await installApp(device, { appId: 'phone', deviceType: 'student', isReadOnly: true });
      await put(rw.token, 'k', { v: 1 }).expect(200);
      return { device, rw, ro };
    }

    /** Every row and the revision of the device, read from the database. */
    async function stored(deviceId: number) {
      const rows = await app.model.KvEntry.findAll({ attributes: [ 'key', 'value' ], where: { deviceId }, order: [[ 'key', 'ASC' ]], raw: true });
      const d = await app.model.Device.findByPk(deviceId, { attributes: [ 'revision' ], raw: true }) as unknown as { revision: number | string };
      const log = await app.model.query('SELECT COUNT(*) AS n FROM device_log WHERE deviceId = ?', { replacements: [ deviceId ], type: 'SELECT', raw: true }) as Array<{ n: number | string }>;
      return { rows, revision: Number(d.revision), log: Number(log[0].n) };
    }

    it('403 当前token为只读模式,无法修改数据 for every write, before any body or key validation; nothing written, nothing sent', async () => {
      const { device, rw, ro } = await readOnlySetup();
      const before = await stored(device.id);
      assert.deepStrictEqual(before.rows, [{ key: 'k', value: '{"v":1}' }]);
      // A socket joined with the read-only token itself: joining works, and it must see no change.
      const client = await connectJoined(COMBINATIONS[0], ro.token, device.uuid, 1, { deviceType: 'student', isReadOnly: true });
      const t = ro.token;
      const h = { 'x-app-token': t };
      const tooMany: Record<string, number> = {};
      for (let i = 0; i <= app.settings.batchLimit; i++) tooMany[`k${i}`] = i;
      const writes: Array<[string, () => ReturnType<ReturnType<typeof app.httpRequest>['get']>]> = [
        [ 'POST /kv/k header', () => app.httpRequest().post('/kv/k').set(h).send({ v: 2 }) ],
        [ 'POST /kv/new no body', () => app.httpRequest().post('/kv/new').set(h) ],
        [ 'POST /kv/new empty JSON body', () => app.httpRequest().post('/kv/new').set(h).set('content-type', 'application/json').send('') ],
        [ 'POST /kv/new {}', () => app.httpRequest().post('/kv/new').set(h).send({}) ],
        [ 'POST /kv/new []', () => app.httpRequest().post('/kv/new').set(h).send([]) ],
        [ 'POST /kv/new scalar', () => app.httpRequest().post('/kv/new').set(h).set('content-type', 'text/plain').send('5') ],
        [ 'POST /kv/new malformed text/plain, header token', () => app.httpRequest().post('/kv/new').set(h).set('content-type', 'text/plain').send('{"broken"') ],
        [ 'POST /kv/new malformed text/plain, query token', () => app.httpRequest().post(`/kv/new?token=${t}`).set('content-type', 'text/plain').send('{"broken"') ],
        [ 'POST /kv/<192 chars> (invalid key)', () => app.httpRequest().post(`/kv/${'x'.repeat(192)}`).set(h).send({ v: 1 }) ],
        [ 'POST /kv/_info (reserved key)', () => app.httpRequest().post('/kv/_info').set(h).send({ v: 1 }) ],
        [ 'POST /kv/new Bearer', () => app.httpRequest().post('/kv/new').set('authorization', `Bearer ${t}`).send({ v: 1 }) ],
        [ 'POST /kv/new ?token', () => app.httpRequest().post(`/kv/new?token=${t}`).send({ v: 1 }) ],
        [ 'POST /kv/new ?apptoken', () => app.httpRequest().post(`/kv/new?apptoken=${t}`).send({ v: 1 }) ],
        [ 'POST /kv/new body token', () => app.httpRequest().post('/kv/new').send({ token: t, v: 1 }) ],
        [ 'POST /kv/new body apptoken', () => app.httpRequest().post('/kv/new').send({ apptoken: t, v: 1 }) ],
        [ 'POST /kv/new body token, text/plain', () => app.httpRequest().post('/kv/new').set('content-type', 'text/plain').send(JSON.stringify({ token: t, v: 1 })) ],
        [ 'POST /kv/_batchimport', () => app.httpRequest().post('/kv/_batchimport').set(h).send({ a: 1, k: 2 }) ],
        [ 'POST /kv/_batchimport no body', () => app.httpRequest().post('/kv/_batchimport').set(h) ],
        [ 'POST /kv/_batchimport {}', () => app.httpRequest().post('/kv/_batchimport').set(h).send({}) ],
        [ 'POST /kv/_batchimport over the limit', () => app.httpRequest().post('/kv/_batchimport').set(h).send(tooMany) ],
        [ 'POST /kv/_batchimport invalid keys', () => app.httpRequest().post('/kv/_batchimport').set(h).send({ ['x'.repeat(192)]: 1 }) ],
        [ 'POST /kv/_batchimport malformed text/plain', () => app.httpRequest().post('/kv/_batchimport').set(h).set('content-type', 'text/plain').send('{"a":') ],
        [ 'POST /kv/_batchimport Bearer', () => app.httpRequest().post('/kv/_batchimport').set('authorization', `Bearer ${t}`).send({ a: 1 }) ],
        [ 'POST /kv/_batchimport ?token', () => app.httpRequest().post(`/kv/_batchimport?token=${t}`).send({ a: 1 }) ],
        [ 'POST /kv/_batchimport body token', () => app.httpRequest().post('/kv/_batchimport').send({ token: t, a: 1 }) ],
        [ 'DELETE /kv/k', () => app.httpRequest().delete('/kv/k').set(h) ],
        [ 'DELETE /kv/missing', () => app.httpRequest().delete('/kv/missing').set(h) ],
        [ 'DELETE /kv/k Bearer', () => app.httpRequest().delete('/kv/k').set('authorization', `Bearer ${t}`) ],
        [ 'DELETE /kv/k ?token', () => app.httpRequest().delete(`/kv/k?token=${t}`) ],
        [ 'DELETE /kv/k ?apptoken', () => app.httpRequest().delete(`/kv/k?apptoken=${t}`) ],
      ];
      for (const [ what, request ] of writes) {
        const res = await request();
        assert.strictEqual(res.status, 403, `${what}: ${res.status} ${res.text.slice(0, 200)}`);
        assert.deepStrictEqual(res.body, READ_ONLY, what);
        assert.match(res.headers['content-type'], /application\/json/, what);
      }
      assert.deepStrictEqual(await stored(device.id), before);
      // The next change the read-only socket sees is the read-write token's, made after all of the above.
      await put(rw.token, 'marker', { v: 1 }).expect(200);
      const next = await client.expectNext('kv-key-changed');
      assert.deepStrictEqual([ next.key, next.action, next.created ], [ 'marker', 'upsert', true ]);
    });

    describe('bodies egg\'s parser used to refuse first (jsonBody reads every KV write body)', () => {
      const INVALID_JSON = (details: unknown) => ({ success: false, message: '请求体不是有效的JSON', details, code: 'INVALID_JSON' });
      const TOO_LARGE = { success: false, message: '请求体过大', details: null, code: 'PAYLOAD_TOO_LARGE' };
      const UNSUPPORTED = { success: false, message: '不支持的请求体编码或字符集', details: 'Unsupported Content-Encoding: klingon', code: 'UNSUPPORTED_MEDIA_TYPE' };
      const over = () => JSON.stringify({ s: 'x'.repeat(2 * 1024 * 1024 + 10) });
      let serverUrl = '';
      before(async () => {
        serverUrl = await startServer();
      });

      /** The ways a malformed or oversized body reaches a write, with the token in a header or the query. */
      function badWrites(t: string) {
        const h = { 'x-app-token': t };
        const req = () => app.httpRequest();
        return [
          [ 'POST /kv/new malformed application/json, header', () => req().post('/kv/new').set(h).set('content-type', 'application/json').send('{"broken"') ],
          [ 'POST /kv/new malformed application/json, Bearer', () => req().post('/kv/new').set('authorization', `Bearer ${t}`).set('content-type', 'application/json').send('{"broken"') ],
          [ 'POST /kv/new malformed application/json, ?token', () => req().post(`/kv/new?token=${t}`).set('content-type', 'application/json').send('{"broken"') ],
          [ 'POST /kv/new malformed application/vnd.api+json', () => req().post('/kv/new').set(h).set('content-type', 'application/vnd.api+json').send('{a:1}') ],
          [ 'POST /kv/_batchimport malformed application/json', () => req().post('/kv/_batchimport').set(h).set('content-type', 'application/json').send('{"a":') ],
          [ 'DELETE /kv/k malformed application/json', () => req().delete('/kv/k').set(h).set('content-type', 'application/json').send('{"broken"') ],
          [ 'POST /kv/new over BODY_LIMIT, application/json', () => req().post('/kv/new').set(h).set('content-type', 'application/json').send(over()) ],
          [ 'POST /kv/new over BODY_LIMIT, text/plain', () => req().post('/kv/new').set(h).set('content-type', 'text/plain').send(over()) ],
          [ 'POST /kv/_batchimport over BODY_LIMIT, ?apptoken', () => req().post(`/kv/_batchimport?apptoken=${t}`).set('content-type', 'application/json').send(over()) ],
          [ 'DELETE /kv/k over BODY_LIMIT, application/json', () => req().delete('/kv/k').set(h).set('content-type', 'application/json').send(over()) ],
          [ 'POST /kv/new unknown Content-Encoding', () => req().post('/kv/new').set(h).set('content-type', 'application/json').set('content-encoding', 'klingon').send('{"a":1}') ],
        ] as Array<[string, () => ReturnType<ReturnType<typeof app.httpRequest>['get']>]>;
      }

      /** Streams a chunked body (no Content-Length) of `bytes` bytes to the in-process server; resolves with the answer. */
      function streamed(path: string, token: string, bytes: number): Promise<{ status: number; body: unknown }> {
        return new Promise((resolve, reject) => {
          const r = http.request(`${serverUrl}${path}`, { method: 'POST', headers: { 'x-app-token': token, 'content-type': 'application/json' } }, res => {
            let text = '';
            res.setEncoding('utf8');
            res.on('data', d => { text += d; });
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
          });
          r.on('error', reject);
          const chunk = Buffer.alloc(64 * 1024, 'x');
          r.write('{"s":"');
          let sent = 0;
          const pump = () => {
            while (sent < bytes) {
              sent += chunk.length;
              if (!r.write(chunk)) return r.once('drain', pump);
            }
            r.end('"}');
          };
          pump();
        });
      }

      it('403 for a read-only token (header, Bearer or query) whatever the body: malformed JSON, over BODY_LIMIT, unknown encoding; nothing written', async () => {
        const { device, ro } = await readOnlySetup();
        const before = await stored(device.id);
        for (const [ what, request ] of badWrites(ro.token)) {
          const res = await request();
          assert.strictEqual(res.status, 403, `${what}: ${res.status} ${res.text.slice(0, 200)}`);
          assert.deepStrictEqual(res.body, READ_ONLY, what);
        }
        assert.deepStrictEqual(await streamed('/kv/new', ro.token, 3 * 1024 * 1024), { status: 403, body: READ_ONLY });
        assert.deepStrictEqual(await stored(device.id), before);
      });

      it('a read-write token gets the parser\'s answers: 400 INVALID_JSON, 413 PAYLOAD_TOO_LARGE, 415; nothing written', async () => {
        const { device, rw } = await readOnlySetup();
        const before = await stored(device.id);
        const expected = (what: string, details: unknown) => (/BODY_LIMIT/.test(what) ? [ 413, TOO_LARGE ]
          : /Encoding/.test(what) ? [ 415, UNSUPPORTED ] : [ 400, INVALID_JSON(details) ]);
        for (const [ what, request ] of badWrites(rw.token)) {
          const res = await request();
          assert.deepStrictEqual([ res.status, res.body ], expected(what, res.body.details), what);
          if (res.status === 400) assert.match(res.body.details, /JSON/, what);
        }
        assert.deepStrictEqual(await streamed('/kv/new', rw.token, 3 * 1024 * 1024), { status: 413, body: TOO_LARGE });
        assert.deepStrictEqual(await stored(device.id), before);
        // The connection the oversized answers came on still serves.
        await put(rw.token, 'after', { ok: true }).expect(200);
      });

      it('a token inside the body still works (json, text, form-encoded JSON, DELETE form), and body errors without a token elsewhere are answered at once', async () => {
        const { device, rw, ro } = await readOnlySetup();
        await app.httpRequest().post('/kv/j').set('content-type', 'application/json').send(JSON.stringify({ token: rw.token, v: 1 })).expect(200);
        await app.httpRequest().post('/kv/t').set('content-type', 'text/plain').send(JSON.stringify({ apptoken: rw.token, v: 2 })).expect(200);
        await app.httpRequest().post('/kv/f').type('form').send(JSON.stringify({ token: rw.token, v: 3 })).expect(200);
        assert.deepStrictEqual((await stored(device.id)).rows, [
          { key: 'f', value: '{"v":3}' }, { key: 'j', value: '{"v":1}' }, { key: 'k', value: '{"v":1}' }, { key: 't', value: '{"v":2}' },
        ]);
        await app.httpRequest().delete('/kv/j').set('content-type', 'application/json').send({ token: rw.token }).expect(204);
        await app.httpRequest().delete('/kv/t').type('form').send(`token=${rw.token}`).expect(204);
        assert.deepStrictEqual((await app.httpRequest().delete('/kv/f').type('form').send(`token=${ro.token}`).expect(403)).body, READ_ONLY);
        // No token outside the body: a malformed or oversized body is answered before authentication.
        const malformed = await app.httpRequest().post('/kv/x').set('content-type', 'application/json').send('{"token":');
        assert.deepStrictEqual([ malformed.status, malformed.body.code ], [ 400, 'INVALID_JSON' ]);
        const big = await app.httpRequest().post('/kv/x').set('content-type', 'application/json').send(over());
        assert.deepStrictEqual([ big.status, big.body ], [ 413, TOO_LARGE ]);
        assert.deepStrictEqual((await stored(device.id)).rows, [{ key: 'f', value: '{"v":3}' }, { key: 'k', value: '{"v":1}' }]);
      });
    });

    it('200 for reads with a read-only token: GET /kv, /kv/_keys, /kv/:key, metadata, _info, _token', async () => {
      const { device, ro } = await readOnlySetup();
      const get = (path: string) => app.httpRequest().get(path).set('x-app-token', ro.token).expect(200);
      assert.deepStrictEqual((await get('/kv/k')).body, { v: 1 });
      assert.deepStrictEqual((await get('/kv/_keys')).body, { keys: [ 'k' ], total_rows: 1, current_page: { limit: 100, skip: 0, count: 1 } });
      const list = (await get('/kv')).body;
      assert.deepStrictEqual([ list.total_rows, list.items.map((i: { key: string }) => i.key) ], [ 1, [ 'k' ]]);
      const meta = (await get('/kv/k/metadata')).body;
      assert.deepStrictEqual([ meta.deviceId, meta.key ], [ device.id, 'k' ]);
      assert.strictEqual((await get('/kv/_info')).body.device.uuid, device.uuid);
      const self = (await get('/kv/_token')).body;
      assert.deepStrictEqual([ self.token, self.deviceType, self.isReadOnly ], [ ro.token, 'student', true ]);
      assert.deepStrictEqual((await app.httpRequest().get('/kv/nothing').set('x-app-token', ro.token).expect(404)).body, notFoundBody('nothing'));
    });

    it('join-token with a read-only token joins the device room (ack {ok:true, uuid}) and the socket receives changes', async () => {
      const { device, rw, ro } = await readOnlySetup();
      const client = await connectJoined(COMBINATIONS[0], ro.token, device.uuid, 1, { deviceType: 'student', isReadOnly: true });
      assert.deepStrictEqual(await client.request('join-token', { token: ro.token }), { ok: true, uuid: device.uuid });
      await app.httpRequest().delete('/kv/k').set('x-app-token', rw.token).expect(204);
      const seen = await client.waitFor('kv-key-changed');
      assert.deepStrictEqual([ seen.key, seen.action ], [ 'k', 'delete' ]);
    });

    it('the same device\'s read-write tokens still write (the rule follows the token, not the device)', async () => {
      const { device, rw, ro } = await readOnlySetup();
      await put(rw.token, 'k', { v: 2 }).expect(200);
      await app.httpRequest().post('/kv/_batchimport').set('x-app-token', rw.token).send({ b: 1 }).expect(200);
      assert.deepStrictEqual((await stored(device.id)).rows, [{ key: 'b', value: '1' }, { key: 'k', value: '{"v":2}' }]);
      await put(ro.token, 'k', { v: 3 }).expect(403);
    });
  });
});
