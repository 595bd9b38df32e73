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
export const MAX_KEY_LENGTH = 191;
/** Deepest nesting a stored value may have (objects/arrays inside each other). */
export const MAX_DEPTH = 1000;
/** Path names matched before `/kv/:key`; a value stored under them could never be read back. */
export const RESERVED_KEYS: readonly string[] = [ '_info', '_keys', '_batchimport', '_token', '_changes' ];

/** Why `key` cannot be a KV key, or undefined when it can. */
function keyProblem(key: unknown): string | undefined {
  if (!isIdentifier(key, MAX_KEY_LENGTH)) return `键名无效：需要 1 到 ${MAX_KEY_LENGTH} 个字符的字符串`;
  if (key.includes('\u0000')) return '键名无效：不能包含 NUL 字符';
  return undefined;
}

/** A key as used to read or delete: 1..191 well-formed characters, no NUL. */
export function kvKey(key: unknown): string {
  const problem = keyProblem(key);
  if (problem) {
    throw badRequest(problem, { key: typeof key === 'string' ? key.slice(0, 256) : null, max: MAX_KEY_LENGTH });
  }
  return key as string;
}

/** A key as used to write: as kvKey, and not one of the reserved names. */
export function writableKey(key: unknown): string {
  const k = kvKey(key);
  if (RESERVED_KEYS.includes(k)) throw badRequest(`键名 '${k}' 是保留名称，不能写入`, { key: k, reserved: RESERVED_KEYS });
  return k;
}

/**
 * The key of a `/kv/:key` path, decoded from the raw path segment. (The router
 * decodes `%2F` to `/` as it should, but silently keeps malformed escapes such as
 * `%E0%A4%A` or an encoded lone surrogate as literal text.)
 */
export function pathKey(path: string): string {
  const segment = path.split('/')[2] ?? '';
  try {
    return decodeURIComponent(segment);
  } catch {
    throw badRequest('键名的 URL 编码无效', { key: segment.slice(0, 256) }, 'INVALID_PATH_ENCODING');
  }
}

function wholeNumber(v: unknown, name: string, def: number, max: number): number {
  const s = single(v);
  if (s === undefined || s === '') return def;
  if (typeof s !== 'string' || !/^\d{1,10}$/.test(s) || Number(s) > max) {
    throw badRequest(`${name} 必须是 0 到 ${max} 之间的整数`, { field: name, value: s ?? null });
  }
  return Number(s);
}

/** `GET /kv/_changes?since=&limit=` (CONTRACT.md §7): since a whole number ≥ 0 (required), limit 1..1000 (default 100). */
export function changesQuery(query: Record<string, unknown>): { since: number; limit: number } {
  const since = single(query.since);
  if (typeof since !== 'string' || !/^\d{1,15}$/.test(since)) {
    throw badRequest('since 必须是大于或等于 0 的整数', { field: 'since', value: since ?? null });
  }
  const limit = single(query.limit);
  if (limit !== undefined && (typeof limit !== 'string' || !/^\d{1,4}$/.test(limit) || Number(limit) < 1 || Number(limit) > 1000)) {
    throw badRequest('limit 必须是 1 到 1000 之间的整数', { field: 'limit', value: limit ?? null });
  }
  return { since: Number(since), limit: limit === undefined ? 100 : Number(limit) };
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

/** Nesting depth of a JSON value (a scalar is 0, `{}` and `[]` are 1), without recursion. */
export function jsonDepth(value: unknown, stopAt = Infinity): number {
  let max = 0;
  const stack: Array<[unknown, number]> = [[ value, 0 ]];
  while (stack.length) {
    const [ v, d ] = stack.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    const depth = d + 1;
    if (depth > max) max = depth;
    if (max > stopAt) return max;
    for (const child of Object.values(v)) {
      if (typeof child === 'object' && child !== null) stack.push([ child, depth ]);
    }
  }
  return max;
}

function tooDeep(): HttpError {
  return badRequest(`JSON值嵌套过深：最多 ${MAX_DEPTH} 层`, { maxDepth: MAX_DEPTH }, 'JSON_TOO_DEEP');
}

/** A value to store: a JSON object or array (including {} and []), at most MAX_DEPTH deep. */
export function kvValue(body: unknown, present: boolean): object {
  if (!present || body === undefined || body === null || typeof body !== 'object') {
    throw badRequest('请提供有效的JSON值');
  }
  if (jsonDepth(body, MAX_DEPTH) > MAX_DEPTH) throw tooDeep();
  return body;
}

/** The body of a batch import, checked as the contract orders: size, then keys, then values. */
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
  const invalid = entries
    .filter(([ k ]) => keyProblem(k) !== undefined || RESERVED_KEYS.includes(k))
    .map(([ k ]) => k.slice(0, 256));
  if (invalid.length) {
    throw badRequest(
      `批量导入包含无效的键名（需要 1 到 ${MAX_KEY_LENGTH} 个字符，不能包含 NUL，不能是保留名称），未写入任何数据`,
      { invalidKeys: invalid },
    );
  }
  if (entries.some(([ , v ]) => jsonDepth(v, MAX_DEPTH) > MAX_DEPTH)) throw tooDeep();
  return entries;
}

/**
 * `since` of `join-token {token, since}` and of the handshake query (CONTRACT.md §7): absent
 * (undefined or null) → undefined (live events from the join on); a whole number ≥ 0, as a
 * JSON number or a string of digits (the handshake query is text) → that number; anything
 * else → 'invalid' (the join is refused with join-error `invalid_since`).
 */
export function joinSince(v: unknown): number | undefined | 'invalid' {
  const s = v; // a repeated handshake parameter (an array) is refused like any other non-number
  if (s === undefined || s === null) return undefined;
  if (typeof s === 'number') return Number.isSafeInteger(s) && s >= 0 ? s : 'invalid';
  if (typeof s === 'string' && /^\d{1,15}$/.test(s)) return Number(s);
  return 'invalid';
}
