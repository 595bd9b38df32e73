import { Controller } from 'egg';
import { socketArgs } from '../../lib/socketArgs';
import type { HistoryAck, SendEventAck } from '../../service/events';

/**
 * send-event / get-event-history (CONTRACT.md §6.4). Nothing is thrown to the client
 * (Socket.IO 4 drops errors from controllers): every outcome goes through events and the ack.
 */
export default class EventController extends Controller {
  async send() {
    const { payload, ack } = socketArgs<SendEventAck>(this.ctx.args);
    const result = await this.ctx.service.events.send(this.ctx.socket, payload);
    ack?.(result);
  }

  async history() {
    const { payload, ack } = socketArgs<HistoryAck>(this.ctx.args);
    const result = await this.ctx.service.events.history(this.ctx.socket, payload);
    ack?.(result);
  }
}
