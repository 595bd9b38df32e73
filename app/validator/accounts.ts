import { badRequest } from '../lib/errors';
import { isIdentifier } from './common';
import { lookupUuid } from './device';

/** POST /accounts/devices/bind `{uuid}`. */
export function bindUuid(v: unknown): string {
  if (v === undefined || v === null || v === '') throw badRequest('缺少设备UUID');
  if (!isIdentifier(v)) throw badRequest('设备UUID无效', { field: 'uuid' });
  return lookupUuid(v);
}

/** POST /accounts/devices/unbind `{uuid}` or `{uuids:[…]}` (at most 1000): the uuids, and which form was used. */
export function unbindUuids(body: Record<string, unknown>): { uuids: string[]; many: boolean } {
  if (Array.isArray(body.uuids) && body.uuids.length > 0) {
    if (body.uuids.length > 1000) throw badRequest('一次最多解绑 1000 个设备', { field: 'uuids', max: 1000 });
    if (!body.uuids.every(u => isIdentifier(u))) throw badRequest('设备UUID无效', { field: 'uuids' });
    return { uuids: [ ...new Set((body.uuids as string[]).map(lookupUuid)) ], many: true };
  }
  if (body.uuid !== undefined && body.uuid !== null && body.uuid !== '') {
    if (!isIdentifier(body.uuid)) throw badRequest('设备UUID无效', { field: 'uuid' });
    return { uuids: [ lookupUuid(body.uuid) ], many: false };
  }
  throw badRequest('请提供要解绑的设备UUID');
}

/** POST /accounts/refresh `{refresh_token}` (`refreshToken` accepted too). */
export function refreshToken(body: Record<string, unknown>): string {
  const v = body.refresh_token ?? body.refreshToken;
  if (typeof v !== 'string' || v === '') throw badRequest('缺少刷新令牌');
  return v;
}

/** The provider path segment: an id configured or not (unknown ones get the contract's 400 later). */
export function providerId(v: unknown): string {
  return typeof v === 'string' ? v : '';
}
