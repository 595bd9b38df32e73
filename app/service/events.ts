import crypto from 'node:crypto';
import { Service } from 'egg';
import type { Socket } from 'socket.io';
import type { SocketChannel } from '../lib/realtime';
import { isDatabaseUnavailable } from '../lib/errors';
import type { HistoryRecord } from './changes';
import { newInstallId as uuidV7 } from './appInstall';
import {
  MAX_CONTENT_LENGTH, RESERVED_EVENT_NAMES, contentLength, eventType, historyParams, isEventContent, isEventPayload,
} from '../validator/event';

export type SendEventReason =
  | 'invalid_data_format' | 'invalid_event_type' | 'content_must_be_object_or_null' | 'not_joined_any_device'
  | 'readonly_token_cannot_send_events' | 'content_too_large' | 'reserved_event_type' | 'rate_limited' | 'internal_error';

export type SendEventAck = { ok: true; eventId: string } | { ok: false; reason: SendEventReason };

export type HistoryReason = 'invalid_parameters' | 'not_joined_any_device' | 'internal_error';

export interface EventHistory {
  devices: Record<string, HistoryRecord[]>;
  timestamp: string;
  requestedBy: { deviceType: string | null; deviceName: string; isReadOnly: boolean };
}

export type HistoryAck = ({ ok: true } & EventHistory) | { ok: false; reason: HistoryReason };

function senderInfo(channel: SocketChannel) {
  const { token, deviceName } = channel;
  return { appId: token.appId, deviceType: token.deviceType, deviceName, isReadOnly: token.isReadOnly, note: token.note };
}

/**
 * Relayed events (§6.4): send-event and get-event-history. The history is the device log
 * (app/service/changes.ts), shared with the KV change log: one store, the same on every
 * worker. Both run in the socket's operation queue (app/lib/realtime.ts), after the
 * joins and leaves the client sent before them, and one at a time: a sender's events are
 * relayed in the order it sent them.
 */
export default class EventsService extends Service {
  /** send-event `{type, content}`. Never throws: every outcome is an event to the sender and the ack's value. */
  send(socket: Socket, payload: unknown): Promise<SendEventAck> {
    return this.app.realtime.serial(socket, () => this.doSend(socket, payload));
  }

  /** get-event-history `{limit?, offset?}`. Never throws. */
  history(socket: Socket, payload: unknown): Promise<HistoryAck> {
    return this.app.realtime.serial(socket, () => this.doHistory(socket, payload));
  }

  private refuse(socket: Socket, reason: SendEventReason): SendEventAck {
    socket.emit('event-error', reason === 'content_too_large' ? { reason, maxSize: MAX_CONTENT_LENGTH } : { reason });
    return { ok: false, reason };
  }

  private async doSend(socket: Socket, payload: unknown): Promise<SendEventAck> {
    // The contract's order (CONTRACT.md §6.4): the first failing check answers.
    if (!isEventPayload(payload)) return this.refuse(socket, 'invalid_data_format');
    const name = eventType(payload.type);
    if (name === undefined) return this.refuse(socket, 'invalid_event_type');
    const content = payload.content;
    if (!isEventContent(content)) return this.refuse(socket, 'content_must_be_object_or_null');
    const channel = this.app.realtime.channelOf(socket);
    if (!channel) return this.refuse(socket, 'not_joined_any_device');
    if (channel.token.isReadOnly) return this.refuse(socket, 'readonly_token_cannot_send_events');
    if (contentLength(content) > MAX_CONTENT_LENGTH) return this.refuse(socket, 'content_too_large');
    if (RESERVED_EVENT_NAMES.has(name)) return this.refuse(socket, 'reserved_event_type');
    if (await this.overQuota(channel.token.token)) return this.refuse(socket, 'rate_limited');

    const at = new Date();
    const timestamp = at.toISOString();
    const info = senderInfo(channel);
    const event = { eventId: uuidV7(at.getTime()), content, timestamp, senderId: socket.id, senderInfo: info };
    try {
      // Durable first: an event the history cannot show is not announced as sent.
      await this.ctx.service.changes.recordEvent(channel.devices.map(d => d.id), name, event, at);
    } catch (err) {
      this.logFailure('recording an event', err);
      return this.refuse(socket, 'internal_error');
    }
    this.app.realtime.relay(socket, channel.devices.map(d => d.uuid), name, event);
    this.app.metrics.eventDelivered(name, channel.devices.length);
    socket.emit('event-sent', { eventId: event.eventId, eventName: name, timestamp, targetDevices: channel.devices.length, senderInfo: info });
    return { ok: true, eventId: event.eventId };
  }

  /** Counts one send-event of the token (cluster-wide); fails open when shared state is unreachable. */
  private async overQuota(token: string): Promise<boolean> {
    const { events: limit, windowMs } = this.app.settings.rateLimit;
    if (limit <= 0) return false;
    const id = crypto.createHash('sha256').update(token).digest('base64url');
    try {
      return (await this.app.sharedState.rateHit('events', id, windowMs)).count > limit;
    } catch (err) {
      this.logger.warn('[events] rate limit unavailable, not limiting: %s', (err as Error).message);
      return false;
    }
  }

  private async doHistory(socket: Socket, payload: unknown): Promise<HistoryAck> {
    const fail = (reason: HistoryReason): HistoryAck => {
      socket.emit('event-history-error', { reason });
      return { ok: false, reason };
    };
    const params = historyParams(payload);
    if (!params) return fail('invalid_parameters');
    const channel = this.app.realtime.channelOf(socket);
    if (!channel) return fail('not_joined_any_device');
    const devices: Record<string, HistoryRecord[]> = {};
    try {
      for (const device of channel.devices) {
        devices[device.uuid] = await this.ctx.service.changes.history(device, params.limit, params.offset);
      }
    } catch (err) {
      this.logFailure('reading the event history', err);
      return fail('internal_error');
    }
    const { token, deviceName } = channel;
    const answer: EventHistory = {
      devices,
      timestamp: new Date().toISOString(),
      requestedBy: { deviceType: token.deviceType, deviceName, isReadOnly: token.isReadOnly },
    };
    socket.emit('event-history', answer);
    return { ok: true, ...answer };
  }

  private logFailure(what: string, err: unknown) {
    if (isDatabaseUnavailable(err)) this.logger.warn('[events] %s failed, database unavailable: %s', what, (err as Error).message);
    else this.logger.error(err as Error);
  }
}
