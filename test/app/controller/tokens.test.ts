import assert from 'node:assert';
import { app } from 'egg-mock/bootstrap';
import IORedis from 'ioredis';
import { createDevice, installApp, ISO_MS, overrideRateLimits, restoreRateLimits, TestInstall } from '../../support/factories';
import { eventually } from '../../support/socket';
import { CommandClient, RedisState } from '../../../app/lib/state/redis';
import type { BusMessage } from '../../../app/lib/state/types';

const err = (message: string, details: unknown = null) => ({ success: false, message, details });
const enc = encodeURIComponent;
const LIST_KEY = 'classworks-list-main';

const studentName = (token: string, body?: unknown) => {
  const req = app.httpRequest().post(`/apps/tokens/${enc(token)}/set-student-name`);
  return body === undefined ? req : req.send(body as object);
};
const teacherName = (token: string, body?: unknown) => {
  const req = app.httpRequest().post(`/apps/tokens/${enc(token)}/set-teacher-name`);
  return body === undefined ? req : req.send(body as object);
};
const putNote = (token: string, body?: unknown) => {
  const req = app.httpRequest().put(`/apps/tokens/${enc(token)}/note`);
  return body === undefined ? req : req.send(body as object);
};

/** Stores `value` (any JSON, scalars too) under `key` of the device, through the batch import. */
async function setKey(writer: TestInstall, key: string, value: unknown) {
  await app.httpRequest().post('/kv/_batchimport').set('x-app-token', writer.token).send({ [key]: value }).expect(200);
}

/** The note stored for a token, read from the database. */
async function storedNote(token: string): Promise<string | null> {
  const row = await app.model.AppInstall.findOne({ where: { token } });
  assert.ok(row, 'install row');
  return row.get('note') as string | null;
}

/** A device with a read-write classroom token (writes its KV) and a token of each kind. */
async function classroom() {
  const device = await createDevice();
  const writer = await installApp(device, { appId: 'screen', deviceType: 'classroom' });
  const kind = async (deviceType: string | null, isReadOnly = false) => installApp(device, { appId: 'phone', deviceType, isReadOnly });
  return {
    device,
    writer,
    student: await kind('student'),
    parent: await kind('parent'),
    teacher: await kind('teacher'),
    untyped: await kind(null),
    kind,
  };
}

