import IORedis from 'ioredis';
import type { Settings } from '../../../config/env';
import { CommandClient, RedisState } from '../../lib/state/redis';

/**
 * Tells a running cluster about imported data, through the same shared state the
 * workers use (app/lib/state/redis.ts): the imported devices' revisions are raised,
 * so every worker's value cache (app/lib/valueCache.ts, tagged by device revision)
 * reads them fresh, and replaced tokens are announced on the bus (`token-updated`) so
 * every worker drops its cached copy. Without REDIS_URL (the embedded default) there is
 * no cluster to tell: the one server process must not run during an import.
 */
export class ClusterNotifier {
  private readonly client: IORedis;
  private readonly state: RedisState;

  constructor(settings: Settings & { redisUrl: string }) {
    this.client = new IORedis(settings.redisUrl, { maxRetriesPerRequest: 2, connectTimeout: 5000, lazyConnect: true });
    this.client.on('error', () => undefined);
    this.state = new RedisState(this.client as unknown as CommandClient, {
      url: settings.redisUrl,
      prefix: settings.redisPrefix,
      heartbeatMs: settings.presenceHeartbeatMs,
      ttlMs: settings.presenceTtlMs,
      logger: { warn: () => undefined, info: () => undefined },
    });
  }

  async connect() {
    await this.client.connect();
  }

  async committed(revisions: Array<{ deviceId: number; revision: number }>, tokens: string[]) {
    for (let i = 0; i < revisions.length; i += 500) await this.state.kvRevisionsRaise(revisions.slice(i, i + 500));
    for (const token of tokens) await this.state.publish({ type: 'token-updated', token });
  }

  async close() {
    this.client.disconnect();
  }
}
