import type { Context } from 'egg';
import { badRequest, forbidden, unauthorized } from '../lib/errors';
import { bearer, looksLikeJwt } from '../lib/accountJwt';
import { useAccountToken } from './accountAuth';
import { failureThrottle } from '../lib/throttle';
import { isPlainObject } from '../validator/common';
import type { DeviceAttributes } from '../model/device';
import { lookupUuid } from '../validator/device';

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

export interface UuidAuthOptions {
  /** 403 message when the account token's account is not the device's (`/auto-auth`: `该设备未绑定到您的账户`). */
  notBoundMessage?: string;
}

/**
 * Device credentials (routes marked uuidAuth in the contract). Resolves the device
 * into ctx.device, then either the account token of the account the device is bound to
 * (`Authorization: Bearer <JWT>`, §8; verified by AccountsService.authenticate()), or the
 * device's password when it has one. Failed passwords are counted per client IP and device,
 * and per device (app/lib/throttle.ts); past the limit the answer is 429. A Bearer value that is not shaped
 * like a JWT (a 1.1 client sending its KV token) is ignored here, as before accounts existed.
 */
export default (options: UuidAuthOptions = {}) => async function uuidAuth(ctx: Context, next: () => Promise<void>) {
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

  const jwt = bearer(ctx.get('authorization'));
  if (jwt && looksLikeJwt(jwt)) {
    const { account } = await useAccountToken(ctx, jwt);
    if (device.accountId !== account.id) throw forbidden(options.notBoundMessage ?? '设备未绑定到此账户');
  } else {
    await checkDevicePassword(ctx, device, '需要提供密码或JWT token');
  }
  ctx.device = device;
  await next();
};

/**
 * A device password check (a device without one passes): from header `x-device-password`,
 * else query `password` / `currentPassword`. Throttled per client IP and device.
 */
export async function checkDevicePassword(ctx: Context, device: DeviceAttributes, missingMessage: string) {
  if (!device.password) return;
  const password = str(ctx.get('x-device-password')) ?? str(ctx.query.password) ?? str(ctx.query.currentPassword);
  if (password === undefined) throw unauthorized(missingMessage);
  const throttle = failureThrottle(ctx, 'pwfail', ctx.clientIp, String(device.id));
  await throttle.check();
  if (!await ctx.service.device.checkPassword(device, password)) {
    await throttle.fail();
    throw unauthorized('密码错误');
  }
}
