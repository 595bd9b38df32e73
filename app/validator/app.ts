import { badRequest, notFound } from '../lib/errors';
import { hasControlCharacter, isIdentifier, optionalText } from './common';

/** Input rules of the /apps routes (installs and the /apps/tokens/:token routes). */

export function appId(v: unknown): string {
  if (!isIdentifier(v)) throw badRequest('应用ID无效：需要 1 到 191 个字符的字符串', { field: 'appId' });
  return v;
}

/**
 * An install id holding a control character is a 400 (like a key holding NUL: SQLite
 * cannot bind NUL); any other id that cannot exist is simply not installed (same
 * answer as an unknown id).
 */
export function installId(v: unknown): string {
  if (typeof v === 'string' && hasControlCharacter(v)) throw badRequest('安装ID无效：不能包含控制字符', { field: 'installId' });
  if (!isIdentifier(v, 64)) throw notFound('应用未安装');
  return v;
}

/** Longest note a token may carry (install, PUT /apps/tokens/:token/note). */
export const MAX_NOTE_LENGTH = 1000;
/** Longest student or teacher name (set-student-name / set-teacher-name). */
export const MAX_NAME_LENGTH = 255;

function noNul(v: string, field: string): string {
  if (v.includes('\u0000')) throw badRequest(`${field} 不能包含 NUL 字符`, { field });
  return v;
}

/** The note of a new install: a string of at most MAX_NOTE_LENGTH characters, or null. */
export function note(v: unknown): string | null {
  const n = optionalText(v, '备注', MAX_NOTE_LENGTH) ?? null;
  return n === null ? null : noNul(n, '备注');
}

/** The note of PUT /apps/tokens/:token/note: as note(); `""` (or no note at all) clears it (§6.2). */
export function tokenNote(v: unknown): string | null {
  const n = note(v);
  return n === '' ? null : n;
}

/**
 * A token named in a path (/apps/tokens/:token/...). Tokens are printable ASCII (see
 * AppInstallService.resolveToken): anything else cannot exist and is answered like an
 * unknown token, without a database lookup.
 */
export function pathToken(v: unknown): string {
  if (typeof v !== 'string' || !/^[\x21-\x7e]{1,255}$/.test(v)) throw notFound('Token 不存在');
  return v;
}

function personName(v: unknown, missing: string, field: string): string {
  if (v === undefined || v === null || (typeof v === 'string' && v.trim() === '')) throw badRequest(missing);
  return noNul(optionalText(v, field, MAX_NAME_LENGTH) as string, field);
}

/** `name` of set-student-name: a non-blank string, matched exactly against the student list. */
export function studentName(v: unknown): string {
  return personName(v, '需要提供学生名称', '学生名称');
}

/** `name` of set-teacher-name: a non-blank string. */
export function teacherName(v: unknown): string {
  return personName(v, '需要提供教师名称', '教师名称');
}
