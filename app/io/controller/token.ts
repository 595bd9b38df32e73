import { Controller } from 'egg';
import type { AckResult } from '../../lib/realtime';
import { socketArgs } from '../../lib/socketArgs';
import { joinSince } from '../../validator/kv';

const parse = (args: unknown[]) => socketArgs<AckResult>(args);

function tokenOf(payload: unknown): string | undefined {
  if (typeof payload !== 'object' || payload === null) return undefined;
  const p = payload as Record<string, unknown>;
  for (const v of [ p.token, p.apptoken ]) if (typeof v === 'string' && v !== '') return v;
  return undefined;
}

/**
 * join-token / leave-token / leave-all. Nothing is thrown to the client (Socket.IO 4
 * drops errors from controllers): every outcome goes through events and the ack.
 */
export default class TokenController extends Controller {
  async join() {
    const { payload, ack } = parse(this.ctx.args);
    const token = tokenOf(payload);
    if (!token) return ack?.({ ok: false, reason: 'missing_token' });
    const since = joinSince((payload as Record<string, unknown>).since);
    // Not `ack?.(await ...)`: an optional call skips evaluating its arguments when there is no ack.
    const result = since === 'invalid'
      ? await this.app.realtime.refuseJoin(this.ctx.socket, 'invalid_since')
      : await this.app.realtime.join(this.ctx.socket, token, since);
    ack?.(result);
  }

  async leave() {
    const { payload, ack } = parse(this.ctx.args);
    const token = tokenOf(payload);
    if (!token) return ack?.({ ok: false, reason: 'missing_token' });
    const result = await this.app.realtime.leaveToken(this.ctx.socket, token);
    ack?.(result);
  }

  async leaveAll() {
    const { ack } = parse(this.ctx.args);
    const result = await this.app.realtime.leaveAll(this.ctx.socket);
    ack?.(result);
  }
}
