import assert from 'node:assert';
import { REJOIN_BURST, REJOIN_REFILL_MS } from '../../app/lib/realtime';
import crypto from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { app, mm } from 'egg-mock/bootstrap';
import { deviceWithToken, overrideRateLimits, restoreRateLimits } from '../support/factories';
import { assertTooMany } from '../support/assertions';
import { openClient, openJoined, startServer, stopServer, withTimeout } from '../support/socket';

const randomToken = () => crypto.randomBytes(32).toString('hex');

/** Counts the database queries on app_installs (token lookups) while `fn` runs. */
async function countingLookups<T>(fn: (lookups: () => number) => Promise<T>): Promise<T> {
  let n = 0;
  app.model.addHook('afterQuery', 'hostileLookups', (_options, query) => {
    // Token lookups (AppInstallService.resolveToken); not the periodic re-check of joined tokens (`token IN (…)`).
    const sql = (query as unknown as { sql?: string }).sql ?? '';
    if (sql.includes('app_installs') && !sql.includes('token IN (')) n += 1;
  });
  try {
    return await fn(() => n);
  } finally {
    app.model.removeHook('afterQuery', 'hostileLookups');
  }
}

/** The 99th percentile of `values` (ms). */
function p99(values: number[]): number {
  const sorted = [ ...values ].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * 0.99) - 1)] ?? 0;
}

const EMPTY_VALUE = { success: false, message: '请提供有效的JSON值', details: null };
const TOO_DEEP = { success: false, message: 'JSON值嵌套过深：最多 1000 层', details: { maxDepth: 1000 }, code: 'JSON_TOO_DEEP' };

/** Asserts a 400 INVALID_JSON body (details: the parser's message, which differs between Node versions). */
function assertInvalidJson(res: { status: number; body: Record<string, unknown> }) {
  assert.strictEqual(res.status, 400);
  assert.strictEqual(typeof res.body.details, 'string');
  assert.deepStrictEqual(res.body, { success: false, message: '请求体不是有效的JSON', details: res.body.details, code: 'INVALID_JSON' });
}

