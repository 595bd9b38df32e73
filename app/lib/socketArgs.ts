/** Splits egg-socket.io's ctx.args into the payload and the optional ack callback (the last argument, when a function). */
export function socketArgs<A>(args: unknown[]): { payload: unknown; ack?: (result: A) => void } {
  const last = args[args.length - 1];
  const ack = typeof last === 'function' ? last as (result: A) => void : undefined;
  return { payload: args[0] === last && ack ? undefined : args[0], ack };
}
