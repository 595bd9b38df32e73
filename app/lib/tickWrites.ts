import type { Writable } from 'node:stream';

/** Streams held until the end of the current tick. */
const held = new WeakSet<Writable>();

/**
 * Holds `stream`'s writes until the end of the current tick (the running callback and
 * the promise continuations it sets off), then sends them in one system call. Calls
 * within the same tick share one cork; nothing is held past the tick.
 */
export function holdWritesForTick(stream: Writable): void {
  if (held.has(stream)) return;
  held.add(stream);
  stream.cork();
  // A tick queued now runs once the current microtask queue has drained.
  process.nextTick(() => {
    held.delete(stream);
    stream.uncork();
  });
}

/** What coalescePublishes needs of an ioredis client. */
export interface PublishingClient {
  status: string;
  stream?: Writable;
  publish(...args: any[]): any;
}

/**
 * Makes the PUBLISHes of one tick after the first leave together in one socket write.
 *
 * A batch of KV writes (app/lib/kvWriter.ts) is answered in one tick, and each answer
 * broadcasts a `kv-key-changed` through the Socket.IO Redis adapter: one PUBLISH each,
 * each its own write system call (docs/PERFORMANCE.md). The first PUBLISH of a tick
 * is sent at once, as before: a lone broadcast reaches the other workers while this one
 * is still writing to its own sockets (holding it until the end of the tick would put
 * it behind them). Those after it in the same tick are held until the end of that tick
 * and sent in one write; none waits for a later turn of the event loop (unlike ioredis
 * auto-pipelining).
 */
export function coalescePublishes(client: PublishingClient): void {
  const publish = client.publish.bind(client);
  let tickOpen = false;
  client.publish = (...args: unknown[]) => {
    if (client.status === 'ready' && client.stream) {
      if (tickOpen) {
        holdWritesForTick(client.stream);
      } else {
        tickOpen = true;
        process.nextTick(() => {
          tickOpen = false;
        });
      }
    }
    return publish(...args);
  };
}
