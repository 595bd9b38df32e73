import { Service } from 'egg';
import type { Socket } from 'socket.io';
import type { SocketChannel } from '../lib/realtime';
import type { HistoryRecord } from './changes';
import { uuidv7 as uuidV7 } from '../lib/uuidv7';

export interface SenderInfo {
  appId: string;
  deviceType: string | null;
  deviceName: string;
  isReadOnly: boolean;
  note: string | null;
}

/** `event-sent`, the sender's receipt. */
export interface EventSent {
  eventId: string;
  eventName: string;
  timestamp: string;
  targetDevices: number;
  senderInfo: SenderInfo;
}

/** `event-history`. */
export interface EventHistory {
  devices: Record<string, HistoryRecord[]>;
  timestamp: string;
  requestedBy: { deviceType: string | null; deviceName: string; isReadOnly: boolean };
}

function senderInfo(channel: SocketChannel): SenderInfo {
  const { token, deviceName } = channel;
  return { appId: token.appId, deviceType: token.deviceType, deviceName, isReadOnly: token.isReadOnly, note: token.note };
}

/**
 * Relayed events (§6.4): send-event and get-event-history, once app/io/controller/event.ts
 * has checked the request (input, joined, read-only, quota). The history is the device
 * log (app/service/changes.ts), shared with the KV change log: one store, the same on
 * every worker.
 */
export default class EventsService extends Service {
  /**
   * Records the event `name` in the history of every device of the channel, then relays
   * it to their rooms on every worker, `from` excluded. Throws when it cannot be recorded:
   * an event the history cannot show is not relayed.
   */
  async send(from: Socket, channel: SocketChannel, name: string, content: Record<string, unknown> | null): Promise<EventSent> {
    const at = new Date();
    const timestamp = at.toISOString();
    const info = senderInfo(channel);
    const event = { eventId: uuidV7(at.getTime()), content, timestamp, senderId: from.id, senderInfo: info };
    await this.ctx.service.changes.recordEvent(channel.devices.map(d => d.id), name, event, at);
    this.app.realtime.relay(from, channel.devices.map(d => d.uuid), name, event);
    this.app.metrics.eventDelivered(name, channel.devices.length);
    return { eventId: event.eventId, eventName: name, timestamp, targetDevices: channel.devices.length, senderInfo: info };
  }

  /** The most recent `limit` records after skipping the `offset` most recent, of every device of the channel. */
  async history(channel: SocketChannel, limit: number, offset: number): Promise<EventHistory> {
    const devices: Record<string, HistoryRecord[]> = {};
    for (const device of channel.devices) {
      devices[device.uuid] = await this.ctx.service.changes.history(device, limit, offset);
    }
    const { token, deviceName } = channel;
    return {
      devices,
      timestamp: new Date().toISOString(),
      requestedBy: { deviceType: token.deviceType, deviceName, isReadOnly: token.isReadOnly },
    };
  }
}
