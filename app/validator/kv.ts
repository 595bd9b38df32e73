import { badRequest, HttpError } from '../lib/errors';
import { isIdentifier, isPlainObject, single } from './common';

/** Input rules of the /kv routes. */

export const SORT_FIELDS = [ 'key', 'createdAt', 'updatedAt' ] as const;
export type SortField = typeof SORT_FIELDS[number];

export interface ListQuery {
  sortBy: SortField;
  sortDir: 'asc' | 'desc';
  limit: number;
  skip: number;
}

export const MAX_LIMIT = 1000;

export function kvKey(key: unknown): string {
  if (!isIdentifier(key)) {
    throw badRequest('键名无效：需要 1 到 191 个字符的字符串', { key: typeof key === 'string' ? key.slice(0, 256) : null, max: 191 });
  }
  return key;
}

function wholeNumber(v: unknown, name: string, def: number, max: number): number {
  const s = single(v);
  if (s === undefined || s === '') return def;
  if (typeof s !== 'string' || !/^\d{1,10}$/.test(s) || Number(s) > max) {
    throw badRequest(`${name} 必须是 0 到 ${max} 之间的整数`, { field: name, value: s ?? null });
  }
  return Number(s);
}

export function listQuery(query: Record<string, unknown>): ListQuery {
  const sortBy = single(query.sortBy) ?? 'key';
  if (typeof sortBy !== 'string' || !(SORT_FIELDS as readonly string[]).includes(sortBy)) {
    throw badRequest('sortBy 只能是 key、createdAt 或 updatedAt', { field: 'sortBy', allowed: SORT_FIELDS });
  }
  const dir = single(query.sortDir) ?? 'asc';
  if (typeof dir !== 'string' || ![ 'asc', 'desc' ].includes(dir.toLowerCase())) {
    throw badRequest('sortDir 只能是 asc 或 desc', { field: 'sortDir', allowed: [ 'asc', 'desc' ] });
  }
  return {
    sortBy: sortBy as SortField,
    sortDir: dir.toLowerCase() as 'asc' | 'desc',
    limit: wholeNumber(query.limit, 'limit', 100, MAX_LIMIT),
    skip: wholeNumber(query.skip, 'skip', 0, 2147483647),
  };
}

/** A value to store: a JSON object or array (including {} and []). */
export function kvValue(body: unknown, present: boolean): object {
  if (!present || body === undefined || body === null || typeof body !== 'object') {
    throw badRequest('请提供有效的JSON值');
  }
  return body;
}

/** The body of a batch import, checked as the contract orders: size, then keys. */
export function batchEntries(body: unknown, present: boolean, batchLimit: number): Array<[string, unknown]> {
  const message = '请提供有效的JSON数据，格式为 {"key":{}, "key2":{}}';
  if (!present || !isPlainObject(body)) throw badRequest(message);
  const entries = Object.entries(body);
  if (entries.length === 0) throw badRequest(message);
  if (entries.length > batchLimit) {
    throw new HttpError(413, `批量导入最多 ${batchLimit} 个键，本次 ${entries.length} 个`, {
      code: 'BATCH_TOO_LARGE', details: { limit: batchLimit, count: entries.length },
    });
  }
  const invalid = entries.filter(([ k ]) => !isIdentifier(k)).map(([ k ]) => k.slice(0, 256));
  if (invalid.length) {
    throw badRequest('批量导入包含无效的键名（需要 1 到 191 个字符），未写入任何数据', { invalidKeys: invalid });
  }
  return entries;
}
