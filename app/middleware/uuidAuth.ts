import type { Context } from 'egg';
import { badRequest, HttpError, unauthorized } from '../lib/errors';
import { isPlainObject } from '../validator/common';

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/**
 * Device credentials (routes marked uuidAuth in the contract). Resolves the device
 * into ctx.device, then checks its password when it has one. Failed passwords are
 * counted per client IP and device; past the limit the answer is 429.
 */
export default () => async function uuidAuth(ctx: Context, next: () => Promise<void>) {
  const body = (ctx.request as { body?: unknown }).body;
  const candidates = [
    str(ctx.params?.uuid),
    str(ctx.get('x-device-uuid')),
    str(ctx.query.uuid),
    isPlainObject(body) ? str(body.uuid) : undefined,
  ].filter((v): v is string => v !== undefined);
  if (candidates.length === 0) throw badRequest('需要提供设备UUID');
  if (candidates.some(c => c !== candidates[0])) throw badRequest('设备UUID不匹配', { sources: candidates.length });
  const device = await ctx.service.device.getByUuid(candidates[0]);

  if (device.password) {
    const password = str(ctx.get('x-device-password')) ?? str(ctx.query.password) ?? str(ctx.query.currentPassword);
    if (password === undefined) throw unauthorized('需要提供密码或JWT token');
    const { rateLimit } = ctx.app.settings;
    const state = ctx.app.sharedState;
    const id = `${ctx.clientIp}|${device.id}`;
    if (rateLimit.password > 0) {
      const failures = await state.ratePeek('pwfail', id);
      if (failures.count >= rateLimit.password) throw tooMany(failures.resetMs);
    }
    if (!await ctx.service.device.checkPassword(device, password)) {
      if (rateLimit.password > 0) await state.rateHit('pwfail', id, rateLimit.windowMs);
      throw unauthorized('密码错误');
    }
  }
  ctx.device = device;
  await next();
};

function tooMany(resetMs: number) {
  const seconds = Math.max(1, Math.ceil(resetMs / 1000));
  return new HttpError(429, '密码尝试次数过多，请稍后再试', {
    code: 'TOO_MANY_ATTEMPTS', details: { retryAfter: seconds }, headers: { 'Retry-After': String(seconds) },
  });
}
