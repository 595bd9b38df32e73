import type { Application, Context } from 'egg';
import { describeError } from '../../lib/errors';
import { joinSince } from '../../validator/kv';

function handshakeToken(query: Record<string, unknown>): string | undefined {
  for (const name of [ 'token', 'apptoken' ]) {
    const v = query[name];
    if (typeof v === 'string' && v !== '') return v;
  }
  return undefined;
}

/**
 * Connection middleware. Every socket is accepted (a bad token is answered with
 * `join-error`, as clients expect); a handshake `token`/`apptoken` joins that
 * token's device room once the connection is established. The socket's
 * `disconnect` clears its presence. The chain ends once the socket is admitted
 * (patches/egg-socket.io: a context held until disconnect cost every socket
 * kilobytes), so nothing here may wait for the disconnect after `next()`.
 */
export default (app: Application) => async function auth(ctx: Context, next: () => Promise<void>) {
  const socket = ctx.socket;
  // The address failed token lookups are counted under (RATE_LIMIT_TOKEN_FAILURES), as for HTTP.
  (socket.data as { clientIp?: string }).clientIp = ctx.clientIp;
  const query = socket.handshake.query as Record<string, unknown>;
  const token = handshakeToken(query);
  if (token) {
    // `since` (CONTRACT.md §7): the changes after it follow `joined`; a bad one refuses the join.
    const since = joinSince(query.since);
    // Socket.IO sends the CONNECT packet after the middlewares; join once it has.
    setImmediate(() => {
      const joining = since === 'invalid' ? app.realtime.refuseJoin(socket, 'invalid_since') : app.realtime.join(socket, token, since);
      joining.then(result => {
        // join-token answers a refusal through its ack; a handshake join has none: tell the
        // client with join-error (its address is past RATE_LIMIT_TOKEN_FAILURES, or its queue is full).
        if (!result.ok && result.reason === 'too_many_requests') socket.emit('join-error', { by: 'token', reason: 'too_many_requests' });
      }).catch(err => app.logger.error('[realtime] join failed: %s', describeError(err)));
    });
  }
  // Socket.IO emits `disconnect` for every socket that was connected; one closed during
  // the handshake never had realtime state (Realtime.stateOf needs a connected socket).
  socket.once('disconnect', () => {
    app.realtime.detach(socket).catch(err => app.logger.error('[realtime] detach failed: %s', describeError(err)));
  });
  await next();
};
