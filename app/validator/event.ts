import { isIdentifier } from './common';

/** Largest JSON text of a relayed event's content (JSON.stringify(content).length). */
export const MAX_CONTENT_LENGTH = 10240;
/** Longest event name, in characters after trimming. */
export const MAX_TYPE_LENGTH = 100;

/**
 * Names a client may not relay with send-event: Socket.IO's own (server and client,
 * 4.x and 2.x) and every event this server emits. Compared after trimming,
 * case-sensitively (as Socket.IO compares names).
 */
export const RESERVED_EVENT_NAMES: ReadonlySet<string> = new Set([
  // Socket.IO and engine.io (both client generations)
  'connect', 'connect_error', 'connect_timeout', 'connecting', 'disconnect', 'disconnecting', 'error', 'message',
  'ping', 'pong', 'newListener', 'removeListener',
  'reconnect', 'reconnect_attempt', 'reconnect_error', 'reconnect_failed', 'reconnecting',
  // this server (§4, §6, §7)
  'joined', 'join-error', 'device-joined', 'device-left', 'left', 'kv-key-changed', 'resync-required',
  'event-sent', 'event-error', 'event-history', 'event-history-error',
]);

/** A send-event payload: a plain object (arrays, null and scalars are not). */
export function isEventPayload(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !Buffer.isBuffer(v) && !ArrayBuffer.isView(v);
}

/**
 * The event name of a send-event payload (trimmed), or undefined when `type` is not 1..100
 * characters after trimming, not well-formed Unicode, or holds control characters.
 */
export function eventType(v: unknown): string | undefined {
  if (typeof v !== 'string') return undefined;
  const t = v.trim();
  // eslint-disable-next-line no-control-regex
  return isIdentifier(t, MAX_TYPE_LENGTH) && !/[\u0000-\u001f\u007f]/.test(t) ? t : undefined;
}

/** content: a JSON object or null (arrays, scalars, binary and a missing content are not). */
export function isEventContent(v: unknown): v is Record<string, unknown> | null {
  if (v === null) return true;
  if (typeof v !== 'object' || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** The length of content's JSON text; Infinity when it cannot be serialised. */
export function contentLength(content: Record<string, unknown> | null): number {
  try {
    return JSON.stringify(content).length;
  } catch {
    return Infinity;
  }
}

export interface HistoryParams {
  limit: number;
  offset: number;
}

export const DEFAULT_HISTORY_LIMIT = 50;
export const MAX_HISTORY_LIMIT = 1000;

/** A number, or a string holding a decimal number (`"50"`, ` 7 `, `"2.5"`), truncated to an integer; undefined otherwise. */
function integerLike(v: unknown): number | undefined {
  let n: number;
  if (typeof v === 'number') n = v;
  else if (typeof v === 'string' && /^\s*[+-]?(\d+\.?\d*|\.\d+)\s*$/.test(v)) n = Number(v);
  else return undefined;
  return Number.isNaN(n) ? undefined : Math.trunc(n);
}

const clamp = (n: number, min: number, max: number) => Math.min(max, Math.max(min, n));

/**
 * get-event-history `{limit?, offset?}`, never refused (1.3 clients send `"50"` or
 * `2000` and expect an answer): `limit` integer-like, clamped to 1..1000, 50 when
 * absent or not a number; `offset` integer-like, clamped to 0..2^53-1, 0 when absent
 * or not a number. A payload that is not an object (none, null, an array, a scalar)
 * means the defaults.
 */
export function historyParams(v: unknown): HistoryParams {
  const p = typeof v === 'object' && v !== null && !Array.isArray(v) ? v as Record<string, unknown> : {};
  const limit = integerLike(p.limit);
  const offset = integerLike(p.offset);
  return {
    limit: limit === undefined ? DEFAULT_HISTORY_LIMIT : clamp(limit, 1, MAX_HISTORY_LIMIT),
    offset: offset === undefined ? 0 : clamp(offset, 0, Number.MAX_SAFE_INTEGER),
  };
}
