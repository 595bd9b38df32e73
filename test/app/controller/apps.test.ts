import assert from 'node:assert';
import { app } from 'egg-mock/bootstrap';
import { createDevice, installApp, ISO_MS } from '../../support/factories';
import { uuidv7 } from '../../../app/lib/uuidv7';

const err = (message: string, details: unknown = null) => ({ success: false, message, details });
const TOKEN = /^[0-9a-f]{64}$/;

describe('test/app/controller/apps.test.ts', () => {
  describe('[POST /apps/devices/:uuid/install/:appId] install()', () => {
    it('201 with {id, appId, token, note, name, deviceType, isReadOnly, installedAt}; name equals note', async () => {
      const d = await createDevice();
      const res = await app.httpRequest().post(`/apps/devices/${d.uuid}/install/my-app`).send({ note: 'Timetable' })
        .expect(201).expect('Content-Type', /application\/json/);
      assert.deepStrictEqual(Object.keys(res.body), [ 'id', 'appId', 'token', 'note', 'name', 'deviceType', 'isReadOnly', 'installedAt' ]);
      assert.strictEqual(res.body.deviceType, null);
      assert.strictEqual(res.body.isReadOnly, false);
      assert.strictEqual(typeof res.body.id, 'string');
      assert.ok(res.body.id.length > 0);
      assert.strictEqual(res.body.appId, 'my-app');
      assert.match(res.body.token, TOKEN);
      assert.strictEqual(res.body.note, 'Timetable');
      assert.strictEqual(res.body.name, 'Timetable');
      assert.match(res.body.installedAt, ISO_MS);
    });

    it('201 with note and name null without a body', async () => {
      const d = await createDevice();
      const res = await app.httpRequest().post(`/apps/devices/${d.uuid}/install/x`).expect(201);
      assert.strictEqual(res.body.note, null);
      assert.strictEqual(res.body.name, null);
    });

    it('201 twice for the same appId: two installs with different ids and tokens, both valid', async () => {
      const d = await createDevice();
      const a = await installApp(d, { appId: 'same' });
      const b = await installApp(d, { appId: 'same' });
      assert.notStrictEqual(a.id, b.id);
      assert.notStrictEqual(a.token, b.token);
      for (const t of [ a.token, b.token ]) {
        const info = await app.httpRequest().get('/kv/_info').set('x-app-token', t).expect(200);
        assert.strictEqual(info.body.device.uuid, d.uuid);
      }
    });

    it('tokens are 64 lowercase hex characters and distinct', async () => {
      const d = await createDevice();
      const seen = new Set<string>();
      for (let i = 0; i < 10; i++) {
        const { token } = await installApp(d);
        assert.match(token, TOKEN);
        seen.add(token);
      }
      assert.strictEqual(seen.size, 10);
    });

    it('201 for a URL-encoded appId (decoded, any characters)', async () => {
      const d = await createDevice();
      const res = await app.httpRequest().post(`/apps/devices/${d.uuid}/install/${encodeURIComponent('org/app 应用')}`).expect(201);
      assert.strictEqual(res.body.appId, 'org/app 应用');
    });

    it('201 for a protected device with its password; 401 without or with a wrong one', async () => {
      const d = await createDevice({ password: 'pw' });
      let res = await app.httpRequest().post(`/apps/devices/${d.uuid}/install/a`).expect(401);
      assert.deepStrictEqual(res.body, err('需要提供密码或JWT token'));
      res = await app.httpRequest().post(`/apps/devices/${d.uuid}/install/a`).set('x-device-password', 'no').expect(401);
      assert.deepStrictEqual(res.body, err('密码错误'));
      await app.httpRequest().post(`/apps/devices/${d.uuid}/install/a`).set('x-device-password', 'pw').expect(201);
      const list = await app.httpRequest().get(`/apps/devices/${d.uuid}/apps`).set('x-device-password', 'pw').expect(200);
      assert.strictEqual(list.body.apps.length, 1);
    });

    it('400 with a clear message for an appId longer than 191 characters or a note that is not a string', async () => {
      const d = await createDevice();
      let res = await app.httpRequest().post(`/apps/devices/${d.uuid}/install/${'a'.repeat(192)}`).expect(400);
      assert.deepStrictEqual(res.body, err('应用ID无效：需要 1 到 191 个字符的字符串', { field: 'appId' }));
      res = await app.httpRequest().post(`/apps/devices/${d.uuid}/install/a`).send({ note: 5 }).expect(400);
      assert.deepStrictEqual(res.body, err('备注 必须是字符串', { field: '备注' }));
    });

    it('404 设备不存在 for an unknown device', async () => {
      const res = await app.httpRequest().post('/apps/devices/nobody/install/a').expect(404);
      assert.deepStrictEqual(res.body, err('设备不存在'));
    });

    it('201 with each deviceType and isReadOnly from the body, stored as given', async () => {
      const d = await createDevice();
      const kinds: Array<[string | null, boolean]> = [
        [ 'teacher', false ], [ 'student', true ], [ 'classroom', false ], [ 'parent', true ], [ null, true ],
      ];
      for (const [ deviceType, isReadOnly ] of kinds) {
        const res = await app.httpRequest().post(`/apps/devices/${d.uuid}/install/k`).send({ deviceType, isReadOnly, note: 'n' }).expect(201);
        assert.deepStrictEqual(res.body, {
          id: res.body.id, appId: 'k', token: res.body.token, note: 'n', name: 'n', deviceType, isReadOnly, installedAt: res.body.installedAt,
        });
        const row = await app.model.AppInstall.findByPk(res.body.id);
        assert.strictEqual(row!.get('deviceType'), deviceType);
        assert.strictEqual(!!row!.get('isReadOnly'), isReadOnly);
      }
    });

    it('201 with deviceType null and isReadOnly false when the body leaves them out', async () => {
      const d = await createDevice();
      const res = await app.httpRequest().post(`/apps/devices/${d.uuid}/install/k`).send({ note: 'n' }).expect(201);
      assert.strictEqual(res.body.deviceType, null);
      assert.strictEqual(res.body.isReadOnly, false);
    });

    it('201 with deviceType null for deviceType "" or null, and isReadOnly false for isReadOnly null (same rules as auto-auth configs)', async () => {
      const d = await createDevice();
      for (const body of [{ deviceType: '' }, { deviceType: null }, { isReadOnly: null }, { deviceType: '', isReadOnly: null }]) {
        const res = await app.httpRequest().post(`/apps/devices/${d.uuid}/install/k`).send(body).expect(201);
        assert.deepStrictEqual([ res.body.deviceType, res.body.isReadOnly ], [ null, false ], JSON.stringify(body));
        const row = await app.model.AppInstall.findByPk(res.body.id);
        assert.deepStrictEqual([ row!.get('deviceType'), !!row!.get('isReadOnly') ], [ null, false ]);
      }
    });

    it('400 设备类型必须是以下之一 for any other deviceType (another case, padded, a number, an array); nothing installed', async () => {
      const d = await createDevice();
      for (const deviceType of [ 'admin', 'Teacher', ' teacher', 1, [ 'teacher' ], {}, true ]) {
        const res = await app.httpRequest().post(`/apps/devices/${d.uuid}/install/k`).send({ deviceType }).expect(400);
        assert.deepStrictEqual(res.body, err('设备类型必须是以下之一: teacher, student, classroom, parent', {
          field: 'deviceType', allowed: [ 'teacher', 'student', 'classroom', 'parent' ],
        }));
      }
      assert.deepStrictEqual((await app.httpRequest().get(`/apps/devices/${d.uuid}/apps`).expect(200)).body.apps, []);
    });

    it('400 isReadOnly 必须是布尔值 for anything but true, false or null (strings, numbers, arrays); nothing installed', async () => {
      const d = await createDevice();
      for (const isReadOnly of [ 'true', 'false', '', 1, 0, [], {}]) {
        const res = await app.httpRequest().post(`/apps/devices/${d.uuid}/install/k`).send({ isReadOnly }).expect(400);
        assert.deepStrictEqual(res.body, err('isReadOnly 必须是布尔值 (true 或 false)', { field: 'isReadOnly' }));
      }
      assert.deepStrictEqual((await app.httpRequest().get(`/apps/devices/${d.uuid}/apps`).expect(200)).body.apps, []);
    });

    it('400 for a note with a NUL character or longer than 1000 characters; 1000 is fine', async () => {
      const d = await createDevice();
      let res = await app.httpRequest().post(`/apps/devices/${d.uuid}/install/k`).send({ note: 'a\u0000b' }).expect(400);
      assert.deepStrictEqual(res.body, err('备注 不能包含 NUL 字符', { field: '备注' }));
      res = await app.httpRequest().post(`/apps/devices/${d.uuid}/install/k`).send({ note: '注'.repeat(1001) }).expect(400);
      assert.deepStrictEqual(res.body, err('备注 长度不能超过 1000 个字符', { field: '备注', max: 1000 }));
      res = await app.httpRequest().post(`/apps/devices/${d.uuid}/install/k`).send({ note: '注'.repeat(1000) }).expect(201);
      assert.strictEqual(res.body.note, '注'.repeat(1000));
    });
  });

  describe('uuidv7() (install ids)', () => {
    it('gives time-ordered UUIDv7 ids, strictly increasing even within one millisecond', () => {
      const now = Date.now();
      const ids = Array.from({ length: 50 }, () => uuidv7(now));
      for (const id of ids) assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      assert.deepStrictEqual([ ...ids ].sort(), ids);
      assert.strictEqual(new Set(ids).size, ids.length);
    });
  });

  describe('[DELETE /apps/devices/:uuid/uninstall/:installId] uninstall()', () => {
    it('204 with an empty body; the token then gets 401 无效的token on GET /kv/_info', async () => {
      const d = await createDevice();
      const inst = await installApp(d);
      await app.httpRequest().get('/kv/_info').set('x-app-token', inst.token).expect(200);
      const res = await app.httpRequest().delete(`/apps/devices/${d.uuid}/uninstall/${inst.id}`).expect(204);
      assert.strictEqual(res.text, '');
      const after = await app.httpRequest().get('/kv/_info').set('x-app-token', inst.token).expect(401);
      assert.deepStrictEqual(after.body, err('无效的token'));
    });

    it('204 removes only that install; other tokens of the device keep working', async () => {
      const d = await createDevice();
      const a = await installApp(d, { appId: 'a' });
      const b = await installApp(d, { appId: 'b' });
      await app.httpRequest().delete(`/apps/devices/${d.uuid}/uninstall/${a.id}`).expect(204);
      await app.httpRequest().get('/kv/_info').set('x-app-token', b.token).expect(200);
      const list = await app.httpRequest().get(`/apps/devices/${d.uuid}/apps`).expect(200);
      assert.deepStrictEqual(list.body.apps.map((x: { id: string }) => x.id), [ b.id ]);
    });

    it('404 应用未安装 for an unknown install id, also a second time after uninstalling', async () => {
      const d = await createDevice();
      const inst = await installApp(d);
      let res = await app.httpRequest().delete(`/apps/devices/${d.uuid}/uninstall/no-such-install`).expect(404);
      assert.deepStrictEqual(res.body, err('应用未安装'));
      res = await app.httpRequest().delete(`/apps/devices/${d.uuid}/uninstall/${'x'.repeat(300)}`).expect(404);
      assert.deepStrictEqual(res.body, err('应用未安装'));
      await app.httpRequest().delete(`/apps/devices/${d.uuid}/uninstall/${inst.id}`).expect(204);
      res = await app.httpRequest().delete(`/apps/devices/${d.uuid}/uninstall/${inst.id}`).expect(404);
      assert.deepStrictEqual(res.body, err('应用未安装'));
    });

    it('403 无权操作此安装记录 for an install of another device (the install survives)', async () => {
      const mine = await createDevice();
      const other = await createDevice();
      const inst = await installApp(other);
      const res = await app.httpRequest().delete(`/apps/devices/${mine.uuid}/uninstall/${inst.id}`).expect(403);
      assert.deepStrictEqual(res.body, err('无权操作此安装记录'));
      await app.httpRequest().get('/kv/_info').set('x-app-token', inst.token).expect(200);
    });

    it('401 for a protected device without its password (the install survives); 204 with it', async () => {
      const d = await createDevice({ password: 'pw' });
      const inst = await installApp(d, { password: 'pw' });
      let res = await app.httpRequest().delete(`/apps/devices/${d.uuid}/uninstall/${inst.id}`).expect(401);
      assert.deepStrictEqual(res.body, err('需要提供密码或JWT token'));
      res = await app.httpRequest().delete(`/apps/devices/${d.uuid}/uninstall/${inst.id}`).set('x-device-password', 'bad').expect(401);
      assert.deepStrictEqual(res.body, err('密码错误'));
      await app.httpRequest().get('/kv/_info').set('x-app-token', inst.token).expect(200);
      await app.httpRequest().delete(`/apps/devices/${d.uuid}/uninstall/${inst.id}`).set('x-device-password', 'pw').expect(204);
    });

    it('404 设备不存在 for an unknown device', async () => {
      const res = await app.httpRequest().delete('/apps/devices/nobody/uninstall/x').expect(404);
      assert.deepStrictEqual(res.body, err('设备不存在'));
    });
  });

  describe('[GET /apps/devices/:uuid/apps] list()', () => {
    it('200 with {success, apps:[{id, appId, token, note, installedAt, deviceType, isReadOnly}]}, oldest first', async () => {
      const d = await createDevice();
      const a = await installApp(d, { appId: 'first', note: 'n1' });
      const b = await installApp(d, { appId: 'second', deviceType: 'parent', isReadOnly: true });
      const res = await app.httpRequest().get(`/apps/devices/${d.uuid}/apps`).expect(200);
      assert.strictEqual(res.body.success, true);
      assert.deepStrictEqual(Object.keys(res.body).sort(), [ 'apps', 'success' ]);
      assert.deepStrictEqual(res.body.apps, [
        { id: a.id, appId: 'first', token: a.token, note: 'n1', installedAt: a.installedAt, deviceType: null, isReadOnly: false },
        { id: b.id, appId: 'second', token: b.token, note: null, installedAt: b.installedAt, deviceType: 'parent', isReadOnly: true },
      ]);
      for (const x of res.body.apps) {
        assert.deepStrictEqual(Object.keys(x), [ 'id', 'appId', 'token', 'note', 'installedAt', 'deviceType', 'isReadOnly' ]);
      }
    });

    it('200 with an empty list for a device without installs; other devices\' installs are not listed', async () => {
      const d = await createDevice();
      await installApp(await createDevice());
      const res = await app.httpRequest().get(`/apps/devices/${d.uuid}/apps`).expect(200);
      assert.deepStrictEqual(res.body, { success: true, apps: [] });
    });

    it('requires the password of a protected device (401 without, 401 wrong, 200 with)', async () => {
      const d = await createDevice({ password: 'pw' });
      await installApp(d, { password: 'pw' });
      let res = await app.httpRequest().get(`/apps/devices/${d.uuid}/apps`).expect(401);
      assert.deepStrictEqual(res.body, err('需要提供密码或JWT token'));
      res = await app.httpRequest().get(`/apps/devices/${d.uuid}/apps`).query({ password: 'bad' }).expect(401);
      assert.deepStrictEqual(res.body, err('密码错误'));
      res = await app.httpRequest().get(`/apps/devices/${d.uuid}/apps`).query({ password: 'pw' }).expect(200);
      assert.strictEqual(res.body.apps.length, 1);
    });

    it('404 设备不存在 for an unknown device', async () => {
      const res = await app.httpRequest().get('/apps/devices/nobody/apps').expect(404);
      assert.deepStrictEqual(res.body, err('设备不存在'));
    });
  });

  describe('[GET /apps/tokens] tokens()', () => {
    it('200 with {success, tokens:[{id, token, appId, installedAt, note, name, deviceType, isReadOnly}], deviceUuid}, newest first', async () => {
      const d = await createDevice();
      const installs = [];
      const kinds = [ 'teacher', 'student', 'classroom', 'parent', null ];
      for (let i = 0; i < 5; i++) {
        installs.push(await installApp(d, { appId: `app-${i}`, note: `note ${i}`, deviceType: kinds[i], isReadOnly: i % 2 === 1 }));
      }
      const res = await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid }).expect(200);
      assert.deepStrictEqual(res.body, {
        success: true,
        tokens: installs.reverse().map(x => ({
          id: x.id, token: x.token, appId: x.appId, installedAt: x.installedAt, note: x.note, name: x.note,
          deviceType: x.deviceType, isReadOnly: x.isReadOnly,
        })),
        deviceUuid: d.uuid,
      });
      assert.deepStrictEqual(res.body.tokens.map((t: { deviceType: string | null }) => t.deviceType), [ null, 'parent', 'classroom', 'student', 'teacher' ]);
      assert.deepStrictEqual(res.body.tokens.map((t: { isReadOnly: boolean }) => t.isReadOnly), [ false, true, false, true, false ]);
      for (const x of res.body.tokens) {
        assert.deepStrictEqual(Object.keys(x), [ 'id', 'token', 'appId', 'installedAt', 'note', 'name', 'deviceType', 'isReadOnly' ]);
      }
    });

    it('200 with the device named by the x-device-uuid header', async () => {
      const d = await createDevice();
      const inst = await installApp(d);
      const res = await app.httpRequest().get('/apps/tokens').set('x-device-uuid', d.uuid).expect(200);
      assert.strictEqual(res.body.deviceUuid, d.uuid);
      assert.deepStrictEqual(res.body.tokens.map((t: { token: string }) => t.token), [ inst.token ]);
    });

    it('200 with an empty list for a device without installs', async () => {
      const d = await createDevice();
      const res = await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid }).expect(200);
      assert.deepStrictEqual(res.body, { success: true, tokens: [], deviceUuid: d.uuid });
    });

    it('400 需要提供设备UUID without a uuid', async () => {
      const res = await app.httpRequest().get('/apps/tokens').expect(400);
      assert.deepStrictEqual(res.body, err('需要提供设备UUID'));
    });

    it('404 设备不存在 for an unknown device', async () => {
      const res = await app.httpRequest().get('/apps/tokens').query({ uuid: 'nobody' }).expect(404);
      assert.deepStrictEqual(res.body, err('设备不存在'));
    });

    it('requires the password of a protected device (401 without, 401 wrong, 200 with)', async () => {
      const d = await createDevice({ password: 'pw' });
      await installApp(d, { password: 'pw' });
      let res = await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid }).expect(401);
      assert.deepStrictEqual(res.body, err('需要提供密码或JWT token'));
      res = await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid }).set('x-device-password', 'bad').expect(401);
      assert.deepStrictEqual(res.body, err('密码错误'));
      res = await app.httpRequest().get('/apps/tokens').query({ uuid: d.uuid }).set('x-device-password', 'pw').expect(200);
      assert.strictEqual(res.body.tokens.length, 1);
    });
  });
});
