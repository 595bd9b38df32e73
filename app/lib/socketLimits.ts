import type { IncomingMessage } from 'node:http';

/**
 * Per-client bounds of the Socket.IO channel that hold before any application work is
 * done: packets per socket (a token bucket, see app/io/middleware/packetLimit.ts) and
 * connections per client IP (every Engine.IO handshake, websocket or polling, EIO3 or
 * EIO4, passes engine.io's `allowRequest`: app.ts).
 */

/**
 * A token bucket: `burst` packets at once, refilled at `ratePerSecond`. Ten lines did
 * not justify a dependency; the node_modules tree has no rate limiter that works on a
 * plain in-memory counter without timers.
 */
export class PacketBucket {
  private tokens: number;
  private last: number;

  constructor(private readonly ratePerSecond: number, private readonly burst: number, now = Date.now()) {
    this.tokens = burst;
    this.last = now;
  }

  /** Takes one packet's worth; false when the bucket is empty (the packet is refused). */
  take(now = Date.now()): boolean {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.ratePerSecond);
    this.last = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

/**
 * The client address of a handshake request, as `ctx.clientIp` gives it for HTTP: the
 * TCP peer, or the last X-Forwarded-For hop when TRUST_PROXY is set (config.maxIpsCount 1).
 */
export function requestIp(req: IncomingMessage, trustProxy: boolean): string {
  if (trustProxy) {
    const header = req.headers['x-forwarded-for'];
    const hops = (Array.isArray(header) ? header.join(',') : header ?? '').split(',').map(h => h.trim()).filter(Boolean);
    if (hops.length > 0) return hops[hops.length - 1].replace(/^::ffff:/, '');
  }
  return (req.socket?.remoteAddress ?? '').replace(/^::ffff:/, '');
}

/**
 * Open Engine.IO connections per client IP on this worker. A handshake from an IP that
 * already holds `max` is refused (403 from engine.io) before a session is created.
 */
export class ConnectionsPerIp {
  private readonly open = new Map<string, number>();

  /** True when `ip` may open one more connection (`max` 0: no limit). */
  allows(ip: string, max: number): boolean {
    return max <= 0 || (this.open.get(ip) ?? 0) < max;
  }

  opened(ip: string) {
    this.open.set(ip, (this.open.get(ip) ?? 0) + 1);
  }

  closed(ip: string) {
    const left = (this.open.get(ip) ?? 1) - 1;
    if (left > 0) this.open.set(ip, left);
    else this.open.delete(ip);
  }

  /** Open connections of `ip` (tests, metrics). */
  count(ip: string): number {
    return this.open.get(ip) ?? 0;
  }
}
