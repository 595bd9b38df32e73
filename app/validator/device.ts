import { badRequest } from '../lib/errors';
import { hasControlCharacter, isIdentifier, optionalText } from './common';

/** Input rules of the /devices routes. Messages are the contract's. */

export function deviceUuid(v: unknown): string {
  if (v === undefined || v === null || v === '') throw badRequest('设备UUID是必需的');
  if (!isIdentifier(v)) throw badRequest('设备UUID无效：需要 1 到 191 个字符的字符串', { field: 'uuid' });
  return noControlInUuid(v);
}

const UUID_CONTROL = '设备UUID无效：不能包含控制字符';

function noControlInUuid(v: string): string {
  if (hasControlCharacter(v)) throw badRequest(UUID_CONTROL, { field: 'uuid' });
  return v;
}

/**
 * A uuid naming an existing device (path `:uuid`, header `x-device-uuid`, query or body
 * `uuid`): a uuid with a control character cannot exist (POST /devices refuses it) and
 * is a 400, like a key holding NUL, never a database query (SQLite cannot bind NUL).
 * Any other string is looked up as given (unknown: 404 设备不存在).
 */
export function lookupUuid(v: string): string {
  return noControlInUuid(v);
}

export function deviceName(v: unknown): string {
  if (v === undefined || v === null || (typeof v === 'string' && v.trim() === '')) throw badRequest('设备名称是必需的');
  if (typeof v !== 'string') throw badRequest('设备名称必须是字符串', { field: 'name' });
  return optionalText(v, '设备名称', 255) as string;
}

export function newPassword(v: unknown): string {
  if (v === undefined || v === null || v === '') throw badRequest('新密码是必需的');
  if (typeof v !== 'string') throw badRequest('新密码必须是字符串', { field: 'newPassword' });
  if (Buffer.byteLength(v) > 72) throw badRequest('新密码不能超过 72 个字节', { field: 'newPassword', max: 72 });
  return v;
}

export function passwordHint(v: unknown): string | null | undefined {
  const hint = optionalText(v, '密码提示', 255);
  return hint === '' ? null : hint;
}

/**
 * Optional namespace of a new device (§6.1): trimmed, 1..191 characters; absent, null or
 * blank means "the uuid".
 */
export function optionalNamespace(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw badRequest('namespace 必须是字符串', { field: 'namespace' });
  const t = v.trim();
  if (t === '') return undefined;
  return checkedNamespace(t);
}

/**
 * A namespace to store (already trimmed and non-blank): 1..191 well-formed characters,
 * no control characters (NUL included). Shared with PUT /auto-auth/devices/:uuid/namespace.
 */
export function checkedNamespace(t: string): string {
  if (!isIdentifier(t)) throw badRequest('namespace 无效：需要 1 到 191 个字符的字符串', { field: 'namespace', max: 191 });
  return noControlInNamespace(t);
}

/** A namespace holding a control character (NUL included) cannot exist: 400. */
export function noControlInNamespace(t: string): string {
  if (hasControlCharacter(t)) throw badRequest('namespace 不能包含控制字符', { field: 'namespace' });
  return t;
}