describe('test/app/controller/tokens.test.ts', () => {
  afterEach(() => restoreRateLimits());

  describe('[POST /apps/tokens/:token/set-student-name] setStudentName()', () => {
    it('200 {success, token, name, deviceType, updatedAt} for a student token; the note is the name', async () => {
      const c = await classroom();
      await setKey(c.writer, LIST_KEY, [{ id: 1, name: '张三' }, { id: 2, name: '李四' }]);
      const before = await app.model.AppInstall.findOne({ where: { token: c.student.token } });
      const res = await studentName(c.student.token, { name: '李四' }).expect(200).expect('Content-Type', /application\/json/);
      assert.match(res.body.updatedAt, ISO_MS);
      assert.deepStrictEqual(res.body, { success: true, token: c.student.token, name: '李四', deviceType: 'student', updatedAt: res.body.updatedAt });
      assert.deepStrictEqual(Object.keys(res.body), [ 'success', 'token', 'name', 'deviceType', 'updatedAt' ]);
      const after = await app.model.AppInstall.findOne({ where: { token: c.student.token } });
      assert.strictEqual(after!.get('note'), '李四');
      assert.strictEqual((after!.get('updatedAt') as Date).toISOString(), res.body.updatedAt);
      assert.ok((after!.get('updatedAt') as Date) >= (before!.get('updatedAt') as Date));
      // Only that token changed.
      assert.strictEqual(await storedNote(c.parent.token), null);
      assert.strictEqual(await storedNote(c.writer.token), null);
    });

    it('200 for a parent token: the note (and `name` in the answer) is "<name> 家长"', async () => {
      const c = await classroom();
      await setKey(c.writer, LIST_KEY, [{ name: '张三' }]);
      const res = await studentName(c.parent.token, { name: '张三' }).expect(200);
      assert.deepStrictEqual(res.body, { success: true, token: c.parent.token, name: '张三 家长', deviceType: 'parent', updatedAt: res.body.updatedAt });
      assert.strictEqual(await storedNote(c.parent.token), '张三 家长');
    });

    it('200 for plain string elements and mixed lists; objects without a string name name nobody', async () => {
      const c = await classroom();
      await setKey(c.writer, LIST_KEY, [ '王五', { name: '赵六', seat: 3 }, { id: 7 }, { name: 8 }]);
      assert.strictEqual((await studentName(c.student.token, { name: '王五' }).expect(200)).body.name, '王五');
      assert.strictEqual((await studentName(c.student.token, { name: '赵六' }).expect(200)).body.name, '赵六');
      for (const name of [ '7', '8', 'undefined' ]) {
        assert.deepStrictEqual((await studentName(c.student.token, { name }).expect(400)).body, err('该名称不在学生列表中'));
      }
      assert.strictEqual(await storedNote(c.student.token), '赵六');
    });

    it('400 该名称不在学生列表中 for a name not on the list (an empty list names nobody); names match exactly; the note is unchanged', async () => {
      const c = await classroom();
      await setKey(c.writer, LIST_KEY, []);
      assert.deepStrictEqual((await studentName(c.student.token, { name: '张三' }).expect(400)).body, err('该名称不在学生列表中'));
      await setKey(c.writer, LIST_KEY, [ 'Anna', { name: '张三' }]);
      for (const name of [ 'anna', ' Anna', 'Anna ', '张 三' ]) {
        assert.deepStrictEqual((await studentName(c.student.token, { name }).expect(400)).body, err('该名称不在学生列表中'));
      }
      assert.strictEqual(await storedNote(c.student.token), null);
    });

    it('200 for a read-only student token (naming itself is not a KV write)', async () => {
      const c = await classroom();
      const ro = await c.kind('student', true);
      await setKey(c.writer, LIST_KEY, [ 'A' ]);
      assert.strictEqual((await studentName(ro.token, { name: 'A' }).expect(200)).body.name, 'A');
    });

    it('400 需要提供学生名称 for a missing, null, empty or blank name, before the token is looked at', async () => {
      const c = await classroom();
      for (const token of [ c.student.token, 'f'.repeat(64), c.teacher.token ]) {
        for (const body of [ undefined, {}, { name: null }, { name: '' }, { name: '   ' }, { nome: 'x' }]) {
          assert.deepStrictEqual((await studentName(token, body).expect(400)).body, err('需要提供学生名称'));
        }
      }
    });

    it('400 for a name that is not a string, holds NUL or is longer than 255 characters; 255 is accepted', async () => {
      const c = await classroom();
      for (const name of [ 5, true, false, 0, [ '张三' ], { name: '张三' }]) {
        assert.deepStrictEqual((await studentName(c.student.token, { name }).expect(400)).body, err('学生名称 必须是字符串', { field: '学生名称' }));
      }
      assert.deepStrictEqual((await studentName(c.student.token, { name: 'a\u0000b' }).expect(400)).body, err('学生名称 不能包含 NUL 字符', { field: '学生名称' }));
      const long = '名'.repeat(256);
      assert.deepStrictEqual((await studentName(c.student.token, { name: long }).expect(400)).body,
        err('学生名称 长度不能超过 255 个字符', { field: '学生名称', max: 255 }));
      await setKey(c.writer, LIST_KEY, [ long.slice(1) ]);
      assert.strictEqual((await studentName(c.parent.token, { name: long.slice(1) }).expect(200)).body.name, `${long.slice(1)} 家长`);
      assert.strictEqual(await storedNote(c.student.token), null);
    });

    it('404 Token 不存在 for an unknown, uninstalled, differently cased or impossible token', async () => {
      const c = await classroom();
      await setKey(c.writer, LIST_KEY, [ 'A' ]);
      const gone = await installApp(c.device, { deviceType: 'student' });
      await app.httpRequest().delete(`/apps/devices/${enc(c.device.uuid)}/uninstall/${gone.id}`).expect(204);
      const odd = [ 'f'.repeat(64), gone.token, c.student.token.toUpperCase(), `${c.student.token} `, 'a\u0000b', '\u0000',
        '学生', 'x'.repeat(300), '%ZZ', '../../kv', 'a/b', '\ud83d\ude00', ' ' ];
      for (const token of odd) {
        const res = await studentName(token, { name: 'A' });
        assert.strictEqual(res.status, 404, `${JSON.stringify(token)}: ${res.status} ${res.text}`);
        assert.deepStrictEqual(res.body, err('Token 不存在'));
      }
      // A malformed escape in the path is a token that cannot exist, not a 5xx.
      const raw = await app.httpRequest().post('/apps/tokens/%E0%A4%A/set-student-name').send({ name: 'A' }).expect(404);
      assert.deepStrictEqual(raw.body, err('Token 不存在'));
    });

    it('403 只有学生和家长类型的 token 可以设置名称 for teacher, classroom and untyped tokens, before the list is read', async () => {
      const c = await classroom();
      // No student list on the device: the kind is checked first.
      for (const t of [ c.teacher, c.writer, c.untyped ]) {
        assert.deepStrictEqual((await studentName(t.token, { name: 'A' }).expect(403)).body, err('只有学生和家长类型的 token 可以设置名称'));
        assert.strictEqual(await storedNote(t.token), null);
      }
    });

    it('404 设备未设置学生列表 without the key on the token\'s device (another device\'s list does not count)', async () => {
      const c = await classroom();
      const other = await classroom();
      await setKey(other.writer, LIST_KEY, [ 'A' ]);
      await setKey(c.writer, 'classworks-list-other', [ 'A' ]);
      assert.deepStrictEqual((await studentName(c.student.token, { name: 'A' }).expect(404)).body, err('设备未设置学生列表'));
      assert.deepStrictEqual((await studentName(c.parent.token, { name: 'A' }).expect(404)).body, err('设备未设置学生列表'));
      await setKey(c.writer, LIST_KEY, [ 'A' ]);
      await app.httpRequest().delete(`/kv/${LIST_KEY}`).set('x-app-token', c.writer.token).expect(204);
      assert.deepStrictEqual((await studentName(c.student.token, { name: 'A' }).expect(404)).body, err('设备未设置学生列表'));
    });

    it('400 学生列表格式错误 when the list is not an array of objects and strings (the original answered 500)', async () => {
      const c = await classroom();
      const bad = [{ name: 'A' }, 'A', 5, null, true, { 0: 'A' }, [ 'A', null ], [ 'A', 5 ], [[ 'A' ]], [ 'A', true ]];
      for (const value of bad) {
        await setKey(c.writer, LIST_KEY, value);
        const res = await studentName(c.student.token, { name: 'A' });
        assert.strictEqual(res.status, 400, `${JSON.stringify(value)}: ${res.status} ${res.text}`);
        assert.deepStrictEqual(res.body, err('学生列表格式错误', { key: LIST_KEY }));
      }
      assert.strictEqual(await storedNote(c.student.token), null);
    });

    it('counts against the per-IP limit of /apps (429 once it is used up)', async () => {
      const c = await classroom();
      await setKey(c.writer, LIST_KEY, [ 'A' ]);
      const limit = app.settings.rateLimit.ip;
      const first = await studentName(c.student.token, { name: 'A' }).expect(200);
      assert.strictEqual(first.headers['ratelimit-policy'], `${limit};w=60`);
      const used = limit - Number(/remaining=(\d+)/.exec(first.headers.ratelimit)![1]);
      const second = await studentName('f'.repeat(64), { name: 'A' }).expect(404);
      assert.strictEqual(limit - Number(/remaining=(\d+)/.exec(second.headers.ratelimit)![1]), used + 1);
      overrideRateLimits({ ip: used + 2 });
      await putNote(c.student.token, { note: 'x' }).expect(200);
      const res = await teacherName(c.teacher.token, { name: 'A' }).expect(429);
      assert.strictEqual(res.body.code, 'RATE_LIMITED');
      assert.strictEqual(res.headers['ratelimit-policy'], `${used + 2};w=60`);
    });
  });

  describe('[POST /apps/tokens/:token/set-teacher-name] setTeacherName()', () => {
    it('200 {success, token, name, deviceType, updatedAt} for a teacher token; no student list needed', async () => {
      const c = await classroom();
      const res = await teacherName(c.teacher.token, { name: '王老师' }).expect(200);
      assert.match(res.body.updatedAt, ISO_MS);
      assert.deepStrictEqual(res.body, { success: true, token: c.teacher.token, name: '王老师', deviceType: 'teacher', updatedAt: res.body.updatedAt });
      assert.deepStrictEqual(Object.keys(res.body), [ 'success', 'token', 'name', 'deviceType', 'updatedAt' ]);
      assert.strictEqual(await storedNote(c.teacher.token), '王老师');
      const listed = await app.httpRequest().get(`/apps/devices/${enc(c.device.uuid)}/apps`).expect(200);
      assert.strictEqual(listed.body.apps.find((a: { token: string }) => a.token === c.teacher.token).note, '王老师');
    });

    it('400 需要提供教师名称 for a missing or blank name, before the token is looked at', async () => {
      const c = await classroom();
      for (const token of [ c.teacher.token, 'nope', c.student.token ]) {
        for (const body of [ undefined, {}, { name: null }, { name: '' }, { name: ' \t' }]) {
          assert.deepStrictEqual((await teacherName(token, body).expect(400)).body, err('需要提供教师名称'));
        }
      }
    });

    it('400 for a name that is not a string, holds NUL or is longer than 255 characters', async () => {
      const c = await classroom();
      assert.deepStrictEqual((await teacherName(c.teacher.token, { name: 1 }).expect(400)).body, err('教师名称 必须是字符串', { field: '教师名称' }));
      assert.deepStrictEqual((await teacherName(c.teacher.token, { name: '\u0000' }).expect(400)).body, err('教师名称 不能包含 NUL 字符', { field: '教师名称' }));
      assert.deepStrictEqual((await teacherName(c.teacher.token, { name: 'x'.repeat(256) }).expect(400)).body,
        err('教师名称 长度不能超过 255 个字符', { field: '教师名称', max: 255 }));
      assert.strictEqual((await teacherName(c.teacher.token, { name: 'x'.repeat(255) }).expect(200)).body.name, 'x'.repeat(255));
    });

    it('404 Token 不存在 for an unknown or impossible token', async () => {
      for (const token of [ 'f'.repeat(64), '\u0000', 'x'.repeat(1000) ]) {
        assert.deepStrictEqual((await teacherName(token, { name: 'A' }).expect(404)).body, err('Token 不存在'));
      }
    });

    it('403 只有教师类型的 token 可以使用此接口 for student, parent, classroom and untyped tokens', async () => {
      const c = await classroom();
      for (const t of [ c.student, c.parent, c.writer, c.untyped ]) {
        assert.deepStrictEqual((await teacherName(t.token, { name: 'A' }).expect(403)).body, err('只有教师类型的 token 可以使用此接口'));
        assert.strictEqual(await storedNote(t.token), null);
      }
    });
  });

  describe('[PUT /apps/tokens/:token/note] setNote()', () => {
    it('200 {success, token, note, updatedAt} for a token of any kind; the listing shows the note', async () => {
      const c = await classroom();
      for (const t of [ c.writer, c.student, c.parent, c.teacher, c.untyped, await c.kind('classroom', true) ]) {
        const res = await putNote(t.token, { note: `备注 ${t.id}` }).expect(200);
        assert.match(res.body.updatedAt, ISO_MS);
        assert.deepStrictEqual(res.body, { success: true, token: t.token, note: `备注 ${t.id}`, updatedAt: res.body.updatedAt });
        assert.deepStrictEqual(Object.keys(res.body), [ 'success', 'token', 'note', 'updatedAt' ]);
        assert.strictEqual(await storedNote(t.token), `备注 ${t.id}`);
      }
      const listed = await app.httpRequest().get('/apps/tokens').query({ uuid: c.device.uuid }).expect(200);
      for (const t of listed.body.tokens) assert.strictEqual(t.note, `备注 ${t.id}`);
    });

    it('200 with note null for "", null or no note at all (clears it)', async () => {
      const c = await classroom();
      for (const body of [{ note: '' }, { note: null }, {}, undefined ]) {
        await putNote(c.student.token, { note: 'x' }).expect(200);
        const res = await putNote(c.student.token, body).expect(200);
        assert.strictEqual(res.body.note, null);
        assert.strictEqual(await storedNote(c.student.token), null);
      }
    });

    it('200 moves updatedAt even when the note is unchanged', async () => {
      const c = await classroom();
      const first = await putNote(c.student.token, { note: 'same' }).expect(200);
      await new Promise(resolve => setTimeout(resolve, 5));
      const second = await putNote(c.student.token, { note: 'same' }).expect(200);
      assert.ok(second.body.updatedAt > first.body.updatedAt, `${second.body.updatedAt} > ${first.body.updatedAt}`);
    });

    it('400 for a note that is not a string, holds NUL or is longer than 1000 characters; 1000 is accepted', async () => {
      const c = await classroom();
      await putNote(c.student.token, { note: 'keep' }).expect(200);
      for (const note of [ 5, true, [ 'a' ], { a: 1 }]) {
        assert.deepStrictEqual((await putNote(c.student.token, { note }).expect(400)).body, err('备注 必须是字符串', { field: '备注' }));
      }
      assert.deepStrictEqual((await putNote(c.student.token, { note: 'a\u0000' }).expect(400)).body, err('备注 不能包含 NUL 字符', { field: '备注' }));
      assert.deepStrictEqual((await putNote(c.student.token, { note: '长'.repeat(1001) }).expect(400)).body,
        err('备注 长度不能超过 1000 个字符', { field: '备注', max: 1000 }));
      assert.strictEqual(await storedNote(c.student.token), 'keep');
      assert.strictEqual((await putNote(c.student.token, { note: '长'.repeat(1000) }).expect(200)).body.note, '长'.repeat(1000));
    });

    it('400 for a malformed JSON body; 413 for a body over the limit (JSON answers, never 5xx)', async () => {
      const c = await classroom();
      let res = await app.httpRequest().put(`/apps/tokens/${c.student.token}/note`).set('content-type', 'application/json').send('{"note":');
      assert.strictEqual(res.status, 400);
      assert.strictEqual(res.body.success, false);
      res = await putNote(c.student.token, { note: 'x'.repeat(3 * 1024 * 1024) });
      assert.strictEqual(res.status, 413);
      assert.strictEqual(res.body.success, false);
      assert.strictEqual(await storedNote(c.student.token), null);
    });

    it('404 Token 不存在 for an unknown, uninstalled or impossible token', async () => {
      const d = await createDevice();
      const gone = await installApp(d);
      await app.httpRequest().delete(`/apps/devices/${enc(d.uuid)}/uninstall/${gone.id}`).expect(204);
      for (const token of [ gone.token, 'f'.repeat(64), 'a\u0000', 'x'.repeat(5000) ]) {
        assert.deepStrictEqual((await putNote(token, { note: 'x' }).expect(404)).body, err('Token 不存在'));
      }
    });

    it('every worker forgets its cached copy of the token: the next lookup reads the new note', async () => {
      const c = await classroom();
      await app.httpRequest().get('/kv/_info').set('x-app-token', c.student.token).expect(200);
      assert.strictEqual(app.tokenCache.get(c.student.token)?.note, null);
      await putNote(c.student.token, { note: 'new' }).expect(200);
      assert.strictEqual(app.tokenCache.get(c.student.token), undefined);
      await app.httpRequest().get('/kv/_info').set('x-app-token', c.student.token).expect(200);
      assert.strictEqual(app.tokenCache.get(c.student.token)?.note, 'new');
      await setKey(c.writer, LIST_KEY, [ 'S' ]);
      await studentName(c.student.token, { name: 'S' }).expect(200);
      assert.strictEqual(app.tokenCache.get(c.student.token), undefined);
      await app.httpRequest().get('/kv/_info').set('x-app-token', c.student.token).expect(200);
      assert.strictEqual(app.tokenCache.get(c.student.token)?.note, 'S');
    });
  });

  describe('token-updated on the shared-state bus', () => {
    let other: RedisState | undefined;
    afterEach(async () => {
      await other?.close();
      other = undefined;
    });

    it('a note change publishes {type:"token-updated", token}; every instance receives it and drops the token from its cache', async () => {
      const c = await classroom();
      const seen: BusMessage[] = [];
      app.sharedState.onMessage(m => seen.push(m));
      const elsewhere: BusMessage[] = [];
      const s = app.settings;
      if (app.sharedState.kind === 'redis') {
        // Another instance on the same Redis, as another worker or server would be.
        other = new RedisState(new IORedis(s.redisUrl!) as unknown as CommandClient, {
          url: s.redisUrl!, prefix: s.redisPrefix, heartbeatMs: s.presenceHeartbeatMs, ttlMs: s.presenceTtlMs, logger: app.coreLogger,
        });
        await other.start();
        other.onMessage(m => elsewhere.push(m));
      }
      await putNote(c.teacher.token, { note: 'n' }).expect(200);
      await teacherName(c.teacher.token, { name: 'T' }).expect(200);
      const updates = (list: BusMessage[]) => list.filter(m => m.type === 'token-updated');
      assert.deepStrictEqual(updates(seen), [{ type: 'token-updated', token: c.teacher.token }, { type: 'token-updated', token: c.teacher.token }]);
      if (other) {
        await eventually(() => assert.strictEqual(updates(elsewhere).length, 2));
        assert.deepStrictEqual(updates(elsewhere), updates(seen));
        // And the other way round: this worker drops a token another instance announces.
        await app.httpRequest().get('/kv/_info').set('x-app-token', c.student.token).expect(200);
        assert.ok(app.tokenCache.get(c.student.token));
        await other.publish({ type: 'token-updated', token: c.student.token });
        await eventually(() => assert.strictEqual(app.tokenCache.get(c.student.token), undefined));
      } else {
        await app.httpRequest().get('/kv/_info').set('x-app-token', c.student.token).expect(200);
        assert.ok(app.tokenCache.get(c.student.token));
        await app.sharedState.publish({ type: 'token-updated', token: c.student.token });
        assert.strictEqual(app.tokenCache.get(c.student.token), undefined);
      }
    });
  });
});
