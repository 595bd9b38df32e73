import assert from 'node:assert';
import { app } from 'egg-mock/bootstrap';
import { ConnectionRefusedError, DatabaseError } from 'sequelize';
import errorHandler from '../../../app/middleware/errorHandler';
import { HttpError, ServiceUnavailableError } from '../../../app/lib/errors';
import { queryTimeoutError } from '../../../app/lib/queryTimeout';

/** Runs the real middleware on a real context with a downstream that throws `err`. */
async function render(err: unknown) {
  const ctx = app.mockContext();
  await errorHandler()(ctx, async () => {
    throw err;
  });
  return { status: ctx.status, body: ctx.body as Record<string, unknown>, ctx };
}

describe('test/app/middleware/errorHandler.test.ts', () => {
  describe('errorHandler() rendering thrown errors', () => {
    it('an HttpError becomes {success:false,message,details,code?} with its status and headers', async () => {
      const r = await render(new HttpError(429, '请求过于频繁，请稍后再试', { code: 'RATE_LIMITED', details: { limit: 1 }, headers: { 'Retry-After': '7' } }));
      assert.strictEqual(r.status, 429);
      assert.deepStrictEqual(r.body, { success: false, message: '请求过于频繁，请稍后再试', details: { limit: 1 }, code: 'RATE_LIMITED' });
      assert.strictEqual(r.ctx.response.get('Retry-After'), '7');
      const plain = await render(new HttpError(404, '设备不存在'));
      assert.deepStrictEqual(plain.body, { success: false, message: '设备不存在', details: null });
    });

    it('503 SERVICE_UNAVAILABLE for an unreachable database or Redis', async () => {
      const db = await render(new ConnectionRefusedError(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:3306'), { code: 'ECONNREFUSED' })));
      assert.strictEqual(db.status, 503);
      assert.deepStrictEqual(db.body, { success: false, message: '数据库服务不可用，请稍后重试', details: { service: 'database' }, code: 'SERVICE_UNAVAILABLE' });
      const redis = await render(Object.assign(new Error('Reached the max retries per request limit'), { name: 'MaxRetriesPerRequestError' }));
      assert.strictEqual(redis.status, 503);
      assert.deepStrictEqual(redis.body, { success: false, message: 'Redis 服务不可用，请稍后重试', details: { service: 'redis' }, code: 'SERVICE_UNAVAILABLE' });
      const typed = await render(new ServiceUnavailableError('database'));
      assert.strictEqual(typed.status, 503);
    });

    it('503 SERVICE_UNAVAILABLE for a query the database did not answer in time (DB_QUERY_TIMEOUT_MS) or a lost connection; 500 for a wrong query', async () => {
      const down = { success: false, message: '数据库服务不可用，请稍后重试', details: { service: 'database' }, code: 'SERVICE_UNAVAILABLE' };
      const timedOut = await render(new DatabaseError(Object.assign(queryTimeoutError(5000), { sql: 'SELECT 1' })));
      assert.deepStrictEqual([ timedOut.status, timedOut.body ], [ 503, down ]);
      const closed = new Error("Can't add new command when connection is in closed state");
      const fatal = await render(new DatabaseError(Object.assign(closed, { fatal: true, sql: 'SELECT 1' })));
      assert.deepStrictEqual([ fatal.status, fatal.body ], [ 503, down ]);
      const wrong = await render(new DatabaseError(Object.assign(new Error('You have an error in your SQL syntax'), { code: 'ER_PARSE_ERROR', sql: 'SELEC 1' })));
      assert.strictEqual(wrong.status, 500);
    });

    it('500 INTERNAL_ERROR for anything else, with a stack outside production only', async () => {
      const r = await render(new TypeError('boom'));
      assert.strictEqual(r.status, 500);
      const error = r.body.error as { name: string; stack: string };
      assert.strictEqual(error.name, 'TypeError');
      assert.match(error.stack, /boom/);
      assert.deepStrictEqual(r.body, { success: false, message: '服务器内部错误', details: null, code: 'INTERNAL_ERROR', error });
      const saved = app.config.env;
      app.config.env = 'prod';
      try {
        const prod = await render(new TypeError('boom'));
        assert.deepStrictEqual(prod.body, { success: false, message: '服务器内部错误', details: null, code: 'INTERNAL_ERROR' });
      } finally {
        app.config.env = saved;
      }
      assert.deepStrictEqual((await render(undefined)).body.code, 'INTERNAL_ERROR');
      assert.deepStrictEqual((await render('a string')).status, 500);
    });

    it('400 for a URIError, 413 for a too-large entity, other 4xx kept with their message', async () => {
      assert.deepStrictEqual((await render(new URIError('URI malformed'))).body, { success: false, message: '请求路径编码无效', details: null, code: 'BAD_REQUEST' });
      const big = await render(Object.assign(new Error('request entity too large'), { status: 413, type: 'entity.too.large' }));
      assert.strictEqual(big.status, 413);
      assert.deepStrictEqual(big.body, { success: false, message: '请求体过大', details: null, code: 'PAYLOAD_TOO_LARGE' });
      const other = await render(Object.assign(new Error('request aborted'), { status: 400, type: 'request.aborted' }));
      assert.strictEqual(other.status, 400);
      assert.deepStrictEqual(other.body, { success: false, message: 'request aborted', details: null, code: 'BAD_REQUEST' });
    });

    it("parser errors: egg's suffix is dropped; scalars vs malformed JSON are told apart", async () => {
      const parse = (message: string, body: string) => Object.assign(new SyntaxError(`${message}, check bodyParser config`), { status: 400, body });
      assert.deepStrictEqual((await render(parse('invalid JSON, only supports object and array', '42'))).body,
        { success: false, message: '请提供有效的JSON值', details: null });
      assert.deepStrictEqual((await render(parse('invalid JSON, only supports object and array', '  '))).body,
        { success: false, message: '请提供有效的JSON值', details: null });
      const bad = await render(parse('invalid JSON, only supports object and array', 'nope'));
      assert.strictEqual(bad.status, 400);
      assert.strictEqual(bad.body.code, 'INVALID_JSON');
      assert.deepStrictEqual((await render(parse('Unexpected end of JSON input', '{'))).body,
        { success: false, message: '请求体不是有效的JSON', details: 'Unexpected end of JSON input', code: 'INVALID_JSON' });
      assert.deepStrictEqual((await render(parse('Object contains forbidden prototype property', '{"__proto__":{}}'))).body,
        { success: false, message: '请求体包含不允许的属性名 __proto__', details: null, code: 'FORBIDDEN_PROPERTY' });
    });
  });

  describe('through the HTTP stack', () => {
    it('404 找不到路径 for unknown paths and methods', async () => {
      assert.deepStrictEqual((await app.httpRequest().get('/kv/a/b/c').expect(404)).body, { success: false, message: '找不到路径: /kv/a/b/c', details: null });
      assert.deepStrictEqual((await app.httpRequest().put('/kv/a').expect(404)).body, { success: false, message: '找不到路径: /kv/a', details: null });
    });

    it('400 JSON for a malformed or scalar body on any route (before authentication)', async () => {
      const bad = await app.httpRequest().post('/devices').set('content-type', 'application/json').send('{"uuid":').expect(400);
      assert.strictEqual(bad.body.code, 'INVALID_JSON');
      const scalar = await app.httpRequest().post('/devices').set('content-type', 'application/json').send('"x"').expect(400);
      assert.deepStrictEqual(scalar.body, { success: false, message: '请提供有效的JSON值', details: null });
    });
  });
});
