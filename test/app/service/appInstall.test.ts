import assert from 'node:assert';
import { app } from 'egg-mock/bootstrap';
import { deviceWithToken } from '../../support/factories';

/** Counts the database queries on app_installs (token lookups) while `fn` runs. */
async function countingLookups<T>(fn: (lookups: () => number) => Promise<T>): Promise<T> {
  let n = 0;
  app.model.addHook('afterQuery', 'appInstallLookups', (_options, query) => {
    if (((query as unknown as { sql?: string }).sql ?? '').includes('app_installs')) n += 1;
  });
  try {
    return await fn(() => n);
  } finally {
    app.model.removeHook('afterQuery', 'appInstallLookups');
  }
}

/**
 * AppInstallService.resolveToken: token → device from this worker's cache or one query;
 * concurrent lookups of one token (a classroom's sockets joining at once) share that query.
 */
describe('test/app/service/appInstall.test.ts', () => {
  it('ten concurrent lookups of an uncached token make one query and all get the device', async () => {
    const { device, token } = await deviceWithToken();
    app.tokenCache.clear();
    const ctx = app.mockContext();
    const infos = await countingLookups(async lookups => {
      const all = await Promise.all(Array.from({ length: 10 }, () => ctx.service.appInstall.resolveToken(token)));
      assert.strictEqual(lookups(), 1);
      return all;
    });
    for (const info of infos) assert.deepStrictEqual({ uuid: info?.uuid, token: info?.token }, { uuid: device.uuid, token });
    // Cached now: the next lookup makes no query.
    await countingLookups(async lookups => {
      assert.strictEqual((await ctx.service.appInstall.resolveToken(token))?.uuid, device.uuid);
      assert.strictEqual(lookups(), 0);
    });
  });

  it('a lookup that starts after an invalidation (uninstall, update) does not share the read in flight before it', async () => {
    const { device, token } = await deviceWithToken();
    app.tokenCache.clear();
    const ctx = app.mockContext();
    await countingLookups(async lookups => {
      const first = ctx.service.appInstall.resolveToken(token);
      app.tokenCache.delete(token); // as a token-revoked / token-updated message does
      const second = ctx.service.appInstall.resolveToken(token);
      const third = ctx.service.appInstall.resolveToken(token); // shares the second's read
      assert.deepStrictEqual((await Promise.all([ first, second, third ])).map(i => i?.uuid), [ device.uuid, device.uuid, device.uuid ]);
      assert.strictEqual(lookups(), 2);
    });
  });

  it('concurrent lookups of an unknown token make one query and all answer null', async () => {
    app.tokenCache.clear();
    const ctx = app.mockContext();
    await countingLookups(async lookups => {
      const all = await Promise.all(Array.from({ length: 5 }, () => ctx.service.appInstall.resolveToken('no-such-token-0123456789')));
      assert.deepStrictEqual(all, [ null, null, null, null, null ]);
      assert.strictEqual(lookups(), 1);
    });
  });
});
