import { badRequest, notFound } from '../lib/errors';
import { appId as appIdRule } from './app';
import { isIdentifier } from './common';
import { checkedNamespace, noControlInNamespace } from './device';
import { deviceType, isReadOnly, type DeviceType } from './tokenKind';

/** Input rules of POST /apps/auth/token and the /auto-auth routes (§6.1). Messages are the contract's. */

/** bcrypt reads at most 72 bytes: a longer password could match a hash of its first 72. */
const MAX_PASSWORD_BYTES = 72;

/**
 * The namespace of a login, as given (matched exactly first, then trimmed: see the
 * service). Missing, empty or blank: 需要提供 namespace.
 */
export function loginNamespace(v: unknown): string {
  if (v === undefined || v === null || (typeof v === 'string' && v.trim() === '')) throw badRequest('需要提供 namespace');
  if (typeof v !== 'string') throw badRequest('namespace 必须是字符串', { field: 'namespace' });
  if (!isIdentifier(v)) throw badRequest('namespace 无效：需要 1 到 191 个字符的字符串', { field: 'namespace', max: 191 });
  // Surrounding whitespace (a pasted line break) is trimmed by the service; inside, a
  // control character cannot be in any namespace.
  noControlInNamespace(v.trim());
  return v;
}

export function loginAppId(v: unknown): string {
  if (v === undefined || v === null || v === '') throw badRequest('需要提供 appId');
  return appIdRule(v);
}

/**
 * A password as given in a login or a config: `""`, null or absent = none (null).
 * At most 72 bytes (bcrypt's limit, as for device passwords).
 */
export function optionalPassword(v: unknown): string | null {
  if (v === undefined || v === null || v === '') return null;
  if (typeof v !== 'string') throw badRequest('密码必须是字符串', { field: 'password' });
  if (Buffer.byteLength(v) > MAX_PASSWORD_BYTES) throw badRequest('密码不能超过 72 个字节', { field: 'password', max: MAX_PASSWORD_BYTES });
  return v;
}

/** What a create or an update may set; a field left undefined is not given. */
export interface ConfigInput {
  password?: string | null;
  deviceType?: DeviceType | null;
  isReadOnly?: boolean;
}

/** The fields of a config body, in the order they are checked (password, deviceType, isReadOnly). */
export function configInput(body: Record<string, unknown>): ConfigInput {
  const input: ConfigInput = {};
  if (body.password !== undefined) input.password = optionalPassword(body.password);
  const type = deviceType(body.deviceType);
  if (type !== undefined) input.deviceType = type;
  const readOnly = isReadOnly(body.isReadOnly);
  if (readOnly !== undefined) input.isReadOnly = readOnly;
  return input;
}

/** Config ids are printable ASCII; an id that cannot exist is simply not there (same answer as an unknown id). */
export function configId(v: unknown): string {
  if (typeof v !== 'string' || !/^[\x21-\x7e]{1,64}$/.test(v)) throw notFound('自动授权配置不存在');
  return v;
}

/** The new namespace of PUT /auto-auth/devices/:uuid/namespace: trimmed, 1..191 characters. */
export function newNamespace(v: unknown): string {
  if (typeof v !== 'string') throw badRequest('需要提供 namespace');
  const t = v.trim();
  if (t === '') throw badRequest('namespace 不能为空');
  return checkedNamespace(t);
}
