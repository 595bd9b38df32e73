import { isIP } from 'node:net';
import type { Socket } from 'node:net';

/** Longest textual IP address (an IPv4-mapped IPv6 address in full form); the creatorIp column holds 64. */
const MAX_IP_LENGTH = 45;

/** A textual IPv4 or IPv6 address (zone ids allowed, within MAX_IP_LENGTH). */
export function isValidIp(v: string | undefined): v is string {
  return !!v && v.length <= MAX_IP_LENGTH && isIP(v) !== 0;
}

interface IpRequest {
  ips: string[];
  socket: Socket;
  _ip?: string;
}

export default {
  /**
   * The client address (egg's `request.ip`, hence `ctx.ip`, the log prefix and
   * `ctx.clientIp`): with TRUST_PROXY the last X-Forwarded-For hop (config.maxIpsCount),
   * but only when it is a valid IP address; a forwarded hop that is not (garbage, a
   * port, 300 characters) is ignored and the TCP peer is used, as without TRUST_PROXY.
   */
  get ip(): string {
    const self = this as unknown as IpRequest;
    if (self._ip) return self._ip;
    const forwarded = self.ips[0]?.trim();
    const ip = isValidIp(forwarded) ? forwarded : self.socket?.remoteAddress ?? '';
    self._ip = /^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(ip) ? ip.slice(7) : ip;
    return self._ip;
  },
};
