import { Controller } from 'egg';
import type { Socket } from 'socket.io';
import { describeError, isDatabaseUnavailable } from '../../lib/errors';
import { tokenQuotaId } from '../../lib/kvToken';
import { socketArgs } from '../../lib/socketArgs';
import {
  MAX_CONTENT_LENGTH, RESERVED_EVENT_NAMES, contentLength, eventType, historyParams, isEventContent, isEventPayload,
} from '../../validator/event';

export type SendEventReason =
  | 'invalid_data_format' | 'invalid_event_type' | 'content_must_be_object_or_null' | 'not_joined_any_device'
  | 'readonly_token_cannot_send_events' | 'content_too_large' | 'reserved_event_type' | 'rate_limited' | 'internal_error';

export type SendEventAck = { ok: true; eventId: string } | { ok: false; reason: SendEventReason };

export type HistoryReason = 'not_joined_any_device' | 'rate_limited' | 'internal_error';

/** The history itself is the `event-history` event; the ack only says how it went. */
export type HistoryAck = { ok: true } | { ok: false; reason: HistoryReason };

/**
 * send-event / get-event-history (CONTRACT.md §6.4). Nothing is thrown to the client
 * (Socket.IO 4 drops errors from controllers): every outcome goes through events and the ack.
 *
 * Both run in the socket's operation queue (app/lib/realtime.ts), after the joins and
 * leaves the client sent before them, and one at a time: a sender's events are relayed
 * in the order it sent them. A socket whose queue is full is answered `rate_limited`
 * at once.
 */
export default class EventController extends Controller {
  async send() {
    const { payload, ack } = socketArgs<SendEventAck>(this.ctx.args);
    const socket = this.ctx.socket;
    const refuse = (reason: SendEventReason): SendEventAck => {
      socket.emit('event-error', reason === 'content_too_large' ? { reason, maxSize: MAX_CONTENT_LENGTH } : { reason });
      return { ok: false, reason };
    };
    const result = await this.app.realtime.serial(socket, () => this.relay(socket, payload, refuse), () => refuse('rate_limited'));
    ack?.(result);
  }

  /**
   * The contract's order of checks (§6.4), the first failing one answers: input
   * (format, type, content) → joined → read-only → size → reserved name → quota.
   * Size and reserved names are input checks too, but the contract puts them after the
   * read-only rule, so they sit between authorization and the quota.
   */
  private async relay(socket: Socket, payload: unknown, refuse: (reason: SendEventReason) => SendEventAck): Promise<SendEventAck> {
    if (!isEventPayload(payload)) return refuse('invalid_data_format');
    const name = eventType(payload.type);
    if (name === undefined) return refuse('invalid_event_type');
    const content = payload.content;
    if (!isEventContent(content)) return refuse('content_must_be_object_or_null');
    const channel = this.app.realtime.channelOf(socket);
    if (!channel) return refuse('not_joined_any_device');
    if (channel.token.isReadOnly) return refuse('readonly_token_cannot_send_events');
    if (contentLength(content) > MAX_CONTENT_LENGTH) return refuse('content_too_large');
    if (RESERVED_EVENT_NAMES.has(name)) return refuse('reserved_event_type');
    if (await this.overQuota('events', channel.token.token)) return refuse('rate_limited');

    let sent;
    try {
      sent = await this.ctx.service.events.send(socket, channel, name, content);
    } catch (err) {
      this.logFailure('recording an event', err);
      return refuse('internal_error');
    }
    socket.emit('event-sent', sent);
    return { ok: true, eventId: sent.eventId };
  }

  async history() {
    const { payload, ack } = socketArgs<HistoryAck>(this.ctx.args);
    const socket = this.ctx.socket;
    const fail = (reason: HistoryReason): HistoryAck => {
      socket.emit('event-history-error', { reason });
      return { ok: false, reason };
    };
    const result = await this.app.realtime.serial(socket, () => this.answerHistory(socket, payload, fail), () => fail('rate_limited'));
    ack?.(result);
  }

  /** Parameters (never refused: clamped, as 1.3 clients expect) → joined → quota. */
  private async answerHistory(socket: Socket, payload: unknown, fail: (reason: HistoryReason) => HistoryAck): Promise<HistoryAck> {
    const { limit, offset } = historyParams(payload);
    const channel = this.app.realtime.channelOf(socket);
    if (!channel) return fail('not_joined_any_device');
    if (await this.overQuota('history', channel.token.token)) return fail('rate_limited');
    let answer;
    try {
      answer = await this.ctx.service.events.history(channel, limit, offset);
    } catch (err) {
      this.logFailure('reading the event history', err);
      return fail('internal_error');
    }
    socket.emit('event-history', answer);
    return { ok: true };
  }

  /** Counts one request of the token in `bucket`, cluster-wide; fails open when shared state is unreachable. */
  private async overQuota(bucket: 'events' | 'history', token: string): Promise<boolean> {
    const { windowMs, [bucket]: limit } = this.app.settings.rateLimit;
    if (limit <= 0) return false;
    const id = tokenQuotaId(token);
    try {
      return (await this.app.sharedState.rateHit(bucket, id, windowMs)).count > limit;
    } catch (err) {
      this.app.logger.warn('[events] rate limit unavailable, not limiting: %s', describeError(err));
      return false;
    }
  }

  /** One line without the error's properties (the failed query holds users' event contents). */
  private logFailure(what: string, err: unknown) {
    if (isDatabaseUnavailable(err)) this.app.logger.warn('[events] %s failed, database unavailable: %s', what, describeError(err));
    else this.app.logger.error('[events] %s failed: %s', what, describeError(err));
  }
}
