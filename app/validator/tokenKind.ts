import { badRequest } from '../lib/errors';

/**
 * The kind of a token (§6.1, §6.2): `deviceType` and `isReadOnly`. One set of rules for
 * every body that carries them: installs (POST /apps/devices/:uuid/install/:appId) and
 * auto-auth configs (POST/PUT /auto-auth/devices/:uuid/auth-configs), so the same value
 * means the same thing everywhere. Lenient as ClassworksKV 1.3 was on configs: `""` and
 * null are "no type", a null flag is "not given".
 */

export const DEVICE_TYPES = [ 'teacher', 'student', 'classroom', 'parent' ] as const;
export type DeviceType = typeof DEVICE_TYPES[number];

/**
 * absent = not given (undefined, so a partial update can tell "unchanged" from
 * "cleared"); null or `""` = no type (null); else exactly one of DEVICE_TYPES.
 */
export function deviceType(v: unknown): DeviceType | null | undefined {
  if (v === undefined) return undefined;
  if (v === null || v === '') return null;
  if (typeof v !== 'string' || !(DEVICE_TYPES as readonly string[]).includes(v)) {
    throw badRequest(`设备类型必须是以下之一: ${DEVICE_TYPES.join(', ')}`, { field: 'deviceType', allowed: DEVICE_TYPES });
  }
  return v as DeviceType;
}

/** absent or null = not given (undefined); else a JSON boolean. */
export function isReadOnly(v: unknown): boolean | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw badRequest('isReadOnly 必须是布尔值 (true 或 false)', { field: 'isReadOnly' });
  return v;
}
