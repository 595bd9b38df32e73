import assert from 'node:assert';
import { app } from 'egg-mock/bootstrap';
import { createDevice, installApp } from '../../support/factories';

const err = (message: string, details: unknown = null) => ({ success: false, message, details });
const UUID = err('设备UUID无效：不能包含控制字符', { field: 'uuid' });

/** Identifiers holding a control character (issue 10, item 6): a 400, never a lookup (SQLite cannot bind NUL: 500). */
describe('test/app/validator/identifiers.test.ts', () => {
  describe('uuid with a control character', () => {
    it('400 设备UUID无效：不能包含控制字符 in the path, query, header and body of every device route; nothing is created', async () => {
      await createDevice({ password: 'pw' });
      const cases: Array<[string, () => PromiseLike<{ status: number; body: unknown }>]> = [
        [ 'GET /devices/a%00b', () => app.httpRequest().get('/devices/a%00b') ],
        [ 'GET /devices/a%1Fb', () => app.httpRequest().get('/devices/a%1Fb') ],
        [ 'GET password-hint', () => app.httpRequest().get('/devices/a%00b/password-hint') ],
        [ 'POST password', () => app.httpRequest().post('/devices/a%00b/password').send({ newPassword: 'x' }) ],
        [ 'PUT name', () => app.httpRequest().put('/devices/a%00b/name').send({ name: 'x' }) ],
        [ 'GET /apps/tokens?uuid', () => app.httpRequest().get('/apps/tokens?uuid=a%00b') ],
        [ 'GET /apps/tokens x-device-uuid', () => app.httpRequest().get('/apps/tokens').set('x-device-uuid', 'a\tb') ],
        [ 'GET /apps/tokens body uuid', () => app.httpRequest().get('/apps/tokens').send({ uuid: 'a\u007fb' }) ],
        [ 'GET apps', () => app.httpRequest().get('/apps/devices/a%00b/apps') ],
        [ 'install', () => app.httpRequest().post('/apps/devices/a%00b/install/app') ],
        [ 'uninstall', () => app.httpRequest().delete('/apps/devices/a%00b/uninstall/abc') ],
        [ 'auto-auth', () => app.httpRequest().get('/auto-auth/devices/a%00b/auth-configs') ],
        [ 'POST /devices NUL', () => app.httpRequest().post('/devices').send({ uuid: 'a\u0000b', deviceName: 'x' }) ],
        [ 'POST /devices newline', () => app.httpRequest().post('/devices').send({ uuid: 'a\nb', deviceName: 'x' }) ],
        [ 'POST /devices DEL', () => app.httpRequest().post('/devices').send({ uuid: '\u007f', deviceName: 'x' }) ],
      ];
      for (const [ name, send ] of cases) {
        const res = await send();
        assert.deepStrictEqual([ res.status, res.body ], [ 400, UUID ], name);
      }
      const count = await app.model.Device.count();
      assert.strictEqual(count, 1);
    });

    it('400 on the account routes too: bind, unbind (uuid and uuids) and GET /accounts/device/:uuid/account', async () => {
      const signedIn = await app.mockContext().service.accounts.signIn('local', {
        providerId: 'identifiers', email: null, name: 'identifiers', avatarUrl: null, raw: { sub: 'identifiers' },
      });
      const auth = `Bearer ${signedIn.accessToken}`;
      const cases: Array<[string, () => PromiseLike<{ status: number; body: unknown }>]> = [
        [ 'bind', () => app.httpRequest().post('/accounts/devices/bind').set('Authorization', auth).send({ uuid: 'a\u0000b' }) ],
        [ 'unbind uuid', () => app.httpRequest().post('/accounts/devices/unbind').set('Authorization', auth).send({ uuid: 'a\u0000b' }) ],
        [ 'unbind uuids', () => app.httpRequest().post('/accounts/devices/unbind').set('Authorization', auth).send({ uuids: [ 'ok', 'a\nb' ] }) ],
        [ 'device account', () => app.httpRequest().get('/accounts/device/a%00b/account') ],
      ];
      for (const [ name, send ] of cases) {
        const res = await send();
        assert.deepStrictEqual([ res.status, res.body ], [ 400, UUID ], name);
      }
    });
  });

  describe('install id, app id and namespace with a control character', () => {
    it('400 for DELETE …/uninstall/<id with NUL> and POST /apps/auth/token with NUL in the namespace; an appId is free text (NUL is data)', async () => {
      const d = await createDevice();
      await installApp(d, { appId: 'a' });
      const u = encodeURIComponent(d.uuid);
      const uninstall = await app.httpRequest().delete(`/apps/devices/${u}/uninstall/a%00b`);
      assert.deepStrictEqual([ uninstall.status, uninstall.body ], [ 400, err('安装ID无效：不能包含控制字符', { field: 'installId' }) ]);
      await app.httpRequest().post(`/apps/devices/${u}/install/a%00b`).expect(201);
      const login = await app.httpRequest().post('/apps/auth/token').send({ namespace: `${d.uuid}\u0000`, appId: 'x' });
      assert.deepStrictEqual([ login.status, login.body ], [ 400, err('namespace 不能包含控制字符', { field: 'namespace' }) ]);
      // A pasted line break around a namespace is trimmed, as before.
      await app.httpRequest().post('/apps/auth/token').send({ namespace: `${d.uuid}\n`, appId: 'x' }).expect(201);
      const apps = await app.httpRequest().get(`/apps/devices/${u}/apps`).expect(200);
      assert.deepStrictEqual(apps.body.apps.map((a: { appId: string }) => a.appId), [ 'a', 'a\u0000b', 'x' ]);
    });
  });
});
