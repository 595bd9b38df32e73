import { badRequest } from '../lib/errors';

/** Strings accepted as identifiers: 1..max code points, well-formed Unicode. */
export function isIdentifier(v: unknown, max = 191): v is string {
  if (typeof v !== 'string' || v.length === 0) return false;
  if (!(v as string & { isWellFormed(): boolean }).isWellFormed()) return false;
  return [ ...v ].length <= max;
}

/** True when `v` holds a control character (C0, NUL included, or DEL). */
export function hasControlCharacter(v: string): boolean {
  // eslint-disable-next-line no-control-regex
  return /[\u0000-\u001f\u007f]/.test(v);
}

/** Optional free text: string up to `max` characters, or null/undefined. */
export function optionalText(v: unknown, field: string, max: number): string | null | undefined {
  if (v === undefined) return undefined;
  if (v === null) return null;
  if (typeof v !== 'string') throw badRequest(`${field} 必须是字符串`, { field });
  if (!(v as string & { isWellFormed(): boolean }).isWellFormed()) throw badRequest(`${field} 包含无效字符`, { field });
  if ([ ...v ].length > max) throw badRequest(`${field} 长度不能超过 ${max} 个字符`, { field, max });
  return v;
}

/** First value when a query parameter was repeated (?a=1&a=2). */
export function single(v: unknown): unknown {
  return Array.isArray(v) ? v[0] : v;
}

/** A plain JSON object (not an array, not null). */
export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
