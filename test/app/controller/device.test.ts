import assert from 'node:assert';
import { app } from 'egg-mock/bootstrap';
import { createDevice, ISO_MS } from '../../support/factories';

const err = (message: string, details: unknown = null) => ({ success: false, message, details });

async function storedPassword(uuid: string): Promise<string | null> {
  const row = await app.model.Device.findOne({ where: { uuid }, raw: true }) as unknown as { password: string | null };
  return row.password;
}

describe('test/app/controller/device.test.ts', () => {
  describe('[POST /devices] create()', () => {
    it('201 with success and the new device {id, uuid, name, namespace, createdAt}; namespace defaults to the uuid', async () => {
      const res = await app.httpRequest().post('/devices').send({ uuid: 'dev-1', deviceName: 'Classroom 1' })
        .expect(201).expect('Content-Type', /application\/json/);
      assert.deepStrictEqual(Object.keys(res.body).sort(), [ 'device', 'success' ]);
      assert.strictEqual(res.body.success, true);
      assert.deepStrictEqual(Object.keys(res.body.device), [ 'id', 'uuid', 'name', 'namespace', 'createdAt' ]);
      assert.strictEqual(res.body.device.namespace, 'dev-1');
      assert.ok(Number.isInteger(res.body.device.id));
      assert.strictEqual(res.body.device.uuid, 'dev-1');
      assert.strictEqual(res.body.device.name, 'Classroom 1');
      assert.match(res.body.device.createdAt, ISO_MS);
    });

    it('201 for any uuid string of up to 191 characters (unicode, slashes, spaces)', async () => {
      for (const uuid of [ 'x', 'a'.repeat(191), '教室/一 号', 'ABC' ]) {
        const res = await app.httpRequest().post('/devices').send({ uuid, deviceName: 'n' }).expect(201);
        assert.strictEqual(res.body.device.uuid, uuid);
        const show = await app.httpRequest().get(`/devices/${encodeURIComponent(uuid)}`).expect(200);
        assert.strictEqual(show.body.uuid, uuid);
      }
    });

    it('201 for uuids differing only in case (uuids are compared exactly)', async () => {
      await app.httpRequest().post('/devices').send({ uuid: 'room-a', deviceName: 'lower' }).expect(201);
      await app.httpRequest().post('/devices').send({ uuid: 'ROOM-A', deviceName: 'upper' }).expect(201);
      const lower = await app.httpRequest().get('/devices/room-a').expect(200);
      const upper = await app.httpRequest().get('/devices/ROOM-A').expect(200);
      assert.strictEqual(lower.body.name, 'lower');
      assert.strictEqual(upper.body.name, 'upper');
    });

    it('400 设备UUID是必需的 when uuid is missing, null or empty', async () => {
      for (const body of [{ deviceName: 'n' }, { uuid: null, deviceName: 'n' }, { uuid: '', deviceName: 'n' }]) {
        const res = await app.httpRequest().post('/devices').send(body).expect(400);
        assert.deepStrictEqual(res.body, err('设备UUID是必需的'));
      }
    });

    it('400 设备UUID是必需的 when there is no body at all', async () => {
      const res = await app.httpRequest().post('/devices').expect(400);
      assert.deepStrictEqual(res.body, err('设备UUID是必需的'));
    });

    it('400 设备名称是必需的 when deviceName is missing, empty or blank', async () => {
      for (const body of [{ uuid: 'd' }, { uuid: 'd', deviceName: '' }, { uuid: 'd', deviceName: '   ' }, { uuid: 'd', deviceName: null }]) {
        const res = await app.httpRequest().post('/devices').send(body).expect(400);
        assert.deepStrictEqual(res.body, err('设备名称是必需的'));
      }
      await app.httpRequest().get('/devices/d').expect(404);
    });

    it('400 (uuid checked first) when both uuid and deviceName are missing', async () => {
      const res = await app.httpRequest().post('/devices').send({}).expect(400);
      assert.deepStrictEqual(res.body, err('设备UUID是必需的'));
    });

    it('400 with a clear message for a uuid longer than 191 characters or not a string', async () => {
      let res = await app.httpRequest().post('/devices').send({ uuid: 'a'.repeat(192), deviceName: 'n' }).expect(400);
      assert.deepStrictEqual(res.body, err('设备UUID无效：需要 1 到 191 个字符的字符串', { field: 'uuid' }));
      res = await app.httpRequest().post('/devices').send({ uuid: 42, deviceName: 'n' }).expect(400);
      assert.deepStrictEqual(res.body, err('设备UUID无效：需要 1 到 191 个字符的字符串', { field: 'uuid' }));
    });

    it('400 with a clear message for a deviceName that is not a string', async () => {
      const res = await app.httpRequest().post('/devices').send({ uuid: 'd', deviceName: 7 }).expect(400);
      assert.deepStrictEqual(res.body, err('设备名称必须是字符串', { field: 'name' }));
    });

    it('409 设备UUID已存在 when the uuid is registered already (the first device is unchanged)', async () => {
      await app.httpRequest().post('/devices').send({ uuid: 'dup', deviceName: 'first' }).expect(201);
      const res = await app.httpRequest().post('/devices').send({ uuid: 'dup', deviceName: 'second' }).expect(409);
      assert.deepStrictEqual(res.body, err('设备UUID已存在'));
      const show = await app.httpRequest().get('/devices/dup').expect(200);
      assert.strictEqual(show.body.name, 'first');
    });

    it('ignores fields other than uuid and deviceName (no mass assignment)', async () => {
      await app.httpRequest().post('/devices')
        .send({ uuid: 'mass', deviceName: 'n', password: 'x', passwordHint: 'h', id: 999999 }).expect(201);
      const show = await app.httpRequest().get('/devices/mass').expect(200);
      assert.strictEqual(show.body.hasPassword, false);
      assert.strictEqual(show.body.passwordHint, null);
      assert.notStrictEqual(show.body.id, 999999);
    });

    describe('namespace (§6.1)', () => {
      const nsOf = async (uuid: string) => (await app.httpRequest().get(`/devices/${encodeURIComponent(uuid)}`).expect(200)).body.namespace;
      const nsId = async (uuid: string) => (await app.httpRequest().get(`/devices/${encodeURIComponent(uuid)}`).expect(200)).body.id;

      it('201 with the given namespace, trimmed, in the answer (after name) and in GET /devices/:uuid', async () => {
        const res = await app.httpRequest().post('/devices').send({ uuid: 'ns-1', deviceName: 'Room', namespace: '  class-1a  ' }).expect(201);
        assert.deepStrictEqual(Object.keys(res.body.device), [ 'id', 'uuid', 'name', 'namespace', 'createdAt' ]);
        assert.strictEqual(res.body.device.namespace, 'class-1a');
        assert.strictEqual(await nsOf('ns-1'), 'class-1a');
      });

      it('201 with the uuid as namespace when it is absent, null, empty or blank', async () => {
        for (const [ i, namespace ] of [ undefined, null, '', '   ' ].entries()) {
          const res = await app.httpRequest().post('/devices').send({ uuid: `ns-default-${i}`, deviceName: 'n', namespace }).expect(201);
          assert.strictEqual(res.body.device.namespace, `ns-default-${i}`);
          assert.strictEqual(await nsOf(`ns-default-${i}`), `ns-default-${i}`);
        }
      });

      it('201 for a namespace of 191 characters and for one differing from a taken one only in case', async () => {
        await app.httpRequest().post('/devices').send({ uuid: 'a', deviceName: 'n', namespace: '班'.repeat(191) }).expect(201);
        await app.httpRequest().post('/devices').send({ uuid: 'b', deviceName: 'n', namespace: 'Room' }).expect(201);
        await app.httpRequest().post('/devices').send({ uuid: 'c', deviceName: 'n', namespace: 'room' }).expect(201);
        assert.strictEqual(await nsOf('a'), '班'.repeat(191));
        assert.strictEqual(await nsOf('c'), 'room');
      });

      it('409 该 namespace 已被使用 when another device has it (given or its uuid default); nothing is created', async () => {
        await app.httpRequest().post('/devices').send({ uuid: 'first', deviceName: 'n', namespace: 'taken' }).expect(201);
        for (const namespace of [ 'taken', ' taken ' ]) {
          const res = await app.httpRequest().post('/devices').send({ uuid: 'second', deviceName: 'n', namespace }).expect(409);
          assert.deepStrictEqual(res.body, err('该 namespace 已被使用'));
        }
        await app.httpRequest().post('/devices').send({ uuid: 'third', deviceName: 'n' }).expect(201);
        const res = await app.httpRequest().post('/devices').send({ uuid: 'fourth', deviceName: 'n', namespace: 'third' }).expect(409);
        assert.deepStrictEqual(res.body, err('该 namespace 已被使用'));
        await app.httpRequest().get('/devices/second').expect(404);
        await app.httpRequest().get('/devices/fourth').expect(404);
        assert.strictEqual(await app.model.AutoAuthConfig.count(), 2);
        // Another device's uuid is free as a namespace when that device's namespace is something else.
        await app.httpRequest().post('/devices').send({ uuid: 'fifth', deviceName: 'n', namespace: 'first' }).expect(201);
      });

      it('201 without a namespace when the uuid is already another device\'s namespace (never 409 for a Part I client): stored NULL, shown as the uuid', async () => {
        await app.httpRequest().post('/devices').send({ uuid: 'squatter', deviceName: 'n', namespace: 'victim-uuid' }).expect(201);
        for (const namespace of [ undefined, null, '', '  ' ]) {
          await app.model.Device.destroy({ where: { uuid: 'victim-uuid' } });
          const res = await app.httpRequest().post('/devices').send({ uuid: 'victim-uuid', deviceName: 'Victim', namespace }).expect(201);
          const { id, createdAt } = res.body.device;
          assert.deepStrictEqual(res.body, { success: true, device: { id, uuid: 'victim-uuid', name: 'Victim', namespace: 'victim-uuid', createdAt } });
        }
        const row = await app.model.Device.findOne({ where: { uuid: 'victim-uuid' }, raw: true }) as unknown as { namespace: string | null };
        assert.strictEqual(row.namespace, null);
        assert.strictEqual(await nsOf('victim-uuid'), 'victim-uuid');
        assert.strictEqual(await nsOf('squatter'), 'victim-uuid');
        // The device is a full Part I device: password, token, KV, and its token shows the namespace as its uuid.
        await app.httpRequest().post('/devices/victim-uuid/password').send({ newPassword: 'pw' }).expect(200);
        const install = await app.httpRequest().post('/apps/devices/victim-uuid/install/cw').set('x-device-password', 'pw').expect(201);
        await app.httpRequest().post('/kv/k').set('x-app-token', install.body.token).send({ a: 1 }).expect(200);
        const token = await app.httpRequest().get('/kv/_token').set('x-app-token', install.body.token).expect(200);
        assert.deepStrictEqual(token.body.device, { id: await nsId('victim-uuid'), uuid: 'victim-uuid', name: 'Victim', namespace: 'victim-uuid' });
      });

      it('409 该 namespace 已被使用 for a namespace that is a NULL-namespace device\'s uuid (its namespace)', async () => {
        await app.httpRequest().post('/devices').send({ uuid: 'squatter', deviceName: 'n', namespace: 'victim-uuid' }).expect(201);
        await app.httpRequest().post('/devices').send({ uuid: 'victim-uuid', deviceName: 'n' }).expect(201);
        // The squatter moves on: the victim's uuid is still its namespace.
        await app.httpRequest().put('/auto-auth/devices/squatter/namespace').send({ namespace: 'elsewhere' }).expect(200);
        for (const namespace of [ 'victim-uuid', ' victim-uuid ' ]) {
          const res = await app.httpRequest().post('/devices').send({ uuid: 'third', deviceName: 'n', namespace }).expect(409);
          assert.deepStrictEqual(res.body, err('该 namespace 已被使用'));
        }
        await app.httpRequest().get('/devices/third').expect(404);
        await app.httpRequest().post('/devices').send({ uuid: 'third', deviceName: 'n', namespace: 'elsewhere' }).expect(409);
      });

      it('409 设备UUID已存在 first when both the uuid and the namespace are taken', async () => {
        await app.httpRequest().post('/devices').send({ uuid: 'dup', deviceName: 'n', namespace: 'ns' }).expect(201);
        const res = await app.httpRequest().post('/devices').send({ uuid: 'dup', deviceName: 'n', namespace: 'ns' }).expect(409);
        assert.deepStrictEqual(res.body, err('设备UUID已存在'));
      });

      it('400 with a clear message for a namespace over 191 characters, not a string, or with control characters', async () => {
        let res = await app.httpRequest().post('/devices').send({ uuid: 'd', deviceName: 'n', namespace: 'n'.repeat(192) }).expect(400);
        assert.deepStrictEqual(res.body, err('namespace 无效：需要 1 到 191 个字符的字符串', { field: 'namespace', max: 191 }));
        for (const namespace of [ 42, true, { a: 1 }, [ 'x' ]]) {
          res = await app.httpRequest().post('/devices').send({ uuid: 'd', deviceName: 'n', namespace }).expect(400);
          assert.deepStrictEqual(res.body, err('namespace 必须是字符串', { field: 'namespace' }));
        }
        for (const namespace of [ 'a\u0000b', 'a\u001bb' ]) {
          res = await app.httpRequest().post('/devices').send({ uuid: 'd', deviceName: 'n', namespace }).expect(400);
          assert.deepStrictEqual(res.body, err('namespace 不能包含控制字符', { field: 'namespace' }));
        }
        await app.httpRequest().get('/devices/d').expect(404);
      });

      it('creates the default auto-auth config: the namespace alone then gives a classroom, writable token that works', async () => {
        const created = await app.httpRequest().post('/devices').send({ uuid: 'fresh', deviceName: 'Fresh', namespace: 'fresh-ns' }).expect(201);
        const rows = await app.model.AutoAuthConfig.findAll({ raw: true }) as unknown as Array<Record<string, unknown>>;
        assert.strictEqual(rows.length, 1);
        assert.deepStrictEqual([ rows[0].deviceId, rows[0].password, rows[0].deviceType, !!Number(rows[0].isReadOnly) ], [ created.body.device.id, null, 'classroom', false ]);
        const login = await app.httpRequest().post('/apps/auth/token').send({ namespace: 'fresh-ns', appId: 'classworks' }).expect(201);
        assert.deepStrictEqual([ login.body.deviceType, login.body.isReadOnly ], [ 'classroom', false ]);
        const info = await app.httpRequest().get('/kv/_info').set('x-app-token', login.body.token).expect(200);
        assert.strictEqual(info.body.device.id, created.body.device.id);
        assert.strictEqual(info.body.device.name, 'Fresh');
        await app.httpRequest().post('/kv/hello').set('x-app-token', login.body.token).send({ a: 1 }).expect(200);
      });
    });
  });

  describe('[GET /devices/online] online()', () => {
    it('200 with an empty list when nobody is online', async () => {
      await createDevice();
      const res = await app.httpRequest().get('/devices/online').expect(200);
      assert.deepStrictEqual(res.body, { success: true, devices: [] });
    });

    it('200 with {uuid, connections, name} sorted by connections descending; name null for unknown devices', async () => {
      const a = await createDevice({ name: 'A' });
      const b = await createDevice({ name: 'B' });
      const joined: Array<[string, string]> = [
        [ a.uuid, 's1' ],
        [ b.uuid, 's2' ], [ b.uuid, 's3' ], [ b.uuid, 's4' ],
        [ 'ghost-device', 's5' ], [ 'ghost-device', 's6' ],
      ];
      try {
        for (const [ uuid, sid ] of joined) await app.sharedState.presenceJoin(uuid, sid);
        const res = await app.httpRequest().get('/devices/online').expect(200);
        assert.deepStrictEqual(res.body, {
          success: true,
          devices: [
            { uuid: b.uuid, connections: 3, name: 'B' },
            { uuid: 'ghost-device', connections: 2, name: null },
            { uuid: a.uuid, connections: 1, name: 'A' },
          ],
        });
      } finally {
        for (const [ uuid, sid ] of joined) await app.sharedState.presenceLeave(uuid, sid);
      }
    });

    it('200 with the device gone from the list once its last socket left', async () => {
      const a = await createDevice({ name: 'A' });
      try {
        await app.sharedState.presenceJoin(a.uuid, 's1');
        await app.sharedState.presenceLeave(a.uuid, 's1');
        const res = await app.httpRequest().get('/devices/online').expect(200);
        assert.deepStrictEqual(res.body, { success: true, devices: [] });
      } finally {
        await app.sharedState.presenceLeave(a.uuid, 's1');
      }
    });

    it('is not shadowed by /devices/:uuid even when a device is named "online"', async () => {
      await app.httpRequest().post('/devices').send({ uuid: 'online', deviceName: 'n' }).expect(201);
      const res = await app.httpRequest().get('/devices/online').expect(200);
      assert.deepStrictEqual(res.body, { success: true, devices: [] });
    });
  });

  describe('[GET /devices/:uuid] show()', () => {
    it('200 with the unwrapped device incl. account:null, isBoundToAccount:false and namespace at the end', async () => {
      const created = await app.httpRequest().post('/devices').send({ uuid: 'show-1', deviceName: 'Room' }).expect(201);
      const res = await app.httpRequest().get('/devices/show-1').expect(200);
      assert.deepStrictEqual(res.body, {
        id: created.body.device.id,
        uuid: 'show-1',
        name: 'Room',
        hasPassword: false,
        passwordHint: null,
        createdAt: created.body.device.createdAt,
        account: null,
        isBoundToAccount: false,
        namespace: 'show-1',
      });
      assert.strictEqual(Object.keys(res.body).pop(), 'namespace');
    });

    it('200 with hasPassword:true and the hint for a device with a password', async () => {
      const d = await createDevice({ password: 'secret', hint: 'the usual' });
      const res = await app.httpRequest().get(`/devices/${d.uuid}`).expect(200);
      assert.strictEqual(res.body.hasPassword, true);
      assert.strictEqual(res.body.passwordHint, 'the usual');
      assert.ok(!('password' in res.body));
    });

    it('200 for a URL-encoded uuid', async () => {
      await app.httpRequest().post('/devices').send({ uuid: 'a/b c', deviceName: 'n' }).expect(201);
      const res = await app.httpRequest().get('/devices/a%2Fb%20c').expect(200);
      assert.strictEqual(res.body.uuid, 'a/b c');
    });

    it('404 设备不存在 for an unknown uuid', async () => {
      const res = await app.httpRequest().get('/devices/nobody').expect(404);
      assert.deepStrictEqual(res.body, err('设备不存在'));
    });
  });

  describe('[PUT /devices/:uuid/name] rename()', () => {
    it('200 with {id, uuid, name, hasPassword, passwordHint} and the name stored', async () => {
      const d = await createDevice({ name: 'old' });
      const res = await app.httpRequest().put(`/devices/${d.uuid}/name`).send({ name: 'new' }).expect(200);
      assert.deepStrictEqual(res.body, {
        success: true,
        device: { id: d.id, uuid: d.uuid, name: 'new', hasPassword: false, passwordHint: null },
      });
      const show = await app.httpRequest().get(`/devices/${d.uuid}`).expect(200);
      assert.strictEqual(show.body.name, 'new');
    });

    it('200 for a device with a password when the password is given', async () => {
      const d = await createDevice({ password: 'pw', hint: 'h' });
      const res = await app.httpRequest().put(`/devices/${d.uuid}/name`).set('x-device-password', 'pw')
        .send({ name: 'renamed' }).expect(200);
      assert.deepStrictEqual(res.body, {
        success: true,
        device: { id: d.id, uuid: d.uuid, name: 'renamed', hasPassword: true, passwordHint: 'h' },
      });
    });

    it('400 设备名称是必需的 when name is missing or blank', async () => {
      const d = await createDevice({ name: 'keep' });
      for (const body of [{}, { name: '' }, { name: '  ' }]) {
        const res = await app.httpRequest().put(`/devices/${d.uuid}/name`).send(body).expect(400);
        assert.deepStrictEqual(res.body, err('设备名称是必需的'));
      }
      const show = await app.httpRequest().get(`/devices/${d.uuid}`).expect(200);
      assert.strictEqual(show.body.name, 'keep');
    });

    it('401 需要提供密码或JWT token without the password of a protected device', async () => {
      const d = await createDevice({ password: 'pw' });
      const res = await app.httpRequest().put(`/devices/${d.uuid}/name`).send({ name: 'x' }).expect(401);
      assert.deepStrictEqual(res.body, err('需要提供密码或JWT token'));
    });

    it('404 设备不存在 for an unknown device', async () => {
      const res = await app.httpRequest().put('/devices/nobody/name').send({ name: 'x' }).expect(404);
      assert.deepStrictEqual(res.body, err('设备不存在'));
    });
  });

  describe('[POST /devices/:uuid/password] setPassword()', () => {
    it('200 密码设置成功 with newPassword in the body; the device then requires it', async () => {
      const d = await createDevice();
      const res = await app.httpRequest().post(`/devices/${d.uuid}/password`).send({ newPassword: 'pw1' }).expect(200);
      assert.deepStrictEqual(res.body, { success: true, message: '密码设置成功' });
      const show = await app.httpRequest().get(`/devices/${d.uuid}`).expect(200);
      assert.strictEqual(show.body.hasPassword, true);
      await app.httpRequest().put(`/devices/${d.uuid}/name`).send({ name: 'x' }).expect(401);
      await app.httpRequest().put(`/devices/${d.uuid}/name`).set('x-device-password', 'pw1').send({ name: 'x' }).expect(200);
    });

    it('200 密码设置成功 with newPassword (and passwordHint) in the query', async () => {
      const d = await createDevice();
      const res = await app.httpRequest().post(`/devices/${d.uuid}/password`)
        .query({ newPassword: 'pw-q', passwordHint: 'query hint' }).expect(200);
      assert.deepStrictEqual(res.body, { success: true, message: '密码设置成功' });
      await app.httpRequest().put(`/devices/${d.uuid}/name`).query({ password: 'pw-q' }).send({ name: 'x' }).expect(200);
      const hint = await app.httpRequest().get(`/devices/${d.uuid}/password-hint`).expect(200);
      assert.deepStrictEqual(hint.body, { success: true, passwordHint: 'query hint' });
    });

    it('200 with passwordHint in the body stored as the hint', async () => {
      const d = await createDevice();
      await app.httpRequest().post(`/devices/${d.uuid}/password`).send({ newPassword: 'pw', passwordHint: 'body hint' }).expect(200);
      const hint = await app.httpRequest().get(`/devices/${d.uuid}/password-hint`).expect(200);
      assert.deepStrictEqual(hint.body, { success: true, passwordHint: 'body hint' });
    });

    it('stores a bcrypt hash of cost >= 10, never the password itself', async () => {
      const d = await createDevice();
      await app.httpRequest().post(`/devices/${d.uuid}/password`).send({ newPassword: 'plain-text' }).expect(200);
      const hash = await storedPassword(d.uuid);
      const m = /^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$/.exec(hash ?? '');
      assert.ok(m, `not a bcrypt hash: ${hash}`);
      assert.ok(Number(m[1]) >= 10);
    });

    it('400 新密码是必需的 when newPassword is in neither query nor body', async () => {
      const d = await createDevice();
      for (const body of [{}, { newPassword: '' }, { newPassword: null }]) {
        const res = await app.httpRequest().post(`/devices/${d.uuid}/password`).send(body).expect(400);
        assert.deepStrictEqual(res.body, err('新密码是必需的'));
      }
      const show = await app.httpRequest().get(`/devices/${d.uuid}`).expect(200);
      assert.strictEqual(show.body.hasPassword, false);
    });

    it('400 with a clear message for a password longer than bcrypt\'s 72 bytes', async () => {
      const d = await createDevice();
      const res = await app.httpRequest().post(`/devices/${d.uuid}/password`).send({ newPassword: 'x'.repeat(73) }).expect(400);
      assert.deepStrictEqual(res.body, err('新密码不能超过 72 个字节', { field: 'newPassword', max: 72 }));
    });

    it('403 设备已设置密码，请使用修改密码接口 when a password is set (the old one keeps working)', async () => {
      const d = await createDevice({ password: 'first' });
      const res = await app.httpRequest().post(`/devices/${d.uuid}/password`).send({ newPassword: 'second' }).expect(403);
      assert.deepStrictEqual(res.body, err('设备已设置密码，请使用修改密码接口'));
      await app.httpRequest().put(`/devices/${d.uuid}/name`).set('x-device-password', 'first').send({ name: 'x' }).expect(200);
      await app.httpRequest().put(`/devices/${d.uuid}/name`).set('x-device-password', 'second').send({ name: 'x' }).expect(401);
    });

    it('404 设备不存在 for an unknown device', async () => {
      const res = await app.httpRequest().post('/devices/nobody/password').send({ newPassword: 'pw' }).expect(404);
      assert.deepStrictEqual(res.body, err('设备不存在'));
    });
  });

  describe('[PUT /devices/:uuid/password] changePassword()', () => {
    it('200 密码修改成功 with the current password in the header and newPassword in the body', async () => {
      const d = await createDevice({ password: 'old' });
      const res = await app.httpRequest().put(`/devices/${d.uuid}/password`).set('x-device-password', 'old')
        .send({ newPassword: 'new' }).expect(200);
      assert.deepStrictEqual(res.body, { success: true, message: '密码修改成功' });
      await app.httpRequest().put(`/devices/${d.uuid}/name`).set('x-device-password', 'old').send({ name: 'x' }).expect(401);
      await app.httpRequest().put(`/devices/${d.uuid}/name`).set('x-device-password', 'new').send({ name: 'x' }).expect(200);
    });

    it('200 with currentPassword, newPassword and passwordHint all in the query', async () => {
      const d = await createDevice({ password: 'old', hint: 'old hint' });
      const res = await app.httpRequest().put(`/devices/${d.uuid}/password`)
        .query({ currentPassword: 'old', newPassword: 'new', passwordHint: 'new hint' }).expect(200);
      assert.deepStrictEqual(res.body, { success: true, message: '密码修改成功' });
      await app.httpRequest().put(`/devices/${d.uuid}/name`).query({ password: 'new' }).send({ name: 'x' }).expect(200);
      const hint = await app.httpRequest().get(`/devices/${d.uuid}/password-hint`).expect(200);
      assert.deepStrictEqual(hint.body, { success: true, passwordHint: 'new hint' });
    });

    it('200 with passwordHint in the body updating the hint; without it the hint is kept', async () => {
      const d = await createDevice({ password: 'p1', hint: 'h1' });
      await app.httpRequest().put(`/devices/${d.uuid}/password`).set('x-device-password', 'p1')
        .send({ newPassword: 'p2' }).expect(200);
      let hint = await app.httpRequest().get(`/devices/${d.uuid}/password-hint`).expect(200);
      assert.deepStrictEqual(hint.body, { success: true, passwordHint: 'h1' });
      await app.httpRequest().put(`/devices/${d.uuid}/password`).set('x-device-password', 'p2')
        .send({ newPassword: 'p3', passwordHint: 'h3' }).expect(200);
      hint = await app.httpRequest().get(`/devices/${d.uuid}/password-hint`).expect(200);
      assert.deepStrictEqual(hint.body, { success: true, passwordHint: 'h3' });
    });

    it('400 新密码是必需的 without newPassword (the password is unchanged)', async () => {
      const d = await createDevice({ password: 'old' });
      const res = await app.httpRequest().put(`/devices/${d.uuid}/password`).set('x-device-password', 'old').send({}).expect(400);
      assert.deepStrictEqual(res.body, err('新密码是必需的'));
      await app.httpRequest().put(`/devices/${d.uuid}/name`).set('x-device-password', 'old').send({ name: 'x' }).expect(200);
    });

    it('400 设备未设置密码，请使用设置密码接口 for a device without a password', async () => {
      const d = await createDevice();
      const res = await app.httpRequest().put(`/devices/${d.uuid}/password`).send({ newPassword: 'pw' }).expect(400);
      assert.deepStrictEqual(res.body, err('设备未设置密码，请使用设置密码接口'));
      const show = await app.httpRequest().get(`/devices/${d.uuid}`).expect(200);
      assert.strictEqual(show.body.hasPassword, false);
    });

    it('401 密码错误 with a wrong current password; 401 需要提供密码或JWT token without one', async () => {
      const d = await createDevice({ password: 'old' });
      let res = await app.httpRequest().put(`/devices/${d.uuid}/password`).set('x-device-password', 'bad')
        .send({ newPassword: 'new' }).expect(401);
      assert.deepStrictEqual(res.body, err('密码错误'));
      res = await app.httpRequest().put(`/devices/${d.uuid}/password`).send({ newPassword: 'new' }).expect(401);
      assert.deepStrictEqual(res.body, err('需要提供密码或JWT token'));
      await app.httpRequest().put(`/devices/${d.uuid}/name`).set('x-device-password', 'old').send({ name: 'x' }).expect(200);
    });

    it('404 设备不存在 for an unknown device', async () => {
      const res = await app.httpRequest().put('/devices/nobody/password').send({ newPassword: 'pw' }).expect(404);
      assert.deepStrictEqual(res.body, err('设备不存在'));
    });
  });

  describe('[PUT /devices/:uuid/password-hint] setPasswordHint()', () => {
    it('200 密码提示设置成功 echoing the hint, which GET then returns', async () => {
      const d = await createDevice();
      const res = await app.httpRequest().put(`/devices/${d.uuid}/password-hint`).send({ passwordHint: 'my cat' }).expect(200);
      assert.deepStrictEqual(res.body, { success: true, message: '密码提示设置成功', passwordHint: 'my cat' });
      const hint = await app.httpRequest().get(`/devices/${d.uuid}/password-hint`).expect(200);
      assert.deepStrictEqual(hint.body, { success: true, passwordHint: 'my cat' });
    });

    it('200 with passwordHint:null when the hint is null, empty or absent (clears it)', async () => {
      const d = await createDevice();
      for (const body of [{ passwordHint: null }, { passwordHint: '' }, {}]) {
        await app.httpRequest().put(`/devices/${d.uuid}/password-hint`).send({ passwordHint: 'set' }).expect(200);
        const res = await app.httpRequest().put(`/devices/${d.uuid}/password-hint`).send(body).expect(200);
        assert.deepStrictEqual(res.body, { success: true, message: '密码提示设置成功', passwordHint: null });
        const hint = await app.httpRequest().get(`/devices/${d.uuid}/password-hint`).expect(200);
        assert.deepStrictEqual(hint.body, { success: true, passwordHint: null });
      }
    });

    it('200 for a protected device with its password; 401 密码错误 with a wrong one', async () => {
      const d = await createDevice({ password: 'pw' });
      let res = await app.httpRequest().put(`/devices/${d.uuid}/password-hint`).set('x-device-password', 'nope')
        .send({ passwordHint: 'x' }).expect(401);
      assert.deepStrictEqual(res.body, err('密码错误'));
      res = await app.httpRequest().put(`/devices/${d.uuid}/password-hint`).set('x-device-password', 'pw')
        .send({ passwordHint: 'x' }).expect(200);
      assert.deepStrictEqual(res.body, { success: true, message: '密码提示设置成功', passwordHint: 'x' });
    });

    it('400 with a clear message for a hint that is not a string', async () => {
      const d = await createDevice();
      const res = await app.httpRequest().put(`/devices/${d.uuid}/password-hint`).send({ passwordHint: 5 }).expect(400);
      assert.deepStrictEqual(res.body, err('密码提示 必须是字符串', { field: '密码提示' }));
    });

    it('404 设备不存在 for an unknown device', async () => {
      const res = await app.httpRequest().put('/devices/nobody/password-hint').send({ passwordHint: 'x' }).expect(404);
      assert.deepStrictEqual(res.body, err('设备不存在'));
    });
  });

  describe('[GET /devices/:uuid/password-hint] getPasswordHint()', () => {
    it('200 with passwordHint:null for a device without a hint', async () => {
      const d = await createDevice();
      const res = await app.httpRequest().get(`/devices/${d.uuid}/password-hint`).expect(200);
      assert.deepStrictEqual(res.body, { success: true, passwordHint: null });
    });

    it('200 with the hint of a protected device, without credentials', async () => {
      const d = await createDevice({ password: 'pw', hint: 'hint!' });
      const res = await app.httpRequest().get(`/devices/${d.uuid}/password-hint`).expect(200);
      assert.deepStrictEqual(res.body, { success: true, passwordHint: 'hint!' });
    });

    it('404 设备不存在 for an unknown device', async () => {
      const res = await app.httpRequest().get('/devices/nobody/password-hint').expect(404);
      assert.deepStrictEqual(res.body, err('设备不存在'));
    });
  });

  describe('[DELETE /devices/:uuid/password] deletePassword()', () => {
    it('200 密码删除成功; the password and the hint are gone, the device is open again', async () => {
      const d = await createDevice({ password: 'pw', hint: 'h' });
      const res = await app.httpRequest().delete(`/devices/${d.uuid}/password`).set('x-device-password', 'pw').expect(200);
      assert.deepStrictEqual(res.body, { success: true, message: '密码删除成功' });
      const show = await app.httpRequest().get(`/devices/${d.uuid}`).expect(200);
      assert.strictEqual(show.body.hasPassword, false);
      assert.strictEqual(show.body.passwordHint, null);
      assert.strictEqual(await storedPassword(d.uuid), null);
      await app.httpRequest().put(`/devices/${d.uuid}/name`).send({ name: 'x' }).expect(200);
      // A password can be set again without credentials.
      await app.httpRequest().post(`/devices/${d.uuid}/password`).send({ newPassword: 'again' }).expect(200);
    });

    it('200 with the password in the query', async () => {
      const d = await createDevice({ password: 'pw' });
      await app.httpRequest().delete(`/devices/${d.uuid}/password`).query({ password: 'pw' }).expect(200);
    });

    it('400 设备未设置密码 for a device without a password', async () => {
      const d = await createDevice();
      const res = await app.httpRequest().delete(`/devices/${d.uuid}/password`).expect(400);
      assert.deepStrictEqual(res.body, err('设备未设置密码'));
    });

    it('401 密码错误 with a wrong password, 401 需要提供密码或JWT token without one; the password stays', async () => {
      const d = await createDevice({ password: 'pw' });
      let res = await app.httpRequest().delete(`/devices/${d.uuid}/password`).set('x-device-password', 'bad').expect(401);
      assert.deepStrictEqual(res.body, err('密码错误'));
      res = await app.httpRequest().delete(`/devices/${d.uuid}/password`).expect(401);
      assert.deepStrictEqual(res.body, err('需要提供密码或JWT token'));
      const show = await app.httpRequest().get(`/devices/${d.uuid}`).expect(200);
      assert.strictEqual(show.body.hasPassword, true);
    });

    it('404 设备不存在 for an unknown device', async () => {
      const res = await app.httpRequest().delete('/devices/nobody/password').expect(404);
      assert.deepStrictEqual(res.body, err('设备不存在'));
    });
  });
});
