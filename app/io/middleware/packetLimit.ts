import type { Application, Context } from 'egg';
import type { Socket } from 'socket.io';
import { PacketBucket } from '../../lib/socketLimits';

/** How a refused packet is answered: the way its handler answers a full operation queue. */
function refuse(socket: Socket, packet: unknown[]) {
  const last = packet[packet.length - 1];
  const ack = typeof last === 'function' ? last as (answer: unknown) => void : undefined;
  switch (packet[0]) {
    case 'join-token':
    case 'leave-token':
    case 'leave-all':
      ack?.({ ok: false, reason: 'too_many_requests' });
      break;
    case 'send-event':
      socket.emit('event-error', { reason: 'rate_limited' });
      ack?.({ ok: false, reason: 'rate_limited' });
      break;
    case 'get-event-history':
      socket.emit('event-history-error', { reason: 'rate_limited' });
      ack?.({ ok: false, reason: 'rate_limited' });
      break;
    default:
      // Not an event of the channel: nothing would have answered it.
      break;
  }
}

/**
 * Packets per socket (SOCKET_PACKET_RATE per second, bursts of SOCKET_PACKET_BURST).
 *
 * A connection middleware that installs a Socket.IO packet middleware (`socket.use`),
 * not an egg-socket.io `packetMiddleware`: egg-socket.io creates an egg context for
 * every packet before its packet middlewares run, and that context is what a flood of
 * packets costs. Installed here, before egg-socket.io's own `socket.use` (added on the
 * `connection` event, after the connection middlewares), a refused packet is answered
 * at once and never reaches egg: no context, no controller, no queue entry. After
 * SOCKET_PACKET_BURST refusals in a row the socket is disconnected (`io server disconnect`).
 */
export default (app: Application) => async function packetLimit(ctx: Context, next: () => Promise<void>) {
  const { socketPacketRate: rate, socketPacketBurst: burst } = app.settings;
  if (rate > 0) {
    const socket = ctx.socket;
    const bucket = new PacketBucket(rate, burst);
    let refusedInARow = 0;
    socket.use((packet, proceed) => {
      if (bucket.take()) {
        refusedInARow = 0;
        return proceed();
      }
      // No proceed(): the packet goes no further.
      if (socket.disconnected) return;
      refuse(socket, packet);
      // A client that goes on sending a whole burst past its budget, with no packet
      // accepted in between, is flooding: it is disconnected, which stops the server
      // from reading (and answering) the rest of what it sent.
      if (++refusedInARow >= burst) socket.disconnect(true);
    });
  }
  await next();
};
