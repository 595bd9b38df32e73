import assert from 'node:assert';
import bcrypt from 'bcryptjs';
import { app } from 'egg-mock/bootstrap';
import type { Transaction } from 'sequelize';
import type { Response } from 'supertest';
import { configLockName } from '../../../app/service/autoAuth';
import { createDevice, ISO_MS, overrideRateLimits, restoreRateLimits, type TestDevice } from '../../support/factories';
import { assertTooMany } from '../../support/assertions';

const err = (message: string, details: unknown = null) => ({ success: false, message, details });
const TOKEN = /^[0-9a-f]{64}$/;
const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const TYPE_MESSAGE = '设备类型必须是以下之一: teacher, student, classroom, parent';
const TYPE_ERROR = err(TYPE_MESSAGE, { field: 'deviceType', allowed: [ 'teacher', 'student', 'classroom', 'parent' ] });
const READONLY_ERROR = err('isReadOnly 必须是布尔值 (true 或 false)', { field: 'isReadOnly' });
const NS_TOO_LONG = err('namespace 无效：需要 1 到 191 个字符的字符串', { field: 'namespace', max: 191 });

const enc = encodeURIComponent;
const configsPath = (d: TestDevice) => `/auto-auth/devices/${enc(d.uuid)}/auth-configs`;
const configPath = (d: TestDevice, id: string) => `/auto-auth/devices/${enc(d.uuid)}/auth-configs/${enc(id)}`;
const namespacePath = (d: TestDevice) => `/auto-auth/devices/${enc(d.uuid)}/namespace`;

function login(body: unknown) {
  return app.httpRequest().post('/apps/auth/token').send(body as object);
}

/** Creates a config through the API (device password in `pw` when the device has one). */
async function addConfig(d: TestDevice, body: Record<string, unknown>, pw?: string) {
  const req = app.httpRequest().post(configsPath(d));
  if (pw) req.set('x-device-password', pw);
  const res = await req.send(body).expect(201);
  return res.body.config as { id: string; hasPassword: boolean; password: null; deviceType: string | null; isReadOnly: boolean; createdAt: string };
}

async function listConfigs(d: TestDevice, pw?: string) {
  const req = app.httpRequest().get(configsPath(d));
  if (pw) req.set('x-device-password', pw);
  const res = await req.expect(200);
  return res.body.configs as Array<{ id: string; hasPassword: boolean; deviceType: string | null; isReadOnly: boolean; createdAt: string; updatedAt: string }>;
}

async function storedConfig(id: string) {
  return await app.model.AutoAuthConfig.findByPk(id, { raw: true }) as unknown as { password: string | null; deviceId: number; deviceType: string | null; isReadOnly: unknown } | null;
}

/**
 * Stores `n` configs with passwords `pw-00`, `pw-01`, … straight into the table (cheap cost-4
 * hashes, as imported data may have), oldest first; the API would refuse more than the cap.
 */
async function storeConfigs(d: TestDevice, n: number) {
  const base = Date.now() - 3600000;
  await app.model.AutoAuthConfig.bulkCreate(Array.from({ length: n }, (_, i) => {
    const at = new Date(base + i * 1000);
    const nn = String(i).padStart(2, '0');
    return { id: `stored-${d.id}-${nn}`, deviceId: d.id, password: bcrypt.hashSync(`pw-${nn}`, 4), deviceType: 'student', isReadOnly: false, createdAt: at, updatedAt: at };
  }));
}

const LIMIT_ERROR = { success: false, message: '该设备的自动授权配置已达上限 (20)', details: { max: 20 }, code: 'AUTO_AUTH_CONFIG_LIMIT' };

/** The default config every device gets (no password, classroom, writable). */
async function defaultConfig(d: TestDevice, pw?: string) {
  const configs = await listConfigs(d, pw);
  const found = configs.find(c => !c.hasPassword);
  assert.ok(found, 'default config');
  return found;
}

/** A 4xx with the contract's JSON error body. */
function assertClientError(res: Response, what: string) {
  assert.ok(res.status >= 400 && res.status < 500, `${what}: ${res.status} ${JSON.stringify(res.body)}`);
  assert.match(res.headers['content-type'], /application\/json/, what);
  assert.strictEqual(res.body.success, false, what);
  assert.strictEqual(typeof res.body.message, 'string', what);
}

const HOSTILE: unknown[] = [ 42, -1.5, true, {}, { $gt: '' }, [], [ 'a' ], 'x'.repeat(100000), 'a\u0000b', '\u0000', '\ud800' ];

