import assert from 'node:assert';
import { app } from 'egg-mock/bootstrap';

describe('test/app/controller/home.test.ts', () => {
  describe('[GET /check] check()', () => {
    it('200 with status, message and an epoch-millisecond time', async () => {
      const before = Date.now();
      const res = await app.httpRequest().get('/check').expect(200).expect('Content-Type', /application\/json/);
      assert.deepStrictEqual(Object.keys(res.body).sort(), [ 'message', 'status', 'time' ]);
      assert.strictEqual(res.body.status, 'success');
      assert.strictEqual(res.body.message, 'API is running');
      assert.ok(Number.isInteger(res.body.time) && res.body.time >= before && res.body.time <= Date.now());
    });
  });

  describe('[GET /] index()', () => {
    it('200 with an HTML page titled Classworks 服务端', async () => {
      const res = await app.httpRequest().get('/').expect(200).expect('Content-Type', /text\/html/);
      assert.match(res.text, /<title>Classworks 服务端<\/title>/);
    });
  });

  describe('unknown routes', () => {
    it('404 找不到路径 for an unknown path', async () => {
      const res = await app.httpRequest().get('/nope/here').expect(404);
      assert.deepStrictEqual(res.body, { success: false, message: '找不到路径: /nope/here', details: null });
    });

    it('404 for a known path with an unknown method', async () => {
      const res = await app.httpRequest().patch('/check').expect(404);
      assert.deepStrictEqual(res.body, { success: false, message: '找不到路径: /check', details: null });
    });
  });
});
