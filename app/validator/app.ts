import { badRequest, notFound } from '../lib/errors';
import { isIdentifier, optionalText } from './common';

/** Input rules of the /apps routes. */

export function appId(v: unknown): string {
  if (!isIdentifier(v)) throw badRequest('应用ID无效：需要 1 到 191 个字符的字符串', { field: 'appId' });
  return v;
}

/** An id that cannot exist is simply not installed (same answer as an unknown id). */
export function installId(v: unknown): string {
  if (!isIdentifier(v, 64)) throw notFound('应用未安装');
  return v;
}

export function note(v: unknown): string | null {
  return optionalText(v, '备注', 1000) ?? null;
}
