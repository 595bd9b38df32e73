import type { Context } from 'egg';

export default {
  /**
   * The client address: the TCP peer, or the last hop of X-Forwarded-For when
   * TRUST_PROXY is set (egg's `ctx.ip` with `config.proxy`).
   */
  get clientIp(): string {
    return ((this as unknown as Context).ip || '').replace(/^::ffff:/, '');
  },
};
