import { EventEmitter } from 'node:events';

/** Published by the KV service after a write has been committed. */
export type KvChange =
  | { uuid: string; key: string; action: 'upsert'; created: boolean; updatedAt: string; revision: number; batch?: true }
  | { uuid: string; key: string; action: 'delete'; deletedAt: string; revision: number };

/**
 * In-process channel from the KV write path to whoever listens (the realtime
 * layer). HTTP code publishes here and knows nothing about sockets.
 */
export class KvEvents extends EventEmitter {
  /** Fault injection (the fault suite only, app.ts): runs before each change is published. */
  beforePublish?: (change: KvChange) => void;

  publish(change: KvChange) {
    this.beforePublish?.(change);
    this.emit('change', change);
  }

  /** Calls `listener` with every committed change; returns a function that unsubscribes it. */
  subscribe(listener: (change: KvChange) => void): () => void {
    this.on('change', listener);
    return () => {
      this.off('change', listener);
    };
  }
}
