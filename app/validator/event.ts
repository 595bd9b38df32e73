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

/**
 * get-event-history `{limit?, offset?}`: limit an integer 1..1000 (default 50), offset an
 * integer ≥ 0 (default 0); no payload (or null) means the defaults. Undefined when invalid.
 */
export function historyParams(v: unknown): HistoryParams | undefined {
  if (v === undefined || v === null) return { limit: 50, offset: 0 };
  if (typeof v !== 'object' || Array.isArray(v)) return undefined;
  const { limit = 50, offset = 0 } = v as Record<string, unknown>;
  if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > 1000) return undefined;
  if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) return undefined;
  return { limit, offset };
}
