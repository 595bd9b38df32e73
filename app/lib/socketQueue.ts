/**
 * Per-socket operation queues (app/lib/realtime.ts): each socket's operations (joins,
 * leaves, send-event, get-event-history) run one at a time, in arrival order, so their
 * events and acks come out in that order. A queue holds at most `max` operations
 * (the running one included): a client that sends faster than they complete gets the
 * operations beyond that refused at once, instead of growing the server's memory.
 */
export class SocketQueues {
  /** socket id → tail of its queue and how many operations it holds. */
  private readonly queues = new Map<string, { tail: Promise<unknown>; pending: number }>();

  constructor(private readonly max: number) {}

  /**
   * Runs `op` after every earlier operation of the socket `id`; when the queue is full,
   * answers `refused()` at once (called synchronously) and `op` never runs. `op` must
   * not throw (a rejection is passed to the caller, the queue goes on).
   */
  run<T>(id: string, op: () => Promise<T>, refused: () => T): Promise<T> {
    let queue = this.queues.get(id);
    if (!queue) {
      queue = { tail: Promise.resolve(), pending: 0 };
      this.queues.set(id, queue);
    }
    if (queue.pending >= this.max) return Promise.resolve(refused());
    queue.pending += 1;
    const run = queue.tail.then(op);
    const tail = run.then(() => undefined, () => undefined);
    queue.tail = tail;
    const q = queue;
    tail.then(() => {
      q.pending -= 1;
      if (q.pending === 0 && this.queues.get(id) === q) this.queues.delete(id);
    });
    return run;
  }
}