describe('test/app/controller/autoAuth.test.ts', () => {
  afterEach(() => restoreRateLimits());

  describe('[POST /apps/auth/token] token()', () => {
    it('201 {success, token, deviceType:"classroom", isReadOnly:false, installedAt} with the namespace alone on a fresh device', async () => {
      const d = await createDevice();
      const res = await login({ namespace: d.uuid, appId: 'classworks' }).expect(201).expect('Content-Type', /application\/json/);
      assert.deepStrictEqual(Object.keys(res.body), [ 'success', 'token', 'deviceType', 'isReadOnly', 'installedAt' ]);
      assert.strictEqual(res.body.success, true);
      assert.match(res.body.token, TOKEN);
      assert.strictEqual(res.body.deviceType, 'classroom');
      assert.strictEqual(res.body.isReadOnly, false);
      assert.match(res.body.installedAt, ISO_MS);
      const info = await app.httpRequest().get('/kv/_info').set('x-app-token', res.body.token).expect(200);
      assert.strictEqual(info.body.device.uuid, d.uuid);
      await app.httpRequest().post('/kv/k').set('x-app-token', res.body.token).send({ a: 1 }).expect(200);
    });

    it('creates a new install each time, with the appId, note null and the config\'s kind', async () => {
      const d = await createDevice();
      const a = await login({ namespace: d.uuid, appId: 'app-a' }).expect(201);
      const b = await login({ namespace: d.uuid, appId: 'app-a' }).expect(201);
      assert.notStrictEqual(a.body.token, b.body.token);
      const tokens = await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid }).expect(200);
      assert.deepStrictEqual(tokens.body.tokens.map((t: { token: string }) => t.token).sort(), [ a.body.token, b.body.token ].sort());
      for (const t of tokens.body.tokens) {
        assert.strictEqual(t.appId, 'app-a');
        assert.strictEqual(t.note, null);
        assert.strictEqual(t.installedAt, t.token === a.body.token ? a.body.installedAt : b.body.installedAt);
      }
      const row = await app.model.AppInstall.findOne({ where: { token: a.body.token }, raw: true }) as unknown as { deviceType: string; isReadOnly: unknown; note: null };
      assert.strictEqual(row.deviceType, 'classroom');
      assert.strictEqual(!!Number(row.isReadOnly), false);
      assert.strictEqual(row.note, null);
    });

    it('201 with the password of a config: deviceType and isReadOnly copied from it; a read-only token cannot write', async () => {
      const d = await createDevice();
      await addConfig(d, { password: 'student-pw', deviceType: 'student', isReadOnly: true });
      await addConfig(d, { password: 'teacher-pw', deviceType: 'teacher' });
      const student = await login({ namespace: d.uuid, password: 'student-pw', appId: 'cw' }).expect(201);
      assert.deepStrictEqual({ ...student.body, token: 't', installedAt: 'i' }, {
        success: true, token: 't', deviceType: 'student', isReadOnly: true, installedAt: 'i',
      });
      const teacher = await login({ namespace: d.uuid, password: 'teacher-pw', appId: 'cw' }).expect(201);
      assert.strictEqual(teacher.body.deviceType, 'teacher');
      assert.strictEqual(teacher.body.isReadOnly, false);

      await app.httpRequest().get('/kv/_info').set('x-app-token', student.body.token).expect(200);
      const res = await app.httpRequest().post('/kv/k').set('x-app-token', student.body.token).send({ a: 1 }).expect(403);
      assert.deepStrictEqual(res.body, err('当前token为只读模式,无法修改数据'));
      await app.httpRequest().get('/kv/k').set('x-app-token', teacher.body.token).expect(404);
      await app.httpRequest().post('/kv/k').set('x-app-token', teacher.body.token).send({ a: 1 }).expect(200);
    });

    it('201 with deviceType null when the matched config has none', async () => {
      const d = await createDevice();
      await addConfig(d, { password: 'pw' });
      const res = await login({ namespace: d.uuid, password: 'pw', appId: 'cw' }).expect(201);
      assert.strictEqual(res.body.deviceType, null);
      assert.strictEqual(res.body.isReadOnly, false);
    });

    it('201 by a namespace given at registration; the uuid is then not a namespace (404)', async () => {
      await app.httpRequest().post('/devices').send({ uuid: 'u-1', deviceName: 'n', namespace: 'class-3a' }).expect(201);
      await login({ namespace: 'class-3a', appId: 'cw' }).expect(201);
      const res = await login({ namespace: 'u-1', appId: 'cw' }).expect(404);
      assert.deepStrictEqual(res.body, err('设备不存在或 namespace 不正确'));
    });

    it('resolves a device\'s own namespace first, then the uuid of a device without one (NULL: its uuid was taken as a namespace)', async () => {
      await app.httpRequest().post('/devices').send({ uuid: 'squatter', deviceName: 'n', namespace: 'victim' }).expect(201);
      await app.httpRequest().post('/devices').send({ uuid: 'victim', deviceName: 'n' }).expect(201);
      const deviceOf = async (namespace: string) => {
        const t = await login({ namespace, appId: 'cw' }).expect(201);
        return (await app.httpRequest().get('/kv/_token').set('x-app-token', t.body.token).expect(200)).body.device;
      };
      let device = await deviceOf('victim');
      assert.deepStrictEqual([ device.uuid, device.namespace ], [ 'squatter', 'victim' ]);
      await app.httpRequest().put('/auto-auth/devices/squatter/namespace').send({ namespace: 'elsewhere' }).expect(200);
      for (const namespace of [ 'victim', '  victim ' ]) {
        device = await deviceOf(namespace);
        assert.deepStrictEqual([ device.uuid, device.namespace ], [ 'victim', 'victim' ]);
      }
      assert.strictEqual((await deviceOf('elsewhere')).uuid, 'squatter');
      // A device with a namespace of its own is not found by its uuid.
      await login({ namespace: 'squatter', appId: 'cw' }).expect(404);
    });

    it('matches the namespace exactly (case-sensitive), and ignores surrounding whitespace only when nothing matches exactly', async () => {
      await app.httpRequest().post('/devices').send({ uuid: 'u-1', deviceName: 'n', namespace: 'Class' }).expect(201);
      await app.httpRequest().post('/devices').send({ uuid: ' padded ', deviceName: 'n' }).expect(201); // namespace = uuid, spaces kept
      await login({ namespace: '  Class ', appId: 'cw' }).expect(201);
      await login({ namespace: 'class', appId: 'cw' }).expect(404);
      await login({ namespace: ' padded ', appId: 'cw' }).expect(201);
      await login({ namespace: 'padded', appId: 'cw' }).expect(404);
    });

    it('"" and null passwords mean "no password"', async () => {
      const d = await createDevice();
      for (const password of [ '', null ]) {
        const res = await login({ namespace: d.uuid, password, appId: 'cw' }).expect(201);
        assert.strictEqual(res.body.deviceType, 'classroom');
      }
    });

    it('errors in the contract\'s order: namespace, appId, device, password', async () => {
      const d = await createDevice();
      await addConfig(d, { password: 'right' });
      let res = await login({}).expect(400);
      assert.deepStrictEqual(res.body, err('需要提供 namespace'));
      res = await login({ password: 'x' }).expect(400);
      assert.deepStrictEqual(res.body, err('需要提供 namespace'));
      res = await login({ namespace: 'nobody' }).expect(400);
      assert.deepStrictEqual(res.body, err('需要提供 appId'));
      res = await login({ namespace: 'nobody', appId: 'cw', password: 'right' }).expect(404);
      assert.deepStrictEqual(res.body, err('设备不存在或 namespace 不正确'));
      res = await login({ namespace: d.uuid, appId: 'cw', password: 'wrong' }).expect(401);
      assert.deepStrictEqual(res.body, err('密码不正确'));
    });

    it('400 需要提供 namespace when it is missing, null, empty or blank, or when there is no JSON object body', async () => {
      for (const namespace of [ undefined, null, '', '   ' ]) {
        const res = await login({ namespace, appId: 'cw' }).expect(400);
        assert.deepStrictEqual(res.body, err('需要提供 namespace'));
      }
      for (const body of [[ 'a' ], 'text' ]) {
        const res = await login(body).expect(400);
        assert.deepStrictEqual(res.body, err('需要提供 namespace'));
      }
      const res = await app.httpRequest().post('/apps/auth/token').expect(400);
      assert.deepStrictEqual(res.body, err('需要提供 namespace'));
    });

    it('400 with a clear message for a namespace that is not a string or longer than 191 characters (not 500)', async () => {
      for (const namespace of [ 42, true, { a: 1 }, [ 'x' ]]) {
        const res = await login({ namespace, appId: 'cw' }).expect(400);
        assert.deepStrictEqual(res.body, err('namespace 必须是字符串', { field: 'namespace' }));
      }
      const res = await login({ namespace: 'n'.repeat(192), appId: 'cw' }).expect(400);
      assert.deepStrictEqual(res.body, NS_TOO_LONG);
      const d = await createDevice({ uuid: 'n'.repeat(191) });
      await login({ namespace: d.uuid, appId: 'cw' }).expect(201);
    });

    it('400 需要提供 appId when missing, null or empty; 400 应用ID无效 when not a string or too long', async () => {
      const d = await createDevice();
      for (const appId of [ undefined, null, '' ]) {
        const res = await login({ namespace: d.uuid, appId }).expect(400);
        assert.deepStrictEqual(res.body, err('需要提供 appId'));
      }
      for (const appId of [ 7, {}, [ 'a' ], 'a'.repeat(192) ]) {
        const res = await login({ namespace: d.uuid, appId }).expect(400);
        assert.deepStrictEqual(res.body, err('应用ID无效：需要 1 到 191 个字符的字符串', { field: 'appId' }));
      }
    });

    it('400 with a clear message for a password that is not a string or longer than 72 bytes (no bcrypt truncation match)', async () => {
      const d = await createDevice();
      const long = 'p'.repeat(72);
      await addConfig(d, { password: long });
      await login({ namespace: d.uuid, password: long, appId: 'cw' }).expect(201);
      let res = await login({ namespace: d.uuid, password: `${long}x`, appId: 'cw' }).expect(400);
      assert.deepStrictEqual(res.body, err('密码不能超过 72 个字节', { field: 'password', max: 72 }));
      // 24 three-byte characters are 72 bytes; one more is 75.
      res = await login({ namespace: d.uuid, password: '密'.repeat(25), appId: 'cw' }).expect(400);
      assert.deepStrictEqual(res.body, err('密码不能超过 72 个字节', { field: 'password', max: 72 }));
      for (const password of [ 123, false, { a: 1 }, [ 'pw' ]]) {
        res = await login({ namespace: d.uuid, password, appId: 'cw' }).expect(400);
        assert.deepStrictEqual(res.body, err('密码必须是字符串', { field: 'password' }));
      }
    });

    it('401 密码不正确 when a password is given and only the password-less config exists', async () => {
      const d = await createDevice();
      const res = await login({ namespace: d.uuid, password: 'anything', appId: 'cw' }).expect(401);
      assert.deepStrictEqual(res.body, err('密码不正确'));
    });

    it('401 需要提供密码 without a password when the device has no password-less config', async () => {
      const d = await createDevice();
      const open = await defaultConfig(d);
      await app.httpRequest().delete(configPath(d, open.id)).expect(204);
      await addConfig(d, { password: 'pw' });
      const res = await login({ namespace: d.uuid, appId: 'cw' }).expect(401);
      assert.deepStrictEqual(res.body, err('需要提供密码'));
    });

    it('the password-less config grants nothing once the device has a device password; deleting that password re-opens it', async () => {
      const d = await createDevice();
      await addConfig(d, { password: 'class-pw', deviceType: 'student' });
      await app.httpRequest().post(`/devices/${enc(d.uuid)}/password`).send({ newPassword: 'device-pw' }).expect(200);
      let res = await login({ namespace: d.uuid, appId: 'cw' }).expect(401);
      assert.deepStrictEqual(res.body, err('需要提供密码'));
      // Password configs keep working; the device password itself is not a config password.
      await login({ namespace: d.uuid, password: 'class-pw', appId: 'cw' }).expect(201);
      res = await login({ namespace: d.uuid, password: 'device-pw', appId: 'cw' }).expect(401);
      assert.deepStrictEqual(res.body, err('密码不正确'));
      await app.httpRequest().delete(`/devices/${enc(d.uuid)}/password`).set('x-device-password', 'device-pw').expect(200);
      res = await login({ namespace: d.uuid, appId: 'cw' }).expect(201);
      assert.strictEqual(res.body.deviceType, 'classroom');
    });

    it('verifies hashes stored by another bcrypt implementation ($2a$, $2y$, cost 8)', async () => {
      const d = await createDevice();
      const c = await addConfig(d, { password: 'temp' });
      await app.model.AutoAuthConfig.update({ password: bcrypt.hashSync('legacy', 8).replace(/^\$2[ab]\$/, '$2y$') }, { where: { id: c.id } });
      await login({ namespace: d.uuid, password: 'legacy', appId: 'cw' }).expect(201);
      await login({ namespace: d.uuid, password: 'temp', appId: 'cw' }).expect(401);
    });

    it('verifies a password against at most 20 configs, oldest first (more can only come from imported data)', async () => {
      const d = await createDevice();
      await storeConfigs(d, 22);
      overrideRateLimits({ password: 0 });
      for (const pw of [ 'pw-00', 'pw-19' ]) {
        const res = await login({ namespace: d.uuid, password: pw, appId: 'cw' }).expect(201);
        assert.strictEqual(res.body.deviceType, 'student');
      }
      for (const pw of [ 'pw-20', 'pw-21' ]) {
        const res = await login({ namespace: d.uuid, password: pw, appId: 'cw' }).expect(401);
        assert.deepStrictEqual(res.body, err('密码不正确'));
      }
      // The password-less default config is not among the 20.
      await login({ namespace: d.uuid, appId: 'cw' }).expect(201);
    });

    describe('failed attempts (RATE_LIMIT_PASSWORD per client IP and namespace)', () => {
      it('429 with JSON body and RateLimit-Policy, RateLimit, Retry-After after the limit of failures, even for the right password', async () => {
        const d = await createDevice();
        await addConfig(d, { password: 'pw' });
        overrideRateLimits({ password: 2 });
        for (let i = 0; i < 2; i++) {
          const res = await login({ namespace: d.uuid, password: 'bad', appId: 'cw' }).expect(401);
          assert.deepStrictEqual(res.body, err('密码不正确'));
        }
        assertTooMany(await login({ namespace: d.uuid, password: 'pw', appId: 'cw' }), 2, 'attempts');
        assertTooMany(await login({ namespace: d.uuid, appId: 'cw' }), 2, 'attempts');
        const tokens = await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid }).expect(200);
        assert.deepStrictEqual(tokens.body.tokens, []);
      });

      it('401 up to RATE_LIMIT_PASSWORD (default 10) failures, the next attempt 429', async () => {
        const d = await createDevice();
        await addConfig(d, { password: 'pw' });
        const limit = app.config.classworks.rateLimit.password;
        assert.strictEqual(limit, 10);
        for (let i = 0; i < limit; i++) await login({ namespace: d.uuid, password: `bad-${i}`, appId: 'cw' }).expect(401);
        assertTooMany(await login({ namespace: d.uuid, password: 'pw', appId: 'cw' }), limit, 'attempts');
      });

      it('a missing password where one is needed counts as a failure too', async () => {
        const d = await createDevice({ password: 'device-pw' });
        overrideRateLimits({ password: 2 });
        await login({ namespace: d.uuid, appId: 'cw' }).expect(401);
        await login({ namespace: d.uuid, appId: 'cw' }).expect(401);
        assertTooMany(await login({ namespace: d.uuid, appId: 'cw' }), 2, 'attempts');
      });

      it('counts per namespace: another namespace from the same IP still works; successes and 404s are not counted', async () => {
        const a = await createDevice();
        const b = await createDevice();
        await addConfig(a, { password: 'pw' });
        overrideRateLimits({ password: 2 });
        for (let i = 0; i < 3; i++) await login({ namespace: a.uuid, password: 'pw', appId: 'cw' }).expect(201);
        for (let i = 0; i < 3; i++) await login({ namespace: 'nobody', password: 'pw', appId: 'cw' }).expect(404);
        await login({ namespace: a.uuid, password: 'bad', appId: 'cw' }).expect(401);
        await login({ namespace: a.uuid, password: 'pw', appId: 'cw' }).expect(201);
        await login({ namespace: a.uuid, password: 'bad', appId: 'cw' }).expect(401);
        assertTooMany(await login({ namespace: a.uuid, password: 'pw', appId: 'cw' }), 2, 'attempts');
        await login({ namespace: b.uuid, appId: 'cw' }).expect(201);
      });

      it('is separate from the device-password throttle of the same device', async () => {
        const d = await createDevice({ password: 'device-pw' });
        await addConfig(d, { password: 'pw' }, 'device-pw');
        overrideRateLimits({ password: 2 });
        for (let i = 0; i < 2; i++) await login({ namespace: d.uuid, password: 'bad', appId: 'cw' }).expect(401);
        await app.httpRequest().get(configsPath(d)).set('x-device-password', 'device-pw').expect(200);
      });

      it('0 disables it', async () => {
        const d = await createDevice();
        overrideRateLimits({ password: 0 });
        for (let i = 0; i < 5; i++) await login({ namespace: d.uuid, password: 'bad', appId: 'cw' }).expect(401);
        await login({ namespace: d.uuid, appId: 'cw' }).expect(201);
      });
    });

    it('hostile values in every field answer 4xx JSON, never 5xx (appId is free text: any 1..191 characters are data)', async () => {
      const d = await createDevice();
      overrideRateLimits({ ip: 0 });
      for (const v of HOSTILE) {
        for (const body of [
          { namespace: v, appId: 'cw' },
          { namespace: d.uuid, appId: v },
          { namespace: d.uuid, appId: 'cw', password: v },
        ]) {
          const res = await login(body);
          const label = JSON.stringify(body).slice(0, 80);
          if (body.appId === v && typeof v === 'string' && v.length <= 191 && (v as string & { isWellFormed(): boolean }).isWellFormed()) {
            assert.strictEqual(res.status, 201, label);
          } else {
            assertClientError(res, label);
          }
        }
      }
    });

    it('counts against the per-IP limit like every /apps route', async () => {
      const d = await createDevice(); // POST /devices is the first request counted
      overrideRateLimits({ ip: 3 });
      await login({ namespace: d.uuid, appId: 'cw' }).expect(201).expect('RateLimit-Policy', '3;w=60');
      await login({ namespace: d.uuid, appId: 'cw' }).expect(201);
      const res = await login({ namespace: d.uuid, appId: 'cw' }).expect(429);
      assert.strictEqual(res.body.code, 'RATE_LIMITED');
    });
  });

  describe('[GET /auto-auth/devices/:uuid/auth-configs] list()', () => {
    it('200 with the default config of a new device: {id, hasPassword:false, password:null, deviceType:"classroom", isReadOnly:false, createdAt, updatedAt}', async () => {
      const d = await createDevice();
      const res = await app.httpRequest().get(configsPath(d)).expect(200).expect('Content-Type', /application\/json/);
      assert.deepStrictEqual(Object.keys(res.body), [ 'success', 'configs' ]);
      assert.strictEqual(res.body.success, true);
      assert.strictEqual(res.body.configs.length, 1);
      const [ c ] = res.body.configs;
      assert.deepStrictEqual(Object.keys(c), [ 'id', 'hasPassword', 'password', 'deviceType', 'isReadOnly', 'createdAt', 'updatedAt' ]);
      assert.match(c.id, UUID_V7);
      assert.deepStrictEqual({ ...c, id: 'x', createdAt: 'c', updatedAt: 'u' }, {
        id: 'x', hasPassword: false, password: null, deviceType: 'classroom', isReadOnly: false, createdAt: 'c', updatedAt: 'u',
      });
      assert.match(c.createdAt, ISO_MS);
      assert.match(c.updatedAt, ISO_MS);
    });

    it('200 newest first; password is always null, hasPassword tells; only the device\'s own configs', async () => {
      const d = await createDevice();
      const other = await createDevice();
      await addConfig(other, { password: 'other' });
      const a = await addConfig(d, { password: 'pw-a', deviceType: 'teacher' });
      const b = await addConfig(d, { password: 'pw-b', deviceType: 'parent', isReadOnly: true });
      const configs = await listConfigs(d);
      assert.deepStrictEqual(configs.map(c => c.id).slice(0, 2), [ b.id, a.id ]);
      assert.strictEqual(configs.length, 3);
      assert.deepStrictEqual(configs.map(c => [ c.hasPassword, (c as { password?: unknown }).password, c.deviceType, c.isReadOnly ]), [
        [ true, null, 'parent', true ],
        [ true, null, 'teacher', false ],
        [ false, null, 'classroom', false ],
      ]);
      assert.ok(!JSON.stringify(configs).includes('pw-'));
      assert.ok(!JSON.stringify(configs).includes('$2'));
    });

    it('device credentials: 401 需要提供密码或JWT token without, 401 密码错误 wrong, 200 with x-device-password', async () => {
      const d = await createDevice({ password: 'pw' });
      let res = await app.httpRequest().get(configsPath(d)).expect(401);
      assert.deepStrictEqual(res.body, err('需要提供密码或JWT token'));
      res = await app.httpRequest().get(configsPath(d)).set('x-device-password', 'bad').expect(401);
      assert.deepStrictEqual(res.body, err('密码错误'));
      res = await app.httpRequest().get(configsPath(d)).set('x-device-password', 'pw').expect(200);
      assert.strictEqual(res.body.configs.length, 1);
      await app.httpRequest().get(configsPath(d)).query({ password: 'pw' }).expect(200);
    });

    it('404 设备不存在 for an unknown device; 400 设备UUID不匹配 when the header names another device', async () => {
      let res = await app.httpRequest().get('/auto-auth/devices/nobody/auth-configs').expect(404);
      assert.deepStrictEqual(res.body, err('设备不存在'));
      const a = await createDevice();
      const b = await createDevice();
      res = await app.httpRequest().get(configsPath(a)).set('x-device-uuid', b.uuid).expect(400);
      assert.deepStrictEqual(res.body, err('设备UUID不匹配', { sources: [ 'path', 'header' ] }));
    });
  });

  describe('[POST /auto-auth/devices/:uuid/auth-configs] create()', () => {
    it('201 {success, config:{id, hasPassword, password:null, deviceType, isReadOnly, createdAt}}', async () => {
      const d = await createDevice();
      const res = await app.httpRequest().post(configsPath(d)).send({ password: 'class-pw', deviceType: 'student', isReadOnly: true })
        .expect(201).expect('Content-Type', /application\/json/);
      assert.deepStrictEqual(Object.keys(res.body), [ 'success', 'config' ]);
      assert.deepStrictEqual(Object.keys(res.body.config), [ 'id', 'hasPassword', 'password', 'deviceType', 'isReadOnly', 'createdAt' ]);
      const { id, createdAt } = res.body.config;
      assert.match(id, UUID_V7);
      assert.match(createdAt, ISO_MS);
      assert.deepStrictEqual(res.body, {
        success: true,
        config: { id, hasPassword: true, password: null, deviceType: 'student', isReadOnly: true, createdAt },
      });
      const listed = (await listConfigs(d)).find(c => c.id === id);
      assert.ok(listed);
      assert.strictEqual(listed.createdAt, createdAt);
    });

    it('stores the password as a bcrypt hash of cost >= 10, never in plain text', async () => {
      const d = await createDevice();
      const c = await addConfig(d, { password: 'plain-class-pw' });
      const row = await storedConfig(c.id);
      assert.ok(row);
      assert.strictEqual(row.deviceId, d.id);
      const m = /^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$/.exec(row.password ?? '');
      assert.ok(m, `not a bcrypt hash: ${row.password}`);
      assert.ok(Number(m[1]) >= 10);
      assert.ok(bcrypt.compareSync('plain-class-pw', row.password!));
      assert.ok(!row.password!.includes('plain-class-pw'));
    });

    it('defaults: deviceType null, isReadOnly false; null and "" deviceType are null, null isReadOnly is false', async () => {
      const d = await createDevice();
      let c = await addConfig(d, { password: 'a' });
      assert.deepStrictEqual([ c.hasPassword, c.deviceType, c.isReadOnly ], [ true, null, false ]);
      c = await addConfig(d, { password: 'b', deviceType: null, isReadOnly: null });
      assert.deepStrictEqual([ c.deviceType, c.isReadOnly ], [ null, false ]);
      c = await addConfig(d, { password: 'c', deviceType: '' });
      assert.strictEqual(c.deviceType, null);
      for (const deviceType of [ 'teacher', 'student', 'classroom', 'parent' ]) {
        c = await addConfig(d, { password: `pw-${deviceType}`, deviceType, isReadOnly: false });
        assert.strictEqual(c.deviceType, deviceType);
      }
    });

    it('"", null or no password mean none: 201 once the default is gone, 400 该密码的自动授权配置已存在 while a password-less config exists', async () => {
      const d = await createDevice();
      for (const body of [{}, { password: '' }, { password: null }, { deviceType: 'teacher' }]) {
        const res = await app.httpRequest().post(configsPath(d)).send(body).expect(400);
        assert.deepStrictEqual(res.body, err('该密码的自动授权配置已存在'));
      }
      await app.httpRequest().delete(configPath(d, (await defaultConfig(d)).id)).expect(204);
      const c = await addConfig(d, { password: '', deviceType: 'parent' });
      assert.deepStrictEqual([ c.hasPassword, c.deviceType ], [ false, 'parent' ]);
      assert.strictEqual((await storedConfig(c.id))?.password, null);
      assert.strictEqual((await listConfigs(d)).length, 1);
    });

    it('400 该密码的自动授权配置已存在 for a password another config of the device has; another device may use it', async () => {
      const d = await createDevice();
      await addConfig(d, { password: 'same', deviceType: 'teacher' });
      const res = await app.httpRequest().post(configsPath(d)).send({ password: 'same', deviceType: 'student' }).expect(400);
      assert.deepStrictEqual(res.body, err('该密码的自动授权配置已存在'));
      assert.strictEqual((await listConfigs(d)).length, 2);
      await addConfig(d, { password: 'Same' });
      await addConfig(await createDevice(), { password: 'same' });
    });

    it('400 该设备的自动授权配置已达上限 (20), code AUTO_AUTH_CONFIG_LIMIT, for a 21st config (checked before the duplicate); deleting one makes room', async () => {
      const d = await createDevice(); // the default config is the first
      await storeConfigs(d, 19);
      assert.strictEqual((await listConfigs(d)).length, 20);
      for (const body of [{ password: 'new-pw' }, { password: 'pw-00' }, {}, { deviceType: 'teacher' }]) {
        const res = await app.httpRequest().post(configsPath(d)).send(body).expect(400);
        assert.deepStrictEqual(res.body, LIMIT_ERROR);
      }
      assert.strictEqual((await listConfigs(d)).length, 20);
      await app.httpRequest().delete(configPath(d, `stored-${d.id}-07`)).expect(204);
      await addConfig(d, { password: 'new-pw', deviceType: 'teacher' });
      const res = await app.httpRequest().post(configsPath(d)).send({ password: 'one-more' }).expect(400);
      assert.deepStrictEqual(res.body, LIMIT_ERROR);
      await login({ namespace: d.uuid, password: 'new-pw', appId: 'cw' }).expect(201);
      // The cap is per device.
      await addConfig(await createDevice(), { password: 'new-pw' });
    });

    it('two concurrent creates with the same password: one 201, one 400', async () => {
      const d = await createDevice();
      const results = await Promise.all([ 1, 2 ].map(() => app.httpRequest().post(configsPath(d)).send({ password: 'race' })));
      assert.deepStrictEqual(results.map(r => r.status).sort(), [ 201, 400 ]);
      assert.strictEqual((await listConfigs(d)).filter(c => c.hasPassword).length, 1);
    });

    it(`400 ${TYPE_MESSAGE} for any other deviceType`, async () => {
      const d = await createDevice();
      for (const deviceType of [ 'admin', 'Teacher', ' teacher', 5, true, {}, [ 'teacher' ]]) {
        const res = await app.httpRequest().post(configsPath(d)).send({ password: 'x', deviceType }).expect(400);
        assert.deepStrictEqual(res.body, TYPE_ERROR);
      }
      assert.strictEqual((await listConfigs(d)).length, 1);
    });

    it('400 with a clear message for an isReadOnly that is not a boolean', async () => {
      const d = await createDevice();
      for (const isReadOnly of [ 'true', 1, 0, {}, [ true ]]) {
        const res = await app.httpRequest().post(configsPath(d)).send({ password: 'x', isReadOnly }).expect(400);
        assert.deepStrictEqual(res.body, READONLY_ERROR);
      }
    });

    it('400 with a clear message for a password that is not a string or longer than 72 bytes; checked before deviceType', async () => {
      const d = await createDevice();
      for (const password of [ 5, true, { a: 1 }, [ 'x' ]]) {
        const res = await app.httpRequest().post(configsPath(d)).send({ password, deviceType: 'bad' }).expect(400);
        assert.deepStrictEqual(res.body, err('密码必须是字符串', { field: 'password' }));
      }
      const res = await app.httpRequest().post(configsPath(d)).send({ password: 'x'.repeat(73) }).expect(400);
      assert.deepStrictEqual(res.body, err('密码不能超过 72 个字节', { field: 'password', max: 72 }));
      await addConfig(d, { password: 'x'.repeat(72) });
    });

    it('ignores other fields (no mass assignment of id, deviceId, dates)', async () => {
      const d = await createDevice();
      const other = await createDevice();
      const c = await addConfig(d, { password: 'p', id: 'my-id', deviceId: other.id, createdAt: '2000-01-01T00:00:00.000Z', hasPassword: false });
      assert.notStrictEqual(c.id, 'my-id');
      assert.notStrictEqual(c.createdAt, '2000-01-01T00:00:00.000Z');
      assert.strictEqual(c.hasPassword, true);
      assert.strictEqual((await storedConfig(c.id))?.deviceId, d.id);
      assert.strictEqual((await listConfigs(other)).length, 1);
    });

    it('device credentials: 401 without the device password (nothing created), 201 with it', async () => {
      const d = await createDevice({ password: 'pw' });
      const res = await app.httpRequest().post(configsPath(d)).send({ password: 'x' }).expect(401);
      assert.deepStrictEqual(res.body, err('需要提供密码或JWT token'));
      assert.strictEqual((await listConfigs(d, 'pw')).length, 1);
      await addConfig(d, { password: 'x' }, 'pw');
    });
  });

  describe('config changes under the device\'s lock (MySQL named lock)', () => {
    beforeEach(function() {
      if (app.model.getDialect() !== 'mysql') this.skip();
    });

    const BUSY = { success: false, message: '该设备的自动授权配置正在被其他请求修改，请稍后重试', details: null, code: 'AUTO_AUTH_CONFIG_BUSY' };

    async function lockQuery(sql: string, deviceId: number, transaction?: Transaction) {
      const [ row ] = await app.model.query(sql, {
        replacements: [ configLockName(app.model.config.database, deviceId) ], transaction, type: 'SELECT', raw: true,
      }) as Array<{ v: number | string | null }>;
      return row.v === null ? null : Number(row.v);
    }

    /** Runs `fn` while another connection (a transaction of the test) holds the device's lock. */
    async function whileLocked(deviceId: number, fn: () => Promise<void>) {
      await app.model.transaction(async t => {
        assert.strictEqual(await lockQuery('SELECT GET_LOCK(?, 0) AS v', deviceId, t), 1);
        try {
          await fn();
        } finally {
          await lockQuery('SELECT RELEASE_LOCK(?) AS v', deviceId, t);
        }
      });
    }

    const lockIsFree = async (deviceId: number) => assert.strictEqual(await lockQuery('SELECT IS_FREE_LOCK(?) AS v', deviceId), 1);

    it('409 AUTO_AUTH_CONFIG_BUSY (never 5xx) when another connection holds the lock past the wait; nothing changes; other devices are not held up', async function() {
      this.timeout(30000);
      const d = await createDevice();
      const other = await createDevice();
      const c = await addConfig(d, { password: 'old', deviceType: 'student' });
      await whileLocked(d.id, async () => {
        const [ created, updated ] = await Promise.all([
          app.httpRequest().post(configsPath(d)).send({ password: 'new' }),
          app.httpRequest().put(configPath(d, c.id)).send({ password: 'changed', deviceType: 'teacher' }),
          addConfig(other, { password: 'new' }),
        ]);
        for (const res of [ created, updated ]) {
          assert.strictEqual(res.status, 409, JSON.stringify(res.body));
          assert.deepStrictEqual(res.body, BUSY);
        }
      });
      const configs = await listConfigs(d);
      assert.deepStrictEqual(configs.map(x => [ x.hasPassword, x.deviceType ]), [[ true, 'student' ], [ false, 'classroom' ]]);
      await login({ namespace: d.uuid, password: 'old', appId: 'cw' }).expect(201);
      // Released: the same changes now go through.
      await lockIsFree(d.id);
      await addConfig(d, { password: 'new' });
      await app.httpRequest().put(configPath(d, c.id)).send({ password: 'changed' }).expect(200);
    });

    it('the lock is free again after every answer: 201, 200, each 400, 409', async function() {
      this.timeout(30000);
      const d = await createDevice();
      const c = await addConfig(d, { password: 'a' });
      await lockIsFree(d.id);
      await app.httpRequest().put(configPath(d, c.id)).send({ password: 'b' }).expect(200);
      await lockIsFree(d.id);
      await app.httpRequest().post(configsPath(d)).send({ password: 'b' }).expect(400);
      await lockIsFree(d.id);
      await app.httpRequest().put(configPath(d, (await defaultConfig(d)).id)).send({ password: 'b' }).expect(400);
      await lockIsFree(d.id);
      await storeConfigs(d, 18);
      await app.httpRequest().post(configsPath(d)).send({ password: 'c' }).expect(400);
      await lockIsFree(d.id);
      await whileLocked(d.id, async () => {
        await app.httpRequest().put(configPath(d, c.id)).send({ password: 'c' }).expect(409);
      });
      await lockIsFree(d.id);
    });
  });

  describe('[PUT /auto-auth/devices/:uuid/auth-configs/:configId] update()', () => {
    async function setUpdatedAt(id: string, date: string) {
      await app.model.AutoAuthConfig.update({ updatedAt: new Date(date) }, { where: { id }, silent: true });
    }

    it('200 {success, config:{id, hasPassword, password:null, deviceType, isReadOnly, createdAt, updatedAt}}; only the given fields change', async () => {
      const d = await createDevice();
      const c = await addConfig(d, { password: 'pw', deviceType: 'student', isReadOnly: true });
      await setUpdatedAt(c.id, '2020-01-01T00:00:00.000Z');
      const res = await app.httpRequest().put(configPath(d, c.id)).send({ deviceType: 'parent' }).expect(200);
      assert.deepStrictEqual(Object.keys(res.body), [ 'success', 'config' ]);
      assert.deepStrictEqual(Object.keys(res.body.config), [ 'id', 'hasPassword', 'password', 'deviceType', 'isReadOnly', 'createdAt', 'updatedAt' ]);
      const { updatedAt } = res.body.config;
      assert.match(updatedAt, ISO_MS);
      assert.ok(updatedAt > '2020-01-01T00:00:00.000Z');
      assert.deepStrictEqual(res.body, {
        success: true,
        config: { id: c.id, hasPassword: true, password: null, deviceType: 'parent', isReadOnly: true, createdAt: c.createdAt, updatedAt },
      });
      // The password is unchanged.
      const t = await login({ namespace: d.uuid, password: 'pw', appId: 'cw' }).expect(201);
      assert.deepStrictEqual([ t.body.deviceType, t.body.isReadOnly ], [ 'parent', true ]);

      const res2 = await app.httpRequest().put(configPath(d, c.id)).send({ isReadOnly: false, deviceType: null }).expect(200);
      assert.deepStrictEqual([ res2.body.config.deviceType, res2.body.config.isReadOnly, res2.body.config.hasPassword ], [ null, false, true ]);
      const listed = (await listConfigs(d)).find(x => x.id === c.id);
      assert.deepStrictEqual([ listed?.deviceType, listed?.isReadOnly, listed?.updatedAt ], [ null, false, res2.body.config.updatedAt ]);
    });

    it('200 with a new password: stored as a new bcrypt hash, the old one stops matching', async () => {
      const d = await createDevice();
      const c = await addConfig(d, { password: 'old', deviceType: 'teacher' });
      const before = (await storedConfig(c.id))?.password;
      await app.httpRequest().put(configPath(d, c.id)).send({ password: 'new' }).expect(200);
      const after = (await storedConfig(c.id))?.password;
      assert.notStrictEqual(after, before);
      assert.match(after ?? '', /^\$2[aby]\$\d\d\$/);
      assert.ok(bcrypt.compareSync('new', after!));
      await login({ namespace: d.uuid, password: 'new', appId: 'cw' }).expect(201);
      await login({ namespace: d.uuid, password: 'old', appId: 'cw' }).expect(401);
    });

    it('200 with the config\'s own password again, or with an empty body (nothing changes)', async () => {
      const d = await createDevice();
      const c = await addConfig(d, { password: 'mine', deviceType: 'student' });
      let res = await app.httpRequest().put(configPath(d, c.id)).send({ password: 'mine' }).expect(200);
      assert.strictEqual(res.body.config.hasPassword, true);
      res = await app.httpRequest().put(configPath(d, c.id)).send({}).expect(200);
      assert.deepStrictEqual([ res.body.config.deviceType, res.body.config.hasPassword ], [ 'student', true ]);
      await login({ namespace: d.uuid, password: 'mine', appId: 'cw' }).expect(201);
    });

    it('400 该密码已被其他配置使用 for another config\'s password, or for none while another config has none', async () => {
      const d = await createDevice();
      await addConfig(d, { password: 'taken' });
      const c = await addConfig(d, { password: 'mine' });
      let res = await app.httpRequest().put(configPath(d, c.id)).send({ password: 'taken' }).expect(400);
      assert.deepStrictEqual(res.body, err('该密码已被其他配置使用'));
      for (const password of [ '', null ]) {
        res = await app.httpRequest().put(configPath(d, c.id)).send({ password }).expect(400);
        assert.deepStrictEqual(res.body, err('该密码已被其他配置使用'));
      }
      await login({ namespace: d.uuid, password: 'mine', appId: 'cw' }).expect(201);
      // Without the default config, "" removes the password.
      await app.httpRequest().delete(configPath(d, (await defaultConfig(d)).id)).expect(204);
      res = await app.httpRequest().put(configPath(d, c.id)).send({ password: '', deviceType: 'teacher' }).expect(200);
      assert.deepStrictEqual([ res.body.config.hasPassword, res.body.config.deviceType ], [ false, 'teacher' ]);
      assert.strictEqual((await storedConfig(c.id))?.password, null);
      const t = await login({ namespace: d.uuid, appId: 'cw' }).expect(201);
      assert.strictEqual(t.body.deviceType, 'teacher');
    });

    it('404 自动授权配置不存在 for an unknown id (including ids that cannot exist)', async () => {
      const d = await createDevice();
      for (const id of [ '0190aaaa-0000-7000-8000-000000000000', 'x'.repeat(65), 'a\u0000b' ]) {
        const res = await app.httpRequest().put(configPath(d, id)).send({ deviceType: 'teacher' }).expect(404);
        assert.deepStrictEqual(res.body, err('自动授权配置不存在'));
      }
    });

    it('403 无权操作此配置 for a config of another device (it is unchanged)', async () => {
      const d = await createDevice();
      const other = await createDevice();
      const c = await addConfig(other, { password: 'theirs', deviceType: 'teacher' });
      const res = await app.httpRequest().put(configPath(d, c.id)).send({ deviceType: 'parent', password: 'x' }).expect(403);
      assert.deepStrictEqual(res.body, err('无权操作此配置'));
      const listed = (await listConfigs(other)).find(x => x.id === c.id);
      assert.strictEqual(listed?.deviceType, 'teacher');
      await login({ namespace: other.uuid, password: 'theirs', appId: 'cw' }).expect(201);
    });

    it('errors in order: input (400), then 404, then 403, then the duplicate (400)', async () => {
      const d = await createDevice();
      const other = await createDevice();
      const theirs = await addConfig(other, { password: 'p' });
      let res = await app.httpRequest().put(configPath(d, 'nope')).send({ deviceType: 'admin' }).expect(400);
      assert.deepStrictEqual(res.body, TYPE_ERROR);
      res = await app.httpRequest().put(configPath(d, theirs.id)).send({ isReadOnly: 'yes' }).expect(400);
      assert.deepStrictEqual(res.body, READONLY_ERROR);
      res = await app.httpRequest().put(configPath(d, 'nope')).send({ password: '' }).expect(404);
      assert.deepStrictEqual(res.body, err('自动授权配置不存在'));
      res = await app.httpRequest().put(configPath(d, theirs.id)).send({ password: '' }).expect(403);
      assert.deepStrictEqual(res.body, err('无权操作此配置'));
    });

    it('device credentials: 401 without the device password, 200 with it', async () => {
      const d = await createDevice({ password: 'pw' });
      const c = await addConfig(d, { password: 'x' }, 'pw');
      const res = await app.httpRequest().put(configPath(d, c.id)).send({ deviceType: 'teacher' }).expect(401);
      assert.deepStrictEqual(res.body, err('需要提供密码或JWT token'));
      await app.httpRequest().put(configPath(d, c.id)).set('x-device-password', 'pw').send({ deviceType: 'teacher' }).expect(200);
    });
  });

  describe('[DELETE /auto-auth/devices/:uuid/auth-configs/:configId] destroy()', () => {
    it('204 with an empty body; the config is gone and grants nothing more', async () => {
      const d = await createDevice();
      const c = await addConfig(d, { password: 'bye' });
      const res = await app.httpRequest().delete(configPath(d, c.id)).expect(204);
      assert.strictEqual(res.text, '');
      assert.deepStrictEqual((await listConfigs(d)).map(x => x.id).includes(c.id), false);
      assert.strictEqual(await storedConfig(c.id), null);
      await login({ namespace: d.uuid, password: 'bye', appId: 'cw' }).expect(401);
      const again = await app.httpRequest().delete(configPath(d, c.id)).expect(404);
      assert.deepStrictEqual(again.body, err('自动授权配置不存在'));
    });

    it('204 for the default config: the namespace alone then grants nothing', async () => {
      const d = await createDevice();
      await app.httpRequest().delete(configPath(d, (await defaultConfig(d)).id)).expect(204);
      assert.deepStrictEqual(await listConfigs(d), []);
      const res = await login({ namespace: d.uuid, appId: 'cw' }).expect(401);
      assert.deepStrictEqual(res.body, err('需要提供密码'));
    });

    it('404 自动授权配置不存在 for an unknown id; 403 无权操作此配置 for another device\'s config (kept)', async () => {
      const d = await createDevice();
      const other = await createDevice();
      let res = await app.httpRequest().delete(configPath(d, 'unknown')).expect(404);
      assert.deepStrictEqual(res.body, err('自动授权配置不存在'));
      const theirs = await defaultConfig(other);
      res = await app.httpRequest().delete(configPath(d, theirs.id)).expect(403);
      assert.deepStrictEqual(res.body, err('无权操作此配置'));
      assert.strictEqual((await listConfigs(other)).length, 1);
    });

    it('device credentials: 401 without the device password (kept), 204 with it', async () => {
      const d = await createDevice({ password: 'pw' });
      const c = await defaultConfig(d, 'pw');
      const res = await app.httpRequest().delete(configPath(d, c.id)).expect(401);
      assert.deepStrictEqual(res.body, err('需要提供密码或JWT token'));
      assert.strictEqual((await listConfigs(d, 'pw')).length, 1);
      await app.httpRequest().delete(configPath(d, c.id)).set('x-device-password', 'pw').expect(204);
    });
  });

  describe('[PUT /auto-auth/devices/:uuid/namespace] setNamespace()', () => {
    async function ageDevice(uuid: string) {
      await app.model.Device.update({ updatedAt: new Date('2020-01-01T00:00:00.000Z') }, { where: { uuid }, silent: true });
    }

    it('200 {success, device:{id, uuid, name, namespace, updatedAt}} with the trimmed namespace; logins use it', async () => {
      const d = await createDevice({ name: 'Room 7' });
      await ageDevice(d.uuid);
      const res = await app.httpRequest().put(namespacePath(d)).send({ namespace: '  class-7b  ' }).expect(200)
        .expect('Content-Type', /application\/json/);
      assert.deepStrictEqual(Object.keys(res.body), [ 'success', 'device' ]);
      assert.deepStrictEqual(Object.keys(res.body.device), [ 'id', 'uuid', 'name', 'namespace', 'updatedAt' ]);
      const { updatedAt } = res.body.device;
      assert.match(updatedAt, ISO_MS);
      assert.ok(updatedAt > '2020-01-01T00:00:00.000Z', updatedAt);
      assert.deepStrictEqual(res.body, { success: true, device: { id: d.id, uuid: d.uuid, name: 'Room 7', namespace: 'class-7b', updatedAt } });
      const show = await app.httpRequest().get(`/devices/${enc(d.uuid)}`).expect(200);
      assert.strictEqual(show.body.namespace, 'class-7b');
      await login({ namespace: 'class-7b', appId: 'cw' }).expect(201);
      await login({ namespace: d.uuid, appId: 'cw' }).expect(404);
    });

    it('200 for its own current namespace, with updatedAt advanced', async () => {
      const d = await createDevice();
      await ageDevice(d.uuid);
      const res = await app.httpRequest().put(namespacePath(d)).send({ namespace: d.uuid }).expect(200);
      assert.strictEqual(res.body.device.namespace, d.uuid);
      assert.ok(res.body.device.updatedAt > '2020-01-01T00:00:00.000Z', res.body.device.updatedAt);
      const row = await app.model.Device.findOne({ where: { uuid: d.uuid } });
      assert.strictEqual((row!.get('updatedAt') as Date).toISOString(), res.body.device.updatedAt);
    });

    it('400 需要提供 namespace when it is missing or not a string', async () => {
      const d = await createDevice();
      for (const body of [{}, { namespace: null }, { namespace: 5 }, { namespace: { a: 1 } }, { namespace: [ 'x' ] }, { namespace: true }]) {
        const res = await app.httpRequest().put(namespacePath(d)).send(body).expect(400);
        assert.deepStrictEqual(res.body, err('需要提供 namespace'));
      }
    });

    it('400 namespace 不能为空 when it is empty or blank', async () => {
      const d = await createDevice();
      for (const namespace of [ '', '   ', '\t\n' ]) {
        const res = await app.httpRequest().put(namespacePath(d)).send({ namespace }).expect(400);
        assert.deepStrictEqual(res.body, err('namespace 不能为空'));
      }
    });

    it('400 with a clear message over 191 characters or with control characters; 191 is fine', async () => {
      const d = await createDevice();
      let res = await app.httpRequest().put(namespacePath(d)).send({ namespace: 'n'.repeat(192) }).expect(400);
      assert.deepStrictEqual(res.body, NS_TOO_LONG);
      for (const namespace of [ 'a\u0000b', 'a\u0007b', 'a\tb' ]) {
        res = await app.httpRequest().put(namespacePath(d)).send({ namespace }).expect(400);
        assert.deepStrictEqual(res.body, err('namespace 不能包含控制字符', { field: 'namespace' }));
      }
      res = await app.httpRequest().put(namespacePath(d)).send({ namespace: '班'.repeat(191) }).expect(200);
      assert.strictEqual(res.body.device.namespace, '班'.repeat(191));
    });

    it('409 该 namespace 已被其他设备使用 when another device has it (also its uuid-derived default); case differs = free', async () => {
      const a = await createDevice();
      const b = await createDevice();
      await app.httpRequest().put(namespacePath(a)).send({ namespace: 'shared' }).expect(200);
      for (const namespace of [ 'shared', ' shared ' ]) {
        const res = await app.httpRequest().put(namespacePath(b)).send({ namespace }).expect(409);
        assert.deepStrictEqual(res.body, err('该 namespace 已被其他设备使用'));
      }
      const c = await createDevice();
      let res = await app.httpRequest().put(namespacePath(b)).send({ namespace: c.uuid }).expect(409);
      assert.deepStrictEqual(res.body, err('该 namespace 已被其他设备使用'));
      res = await app.httpRequest().put(namespacePath(b)).send({ namespace: 'SHARED' }).expect(200);
      assert.strictEqual(res.body.device.namespace, 'SHARED');
      assert.strictEqual((await app.httpRequest().get(`/devices/${enc(a.uuid)}`)).body.namespace, 'shared');
    });

    it('409 该 namespace 已被其他设备使用 for the uuid of a device without a namespace of its own; that device may take it', async () => {
      await app.httpRequest().post('/devices').send({ uuid: 'squatter', deviceName: 'n', namespace: 'victim' }).expect(201);
      await app.httpRequest().post('/devices').send({ uuid: 'victim', deviceName: 'n' }).expect(201);
      const other = await createDevice();
      // While the squatter has it, nobody else may take it, the victim neither.
      let res = await app.httpRequest().put('/auto-auth/devices/victim/namespace').send({ namespace: 'victim' }).expect(409);
      assert.deepStrictEqual(res.body, err('该 namespace 已被其他设备使用'));
      await app.httpRequest().put('/auto-auth/devices/squatter/namespace').send({ namespace: 'elsewhere' }).expect(200);
      for (const namespace of [ 'victim', ' victim ' ]) {
        res = await app.httpRequest().put(namespacePath(other)).send({ namespace }).expect(409);
        assert.deepStrictEqual(res.body, err('该 namespace 已被其他设备使用'));
      }
      res = await app.httpRequest().put('/auto-auth/devices/victim/namespace').send({ namespace: 'victim' }).expect(200);
      assert.strictEqual(res.body.device.namespace, 'victim');
      // Then it is an ordinary namespace; the victim may also move on, freeing it.
      await app.httpRequest().put('/auto-auth/devices/victim/namespace').send({ namespace: 'victim-2' }).expect(200);
      await app.httpRequest().put(namespacePath(other)).send({ namespace: 'victim' }).expect(200);
    });

    it('device credentials: 401 without the device password (unchanged), 200 with it', async () => {
      const d = await createDevice({ password: 'pw' });
      const res = await app.httpRequest().put(namespacePath(d)).send({ namespace: 'new-ns' }).expect(401);
      assert.deepStrictEqual(res.body, err('需要提供密码或JWT token'));
      assert.strictEqual((await app.httpRequest().get(`/devices/${enc(d.uuid)}`)).body.namespace, d.uuid);
      await app.httpRequest().put(namespacePath(d)).set('x-device-password', 'pw').send({ namespace: 'new-ns' }).expect(200);
    });

    it('404 设备不存在 for an unknown device', async () => {
      const res = await app.httpRequest().put('/auto-auth/devices/nobody/namespace').send({ namespace: 'x' }).expect(404);
      assert.deepStrictEqual(res.body, err('设备不存在'));
    });
  });

  describe('/auto-auth routes: per-IP limit and hostile input', () => {
    it('count against the per-IP limit (RATE_LIMIT_IP) like /devices, /apps, /auth', async () => {
      const d = await createDevice(); // POST /devices is the first request counted
      overrideRateLimits({ ip: 3 });
      await app.httpRequest().get(configsPath(d)).expect(200).expect('RateLimit-Policy', '3;w=60');
      await app.httpRequest().put(namespacePath(d)).send({ namespace: 'x' }).expect(200);
      const res = await app.httpRequest().post(configsPath(d)).send({ password: 'p' }).expect(429);
      assert.strictEqual(res.body.code, 'RATE_LIMITED');
      assert.strictEqual(res.headers['retry-after'] !== undefined, true);
    });

    it('hostile values in every field and path parameter answer 4xx JSON, never 5xx', async () => {
      const d = await createDevice();
      const c = await addConfig(d, { password: 'p' });
      overrideRateLimits({ ip: 0 });
      for (const v of HOSTILE) {
        const label = JSON.stringify(v).slice(0, 40);
        for (const field of [ 'password', 'deviceType', 'isReadOnly' ]) {
          if (typeof v === 'string' && field === 'password' && Buffer.byteLength(v) <= 72) continue; // a valid password
          if (typeof v === 'boolean' && field === 'isReadOnly') continue; // a valid flag
          assertClientError(await app.httpRequest().post(configsPath(d)).send({ [field]: v }), `create ${field}=${label}`);
          assertClientError(await app.httpRequest().put(configPath(d, c.id)).send({ [field]: v }), `update ${field}=${label}`);
        }
        if (!(typeof v === 'string' && v.length < 192 && !v.includes('\u0000') && (v as string & { isWellFormed(): boolean }).isWellFormed())) {
          assertClientError(await app.httpRequest().put(namespacePath(d)).send({ namespace: v }), `namespace=${label}`);
        }
      }
      for (const p of [ '%00', 'a%00b', 'x'.repeat(5000), '%E0%A4%A', '%ED%A0%80' ]) {
        for (const path of [ `/auto-auth/devices/${p}/auth-configs`, `/auto-auth/devices/${p}/namespace` ]) {
          assertClientError(await app.httpRequest().get(path), `GET ${path.slice(0, 60)}`);
          assertClientError(await app.httpRequest().put(path).send({ namespace: 'x' }), `PUT ${path.slice(0, 60)}`);
        }
        const raw = `${configsPath(d)}/${p}`;
        assertClientError(await app.httpRequest().put(raw).send({}), `PUT config ${p.slice(0, 20)}`);
        assertClientError(await app.httpRequest().delete(raw), `DELETE config ${p.slice(0, 20)}`);
      }
      // The config is intact.
      await login({ namespace: d.uuid, password: 'p', appId: 'cw' }).expect(201);
    });
  });
});