describe('test/app/hostile.test.ts', () => {
  let token: string;
  const keys = async () => (await app.httpRequest().get('/kv/_keys').set('x-app-token', token).expect(200)).body.keys;
  const post = (path: string, type: string, body: string) =>
    app.httpRequest().post(path).set('x-app-token', token).set('content-type', type).send(body);

  beforeEach(async () => {
    token = (await deviceWithToken()).token;
  });

  afterEach(() => {
    assert.strictEqual(({} as Record<string, unknown>).polluted, undefined, 'Object.prototype polluted');
    assert.strictEqual(Object.prototype.hasOwnProperty.call(Object.prototype, 'polluted'), false);
  });

  describe('malformed JSON', () => {
    it('400 INVALID_JSON on /kv writes, as application/json and as text/plain, nothing written', async () => {
      for (const body of [ '{"a":', '{a:1}', "{'a':1}", '[1,]', '{"a":1}}', 'undefined', 'NaN', '{"a":1} trailing' ]) {
        assertInvalidJson(await post('/kv/k', 'application/json', body));
        assertInvalidJson(await post('/kv/_batchimport', 'application/json', body));
        assertInvalidJson(await post('/kv/k', 'text/plain', body));
      }
      assert.deepStrictEqual(await keys(), []);
    });

    it('400 INVALID_JSON on the other JSON routes too', async () => {
      assertInvalidJson(await app.httpRequest().post('/devices').set('content-type', 'application/json').send('{"uuid":'));
      assertInvalidJson(await app.httpRequest().post('/auth/device/bind').set('content-type', 'application/json').send('{'));
    });
  });

  describe('JSON scalars and wrong types as bodies', () => {
    it('400 请提供有效的JSON值 for a scalar body on POST /kv/:key (any content type)', async () => {
      for (const body of [ '42', '"str"', 'true', 'false', 'null', '-0.5' ]) {
        for (const type of [ 'application/json', 'text/plain' ]) {
          const res = await post('/kv/k', type, body);
          assert.strictEqual(res.status, 400, `${type} ${body}`);
          assert.deepStrictEqual(res.body, EMPTY_VALUE, `${type} ${body}`);
        }
      }
      assert.deepStrictEqual(await keys(), []);
    });

    it('400 for a scalar or array batch body', async () => {
      for (const body of [ '42', '"str"', 'null' ]) {
        assert.deepStrictEqual((await post('/kv/_batchimport', 'application/json', body).expect(400)).body, EMPTY_VALUE);
      }
      const res = await post('/kv/_batchimport', 'application/json', '[1,2]').expect(400);
      assert.deepStrictEqual(res.body, { success: false, message: '请提供有效的JSON数据，格式为 {"key":{}, "key2":{}}', details: null });
      assert.deepStrictEqual(await keys(), []);
    });

    it('a non-string token in the body is not a token (401)', async () => {
      for (const t of [ 123, [ token ], { token }, true ]) {
        const res = await app.httpRequest().post('/kv/k').send({ token: t }).expect(401);
        assert.deepStrictEqual(res.body, { success: false, message: '需要提供有效的token', details: null });
      }
    });
  });

  describe('keys', () => {
    it('400 for 192+ character keys, by path and in a batch; nothing written', async () => {
      for (const n of [ 192, 500, 5000 ]) {
        const k = 'k'.repeat(n);
        const res = await app.httpRequest().post(`/kv/${k}`).set('x-app-token', token).send({}).expect(400);
        assert.deepStrictEqual(res.body, { success: false, message: '键名无效：需要 1 到 191 个字符的字符串', details: { key: k.slice(0, 256), max: 191 } });
        await app.httpRequest().get(`/kv/${k}`).set('x-app-token', token).expect(400);
        await app.httpRequest().delete(`/kv/${k}`).set('x-app-token', token).expect(400);
      }
      assert.deepStrictEqual(await keys(), []);
    });

    it('__proto__ and constructor work as ordinary KV keys', async () => {
      for (const k of [ '__proto__', 'constructor', 'prototype', 'hasOwnProperty' ]) {
        const res = await app.httpRequest().post(`/kv/${k}`).set('x-app-token', token).send({ polluted: k }).expect(200);
        assert.strictEqual(res.body.key, k);
        assert.strictEqual(res.body.created, true);
        assert.deepStrictEqual((await app.httpRequest().get(`/kv/${k}`).set('x-app-token', token).expect(200)).body, { polluted: k });
      }
      const batch = await app.httpRequest().post('/kv/_batchimport').set('x-app-token', token)
        .send({ constructor: [ 1 ], toString: 'x', valueOf: {} }).expect(200);
      assert.deepStrictEqual(batch.body.results, [
        { key: 'constructor', created: false }, { key: 'toString', created: true }, { key: 'valueOf', created: true },
      ]);
      assert.deepStrictEqual(await keys(), [ '__proto__', 'constructor', 'hasOwnProperty', 'prototype', 'toString', 'valueOf' ]);
    });

    it('200 __proto__ and constructor.prototype inside values and batch bodies are stored as data and round-trip byte for byte (json and text), polluting nothing', async () => {
      const bodies = [
        '{"__proto__":{"polluted":1}}',
        '{"constructor":{"prototype":{"polluted":1}}}',
        '{"a":{"b":[{"__proto__":{"polluted":1}},{"constructor":{"prototype":{"polluted":2}}}]}}',
        '[{"__proto__":{"polluted":1}}]',
        '{"__proto__":{"polluted":1},"constructor":{"prototype":{"polluted":1}},"prototype":{"polluted":1}}',
      ];
      for (const body of bodies) {
        for (const type of [ 'application/json', 'text/plain' ]) {
          await post('/kv/k', type, body).expect(200);
          assert.strictEqual((await app.httpRequest().get('/kv/k').set('x-app-token', token).expect(200)).text, body, `${type} ${body}`);
          if (!body.startsWith('[')) {
            const batch = await post('/kv/_batchimport', type, `{"b":${body}}`).expect(200);
            assert.deepStrictEqual(batch.body.results.map((r: { key: string }) => r.key), [ 'b' ]);
            assert.strictEqual((await app.httpRequest().get('/kv/b').set('x-app-token', token).expect(200)).text, body);
          }
        }
      }
      // A batch whose keys are __proto__ and constructor: two keys like any other.
      const batch = await post('/kv/_batchimport', 'application/json', '{"__proto__":{"x":1},"constructor":{"prototype":{"y":2}}}').expect(200);
      assert.deepStrictEqual(batch.body.results, [{ key: '__proto__', created: true }, { key: 'constructor', created: true }]);
      assert.strictEqual((await app.httpRequest().get('/kv/__proto__').set('x-app-token', token).expect(200)).text, '{"x":1}');
      assert.strictEqual((await app.httpRequest().get('/kv/constructor').set('x-app-token', token).expect(200)).text, '{"prototype":{"y":2}}');
      assert.deepStrictEqual(await keys(), [ '__proto__', 'b', 'constructor', 'k' ]);
    });

    it('other routes read named fields only: a __proto__ key is dropped and a constructor key ignored alike (no 400)', async () => {
      await app.httpRequest().post('/devices').set('content-type', 'application/json')
        .send('{"uuid":"p1","deviceName":"n","__proto__":{"namespace":"evil"}}').expect(201);
      await app.httpRequest().post('/devices').set('content-type', 'application/json')
        .send('{"uuid":"p2","deviceName":"n","constructor":{"prototype":{"namespace":"evil"}}}').expect(201);
      for (const uuid of [ 'p1', 'p2' ]) {
        assert.strictEqual((await app.httpRequest().get(`/devices/${uuid}`).expect(200)).body.namespace, uuid);
      }
    });

    it('values with constructor/prototype-looking fields round-trip', async () => {
      const value = { constructor: 'c', prototype: { a: 1 }, toString: [ 'x' ], nested: { constructor: { name: 'n' } } };
      await app.httpRequest().post('/kv/v').set('x-app-token', token).send(value).expect(200);
      const res = await app.httpRequest().get('/kv/v').set('x-app-token', token).expect(200);
      assert.strictEqual(res.text, JSON.stringify(value));
    });

    it('400 for a lone surrogate key in a batch (not a 500 on MySQL); nothing written', async () => {
      const res = await post('/kv/_batchimport', 'application/json', '{"ok":1,"\\ud800":2,"x\\udfffy":3}').expect(400);
      assert.deepStrictEqual(res.body, {
        success: false,
        message: '批量导入包含无效的键名（需要 1 到 191 个字符，不能包含 NUL，不能是保留名称），未写入任何数据',
        details: { invalidKeys: [ '\ud800', 'x\udfffy' ] },
      });
      assert.deepStrictEqual(await keys(), []);
    });

    it('400 for an encoded lone surrogate or bad percent-encoding in the path', async () => {
      for (const path of [ '/kv/%E0%A4%A', '/kv/%ED%A0%80', '/kv/%FF', '/kv/%', '/kv/a%2' ]) {
        const seg = path.slice(4);
        const body = { success: false, message: '键名的 URL 编码无效', details: { key: seg }, code: 'INVALID_PATH_ENCODING' };
        assert.deepStrictEqual((await app.httpRequest().post(path).set('x-app-token', token).send({}).expect(400)).body, body, path);
        assert.deepStrictEqual((await app.httpRequest().get(path).set('x-app-token', token).expect(400)).body, body, path);
        assert.deepStrictEqual((await app.httpRequest().get(`${path}/metadata`).set('x-app-token', token).expect(400)).body, body, path);
        assert.deepStrictEqual((await app.httpRequest().delete(path).set('x-app-token', token).expect(400)).body, body, path);
      }
      assert.deepStrictEqual(await keys(), []);
    });

    it('emoji and other unicode keys round-trip; encoded slashes are part of the key', async () => {
      for (const k of [ '🙂', '👨‍👩‍👧‍👦', '中文/路径', 'a%2Fb', '..%2F..%2Fetc', '../x', ' ', '\t' ]) {
        await app.httpRequest().post(`/kv/${encodeURIComponent(k)}`).set('x-app-token', token).send({ k }).expect(200);
        assert.deepStrictEqual((await app.httpRequest().get(`/kv/${encodeURIComponent(k)}`).set('x-app-token', token).expect(200)).body, { k });
      }
      assert.strictEqual((await keys()).length, 8);
    });

    it('400 for a NUL byte in a key (path or batch); NUL inside values round-trips', async () => {
      const res = await app.httpRequest().post('/kv/a%00b').set('x-app-token', token).send({}).expect(400);
      assert.deepStrictEqual(res.body, { success: false, message: '键名无效：不能包含 NUL 字符', details: { key: 'a\u0000b', max: 191 } });
      await app.httpRequest().get('/kv/a%00b').set('x-app-token', token).expect(400);
      await app.httpRequest().post('/kv/_batchimport').set('x-app-token', token).send({ 'a\u0000b': 1 }).expect(400);
      await app.httpRequest().post('/kv/nul').set('x-app-token', token).send({ s: 'x\u0000y' }).expect(200);
      assert.deepStrictEqual((await app.httpRequest().get('/kv/nul').set('x-app-token', token).expect(200)).body, { s: 'x\u0000y' });
      assert.deepStrictEqual(await keys(), [ 'nul' ]);
    });

    it('SQL-looking keys, values and query strings are plain data', async () => {
      const k = "x' OR '1'='1'; DROP TABLE kv_entries; --";
      const v = { q: "'; DELETE FROM devices; --", b: '\\\'' };
      await app.httpRequest().post(`/kv/${encodeURIComponent(k)}`).set('x-app-token', token).send(v).expect(200);
      assert.deepStrictEqual((await app.httpRequest().get(`/kv/${encodeURIComponent(k)}`).set('x-app-token', token).expect(200)).body, v);
      await app.httpRequest().get(`/kv/${encodeURIComponent("' OR 1=1 --")}`).set('x-app-token', token).expect(404);
      await app.httpRequest().get('/kv?sortBy=key%20DESC%3B--').set('x-app-token', token).expect(400);
      await app.httpRequest().get(`/kv/_info?token=${encodeURIComponent("' OR 1=1 --")}`).expect(401);
      assert.deepStrictEqual(await keys(), [ k ]);
    });
  });

  describe('deep nesting and size', () => {
    it('200 for 1000 levels; 400 JSON_TOO_DEEP for 1001 and for 10k levels (never 500)', async () => {
      const deep = (n: number) => '['.repeat(n) + ']'.repeat(n);
      await post('/kv/d1000', 'application/json', deep(1000)).expect(200);
      assert.strictEqual((await app.httpRequest().get('/kv/d1000').set('x-app-token', token).expect(200)).text, deep(1000));
      for (const n of [ 1001, 10000, 100000 ]) {
        for (const type of [ 'application/json', 'text/plain' ]) {
          assert.deepStrictEqual((await post('/kv/deep', type, deep(n))).body, TOO_DEEP, `${type} ${n}`);
        }
        const objects = '{"a":'.repeat(n) + '1' + '}'.repeat(n);
        assert.deepStrictEqual((await post('/kv/deep', 'application/json', objects)).body, TOO_DEEP);
        assert.deepStrictEqual((await post('/kv/_batchimport', 'application/json', `{"k":${deep(n)}}`)).body, TOO_DEEP);
      }
      assert.deepStrictEqual(await keys(), [ 'd1000' ]);
    });

    it('413 JSON for a body over BODY_LIMIT (json, text, form, octet-stream); nothing written', async () => {
      const big = JSON.stringify({ s: 'x'.repeat(2 * 1024 * 1024 + 10) });
      const body = { success: false, message: '请求体过大', details: null, code: 'PAYLOAD_TOO_LARGE' };
      for (const type of [ 'application/json', 'text/plain', 'application/x-www-form-urlencoded', 'application/octet-stream' ]) {
        const res = await post('/kv/big', type, big);
        assert.strictEqual(res.status, 413, type);
        assert.deepStrictEqual(res.body, body, type);
      }
      assert.deepStrictEqual((await post('/kv/_batchimport', 'application/json', JSON.stringify({ k: big }))).body, body);
      assert.deepStrictEqual((await app.httpRequest().post('/devices').send({ uuid: big, deviceName: 'x' }).expect(413)).body, body);
      assert.deepStrictEqual(await keys(), []);
    });

    it('200 for a value just under BODY_LIMIT', async () => {
      const value = { s: 'y'.repeat(2 * 1024 * 1024 - 100) };
      await app.httpRequest().post('/kv/large').set('x-app-token', token).send(value).expect(200);
      const res = await app.httpRequest().get('/kv/large').set('x-app-token', token).expect(200);
      assert.strictEqual(res.body.s.length, value.s.length);
    });
  });

  describe('query strings, content types, encodings', () => {
    it('repeated query parameters use the first value', async () => {
      await app.httpRequest().post('/kv/_batchimport').set('x-app-token', token).send({ a: 1, b: 2, c: 3 }).expect(200);
      const res = await app.httpRequest().get('/kv/_keys?limit=1&limit=2&skip=1&skip=0').set('x-app-token', token).expect(200);
      assert.deepStrictEqual(res.body, { keys: [ 'b' ], total_rows: 3, current_page: { limit: 1, skip: 1, count: 1 }, load_more: '/kv/_keys?sortBy=key&sortDir=asc&limit=1&skip=2' });
      const bad = await app.httpRequest().get('/kv?limit=abc&limit=1').set('x-app-token', token).expect(400);
      assert.deepStrictEqual(bad.body, { success: false, message: 'limit 必须是 0 到 1000 之间的整数', details: { field: 'limit', value: 'abc' } });
      await app.httpRequest().get(`/kv/_info?token=nope&token=${token}`).expect(401);
    });

    it('bracket query syntax is not an injection vector (400, not 500)', async () => {
      for (const q of [ 'sortBy[]=key', 'sortBy[a]=key', 'limit[]=1', 'skip[$gt]=0' ]) {
        const res = await app.httpRequest().get(`/kv?${q}`).set('x-app-token', token);
        assert.ok(res.status === 200 || res.status === 400, `${q}: ${res.status}`);
        assert.strictEqual(typeof res.body, 'object');
      }
    });

    it('a JSON body under an odd or invalid Content-Type is still read as JSON; non-JSON is a 400', async () => {
      for (const type of [ 'application/xml', 'application/octet-stream', 'foo/bar', 'text/html; charset=utf-8' ]) {
        await post('/kv/ct', type, '{"ok":true}').expect(200);
        assertInvalidJson(await post('/kv/ct', type, '<xml/>'));
      }
      assert.deepStrictEqual((await app.httpRequest().get('/kv/ct').set('x-app-token', token).expect(200)).body, { ok: true });
    });

    it('an unknown charset parameter is ignored: the body is read as UTF-8', async () => {
      await post('/kv/cs', 'application/json; charset=klingon', '{"a":"中"}').expect(200);
      assert.deepStrictEqual((await app.httpRequest().get('/kv/cs').set('x-app-token', token).expect(200)).body, { a: '中' });
    });

    it('415 JSON for an unsupported Content-Encoding; nothing written', async () => {
      const res = await app.httpRequest().post('/kv/ce').set('x-app-token', token)
        .set('content-type', 'application/json').set('content-encoding', 'klingon').send('{"a":1}');
      assert.strictEqual(res.status, 415);
      assert.strictEqual(typeof res.body.details, 'string');
      assert.deepStrictEqual(res.body, { success: false, message: '不支持的请求体编码或字符集', details: res.body.details, code: 'UNSUPPORTED_MEDIA_TYPE' });
      assert.deepStrictEqual(await keys(), []);
    });

    it('400 INVALID_JSON for gzip-declared garbage', async () => {
      const res = await app.httpRequest().post('/kv/gz').set('x-app-token', token)
        .set('content-type', 'application/json').set('content-encoding', 'gzip').send('not gzip');
      assert.ok(res.status === 400 || res.status === 415, String(res.status));
      assert.strictEqual(res.body.success, false);
      assert.deepStrictEqual(await keys(), []);
    });

    it('NUL bytes in headers-free places: query and body strings are data', async () => {
      await app.httpRequest().get('/kv?sortBy=key%00').set('x-app-token', token).expect(400);
      await app.httpRequest().get('/kv/_info?token=%00').expect(401);
      await post('/kv/n', 'application/json', '{"\\u0000":"\\u0000"}').expect(200);
      assert.deepStrictEqual((await app.httpRequest().get('/kv/n').set('x-app-token', token).expect(200)).body, { '\u0000': '\u0000' });
      assertInvalidJson(await post('/kv/raw', 'application/json', '{"a":"x\u0000y"}'));
    });
  });

  describe('socket: junk send-event and get-event-history payloads', () => {
    let url = '';
    before(async () => {
      url = await startServer();
    });
    after(() => stopServer());
    afterEach(() => restoreRateLimits());

    it('every junk payload is answered with a refusal (or relayed when valid), the socket stays connected, nothing is polluted, the server keeps answering', async () => {
      // The junk must reach the handlers: ~120 history requests of one token would pass RATE_LIMIT_HISTORY,
      // ~120 packets of one socket its SOCKET_PACKET_BURST.
      overrideRateLimits({ history: 0 });
      mm(app.config.classworks, 'socketPacketRate', 0);
      app.mockLog('coreLogger');
      app.mockLog('logger');
      const deep = JSON.parse('['.repeat(500) + ']'.repeat(500));
      const junk: unknown[] = [
        undefined, null, 0, -1, NaN, 'x'.repeat(200000), true, [], [ 1, [ 2 ]], deep, Buffer.from('bin'), { type: deep },
        { type: { toString: 'x' } }, { type: 'x'.repeat(100000), content: {} }, { type: '\u0000', content: {} },
        { type: 'ok', content: { big: 'y'.repeat(300000) } }, { type: 'ok', content: deep }, { type: 'ok', content: { deep } },
        JSON.parse('{"type":"__proto__","content":{"__proto__":{"polluted":1}}}'),
        JSON.parse('{"type":"constructor","content":{"constructor":{"prototype":{"polluted":1}}}}'),
        JSON.parse('{"__proto__":{"type":"x","content":{}}}'),
        { limit: { $gt: 0 } }, { limit: [ 5 ] }, { limit: Infinity }, { offset: Infinity }, { offset: -0 }, { limit: 2 ** 53 },
        { offset: 2 ** 53 }, { limit: '1; DROP TABLE device_log' }, { offset: 'x' },
      ];
      const sockets = [
        openClient(url, { version: 'v4', transport: 'websocket', token }),
        openClient(url, { version: 'v2', transport: 'polling', token }),
        openClient(url, { version: 'v4', transport: 'polling' }), // joined nowhere
      ];
      await Promise.all(sockets.slice(0, 2).map(s => s.waitFor('joined')));
      await sockets[2].waitConnected();
      for (const s of sockets) {
        for (const payload of junk) {
          for (const event of [ 'send-event', 'get-event-history' ]) {
            const ack = await s.requestWithin(10000, event, payload);
            assert.strictEqual(typeof ack?.ok, 'boolean', `${event} ${String(JSON.stringify(payload)).slice(0, 60)}: ${JSON.stringify(ack).slice(0, 200)}`);
            s.send(event, payload, payload); // extra arguments, no ack
          }
        }
        s.send('send-event');
        s.send('get-event-history');
      }
      for (const s of sockets) {
        assert.strictEqual(s.connected, true);
        assert.strictEqual(s.disconnectReason, undefined);
      }
      // Still served: a valid event is relayed and the history answers.
      const ack = await sockets[0].request('send-event', { type: 'after-junk', content: { ok: true } });
      assert.strictEqual(ack.ok, true, JSON.stringify(ack));
      assert.deepStrictEqual((await sockets[1].waitFor('after-junk')).content, { ok: true });
      const mark = sockets[1].mark();
      assert.deepStrictEqual(await sockets[1].request('get-event-history', { limit: 1 }), { ok: true });
      const history = await sockets[1].waitFor('event-history', undefined, { since: mark });
      assert.strictEqual(Object.values(history.devices as Record<string, Array<{ type: string }>>)[0][0].type, 'after-junk');
      await app.httpRequest().get('/check').expect(200);
      for (const logger of [ 'coreLogger', 'logger' ]) app.notExpectLog(/ERROR|controller execute error/, logger);
    });
  });

  describe('floods (issue 10): one client must not exhaust a worker', () => {
    let url = '';
    before(async () => {
      url = await startServer();
    });
    after(() => stopServer());
    afterEach(() => restoreRateLimits());

    it('(1) 50,000 join-token packets with random tokens on one websocket: at most SOCKET_PACKET_BURST reach egg, at most RATE_LIMIT_TOKEN_FAILURES lookups, the flooder is disconnected; a concurrent client is served throughout', async () => {
      const FLOOD = 50000;
      const { burst, failures } = { burst: app.settings.socketPacketBurst, failures: app.settings.rateLimit.tokenFailures };
      // Nothing refills during the flood: the bound below is exact whatever the speed of the machine.
      mm(app.config.classworks, 'socketPacketRate', 1 / 3600);
      const { device, token } = await deviceWithToken();
      const member = await openJoined(url, { token, transport: 'websocket' });
      const flooder = openClient(url, { transport: 'websocket' });
      await flooder.waitConnected();
      const request = app.io.of('/').sockets.get(flooder.id)!.request;
      let floodContexts = 0;
      const createContext = app.createContext;
      app.createContext = function(this: unknown, req: IncomingMessage, ...rest: unknown[]) {
        if (req === request) floodContexts += 1;
        return (createContext as (...args: unknown[]) => ReturnType<typeof createContext>).call(this, req, ...rest);
      } as typeof createContext;
      const answers: Record<string, number> = {};
      const latencies: number[] = [];
      try {
        await countingLookups(async lookups => {
          // Answered until the server disconnects it (a burst of refusals in a row).
          const disconnected = new Promise<void>(resolve => flooder.raw.once('disconnect', () => resolve()));
          const onAck = (a: { ok: boolean; reason?: string }) => {
            const k = a.ok ? 'ok' : String(a.reason);
            answers[k] = (answers[k] ?? 0) + 1;
          };
          for (let i = 0; i < FLOOD; i++) flooder.raw.emit('join-token', { token: randomToken() }, onAck);
          // Meanwhile another client reads, writes and relays: every request succeeds.
          let flooding = true;
          const concurrent = (async () => {
            let n = 0;
            while (flooding || n < 20) {
              const t0 = Date.now();
              await app.httpRequest().get('/kv/_info').set('x-app-token', token).expect(200);
              await app.httpRequest().post('/kv/during').set('x-app-token', token).send({ n }).expect(200);
              const ack = await member.request('send-event', { type: 'during', content: { n } });
              assert.strictEqual(ack.ok, true, JSON.stringify(ack));
              latencies.push(Date.now() - t0);
              n += 1;
            }
          })();
          await withTimeout(disconnected, 'the flooder to be disconnected', 120000);
          flooding = false;
          await concurrent;
          assert.ok(lookups() <= failures, `${lookups()} lookups`);
        });
      } finally {
        app.createContext = createContext;
      }
      console.log(`      flood answers: ${JSON.stringify(answers)}; concurrent client: ${latencies.length} rounds (HTTP read + HTTP write + send-event), p99 ${p99(latencies)} ms (in-process: the flooding client shares the event loop; bench/flood.js measures a real worker)`);
      assert.ok(floodContexts <= burst, `${floodContexts} egg contexts for the flooder's packets`);
      assert.strictEqual(flooder.disconnectReason, 'io server disconnect');
      // At most the burst reached the handlers, and the next burst was refused before the disconnect.
      assert.ok(Object.values(answers).reduce((a, b) => a + b, 0) <= 2 * burst, JSON.stringify(answers));
      assert.deepStrictEqual(Object.keys(answers).filter(k => k !== 'invalid_token' && k !== 'too_many_requests'), []);
      assert.ok((answers.invalid_token ?? 0) <= failures, JSON.stringify(answers));
      assert.strictEqual(member.connected, true);
      // The member is still in its room.
      await app.httpRequest().post('/kv/after').set('x-app-token', token).send({}).expect(200);
      assert.strictEqual((await member.waitFor('kv-key-changed', p => p.key === 'after')).uuid, device.uuid);
    });

    it('(2) 500 requests with random tokens from one address: 401 up to RATE_LIMIT_TOKEN_FAILURES, then 429 without a lookup; a valid token from another address is served', async () => {
      const { token } = await deviceWithToken();
      mm(app.config, 'proxy', true);
      const limit = app.settings.rateLimit.tokenFailures;
      const statuses: Record<number, number> = {};
      await countingLookups(async lookups => {
        for (let i = 0; i < 500; i++) {
          const res = await app.httpRequest().get(i % 2 ? '/kv/_info' : '/kv/k').set('x-app-token', randomToken()).set('X-Forwarded-For', '203.0.113.50');
          statuses[res.status] = (statuses[res.status] ?? 0) + 1;
          if (i >= limit) assertTooMany(res, limit, 'requests');
        }
        assert.strictEqual(lookups(), limit);
        app.tokenCache.clear();
        await app.httpRequest().get('/kv/_info').set('x-app-token', token).set('X-Forwarded-For', '198.51.100.50').expect(200);
      });
      assert.deepStrictEqual(statuses, { 401: limit, 429: 500 - limit });
    });

    it('(7) 2,001 join-token of one token on one socket: the room\'s other member receives one device-joined per join announced (REJOIN_BURST, then one per REJOIN_REFILL_MS)', async () => {
      // The joins must reach the handler: one socket's 2,001 packets would pass SOCKET_PACKET_BURST.
      mm(app.config.classworks, 'socketPacketRate', 0);
      const { device, token } = await deviceWithToken();
      const member = await openJoined(url, { token, transport: 'websocket' });
      const from = member.mark();
      const joiner = openClient(url, { transport: 'websocket' });
      await joiner.waitConnected();
      let presenceJoins = 0;
      const presenceJoin = app.sharedState.presenceJoin;
      mm(app.sharedState, 'presenceJoin', (...args: Parameters<typeof presenceJoin>) => {
        presenceJoins += 1;
        return presenceJoin.apply(app.sharedState, args);
      });
      // In batches below the socket's queue bound (64): every join is served.
      const started = Date.now();
      for (let sent = 0; sent < 2001;) {
        const batch = Math.min(50, 2001 - sent);
        const acks = await Promise.all(Array.from({ length: batch }, () => joiner.requestWithin(30000, 'join-token', { token })));
        for (const a of acks) assert.deepStrictEqual(a, { ok: true, uuid: device.uuid });
        sent += batch;
      }
      await app.httpRequest().post('/kv/marker').set('x-app-token', token).send({}).expect(200);
      await member.waitFor('kv-key-changed', p => p.key === 'marker', { since: from });
      // The first join, then the contract's rejoin announcement (§4) while the socket's budget lasts.
      const announced = 1 + REJOIN_BURST + Math.floor((Date.now() - started) / REJOIN_REFILL_MS);
      const seen = member.payloads('device-joined', from);
      assert.ok(seen.length >= 1 + REJOIN_BURST && seen.length <= announced, `${seen.length} device-joined`);
      for (const p of seen) assert.deepStrictEqual(p, { uuid: device.uuid, connections: 2 });
      assert.strictEqual(joiner.named('device-joined').length, seen.length);
      assert.strictEqual(joiner.named('joined').length, 2001);
      assert.strictEqual(presenceJoins, seen.length);
    });
  });
});
