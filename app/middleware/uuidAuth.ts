import type { Context } from 'egg';
import { badRequest, unauthorized } from '../lib/errors';
import { failureThrottle } from '../lib/throttle';
import { isPlainObject } from '../validator/common';
import { lookupUuid } from '../validator/device';

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/**
 * Device credentials (routes marked uuidAuth in the contract). Resolves the device
 * into ctx.device, then checks its password when it has one. Failed passwords are
 * counted per client IP and device, and per device (app/lib/throttle.ts); past the limit the answer is 429.
 */
export default () => async function uuidAuth(ctx: Context, next: () => Promise<void>) {
  const body = (ctx.request as { body?: unknown }).body;
  const sources: Array<[string, string | undefined]> = [
    [ 'path', str(ctx.params?.uuid) ],
    [ 'header', str(ctx.get('x-device-uuid')) ],
    [ 'query', str(ctx.query.uuid) ],
    [ 'body', isPlainObject(body) ? str(body.uuid) : undefined ],
  ];
  const given = sources.filter((s): s is [string, string] => s[1] !== undefined);
  if (given.length === 0) throw badRequest('需要提供设备UUID');
  const uuid = given[0][1];
  if (given.some(([ , v ]) => v !== uuid)) throw badRequest('设备UUID不匹配', { sources: given.map(([ name ]) => name) });
  lookupUuid(uuid);
  const device = await ctx.service.device.getByUuid(uuid);

  if (device.password) {
    const password = str(ctx.get('x-device-password')) ?? str(ctx.query.password) ?? str(ctx.query.currentPassword);
    if (password === undefined) throw unauthorized('需要提供密码或JWT token');
    const throttle = failureThrottle(ctx, 'pwfail', ctx.clientIp, String(device.id));
    await throttle.check();
    if (!await ctx.service.device.checkPassword(device, password)) {
      await throttle.fail();
      throw unauthorized('密码错误');
    }
  }
  ctx.device = device;
  await next();
};
