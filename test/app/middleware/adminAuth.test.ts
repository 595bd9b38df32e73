import assert from 'node:assert';
import { app, mock } from 'egg-mock/bootstrap';
import { createDevice } from '../../support/factories';

const ADMIN = 'admin-token-0123456789abcdef';
const DENIED = { success: false, message: '需要管理员令牌', details: null, code: 'ADMIN_TOKEN_REQUIRED' };

/** ADMIN_TOKEN guarding GET /devices/online (issue 10, item 11). */
describe('test/app/middleware/adminAuth.test.ts', () => {
  describe('[GET /devices/online] with ADMIN_TOKEN set', () => {
    beforeEach(() => {
      mock(app.settings, 'adminToken', ADMIN);
    });
    afterEach(() => mock.restore());

    it('401 ADMIN_TOKEN_REQUIRED (JSON, WWW-Authenticate) without Authorization, with a wrong token, with the token in the query or not as Bearer', async () => {
      const a = await createDevice({ name: 'A' });
      await app.sharedState.presenceJoin(a.uuid, 's1');
      try {
        const attempts = [
          () => app.httpRequest().get('/devices/online'),
          () => app.httpRequest().get('/devices/online').set('authorization', 'Bearer wrong-token-0123456789'),
          () => app.httpRequest().get('/devices/online').set('authorization', `Bearer ${ADMIN}x`),
          () => app.httpRequest().get('/devices/online').set('authorization', ADMIN),
          () => app.httpRequest().get(`/devices/online?token=${ADMIN}`),
          () => app.httpRequest().get('/devices/online').set('x-app-token', ADMIN),
        ];
        for (const req of attempts) {
          const res = await req();
          assert.deepStrictEqual([ res.status, res.body ], [ 401, DENIED ]);
          assert.strictEqual(res.headers['www-authenticate'], 'Bearer realm="admin"');
          assert.ok(!JSON.stringify(res.body).includes(a.uuid));
        }
      } finally {
        await app.sharedState.presenceLeave(a.uuid, 's1');
      }
    });

    it('200 with the listing for Authorization: Bearer <ADMIN_TOKEN>', async () => {
      const a = await createDevice({ name: 'A' });
      await app.sharedState.presenceJoin(a.uuid, 's1');
      try {
        const res = await app.httpRequest().get('/devices/online').set('authorization', `Bearer ${ADMIN}`).expect(200);
        assert.deepStrictEqual(res.body, { success: true, devices: [{ uuid: a.uuid, connections: 1, name: 'A' }] });
      } finally {
        await app.sharedState.presenceLeave(a.uuid, 's1');
      }
    });

    it('guards only the listing: GET /devices/:uuid and the token listing of a password-less device stay as the contract has them', async () => {
      const a = await createDevice();
      await app.httpRequest().get(`/devices/${a.uuid}`).expect(200);
      await app.httpRequest().get(`/apps/tokens?uuid=${a.uuid}`).expect(200);
    });
  });

  describe('[GET /devices/online] without ADMIN_TOKEN (the default)', () => {
    it('200 for anyone, as the contract has it', async () => {
      assert.strictEqual(app.settings.adminToken, undefined);
      const res = await app.httpRequest().get('/devices/online').expect(200);
      assert.deepStrictEqual(res.body, { success: true, devices: [] });
    });
  });
});
