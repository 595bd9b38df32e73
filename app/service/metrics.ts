import { Service } from 'egg';

/** Longest wait for a backing service's answer in a probe (readiness, health gauges). */
const PROBE_TIMEOUT_MS = 2000;

/** True when `promise` resolves within `ms`; false when it rejects or takes longer. */
async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>(resolve => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([ promise.then(() => true, () => false), late ]);
  } finally {
    clearTimeout(timer);
  }
}

export interface Health {
  database: boolean;
  /** `undefined` when Redis is not configured (embedded mode). */
  redis?: boolean;
}

/** Readiness and the figures of `GET /metrics` (the metrics themselves: app/lib/metrics.ts). */
export default class MetricsService extends Service {
  /** Probes the database (`SELECT 1`) and Redis (`PING`, when configured) at once, each bounded. */
  async health(): Promise<Health> {
    const { app } = this;
    const [ database, redis ] = await Promise.all([
      within(app.model.query('SELECT 1'), PROBE_TIMEOUT_MS),
      app.settings.redisUrl ? within(app.sharedState.probe(), PROBE_TIMEOUT_MS) : Promise.resolve(undefined),
    ]);
    return { database, redis };
  }

  /** Counts of the whole database; `undefined` when it cannot be read. */
  private async counts(): Promise<{ registeredDevices?: number; keys?: number }> {
    const { model } = this.ctx;
    try {
      const [ registeredDevices, keys ] = await Promise.all([ model.Device.count(), model.KvEntry.count() ]);
      return { registeredDevices, keys };
    } catch (err) {
      this.ctx.logger.warn('[metrics] counting devices and keys failed: %s', (err as Error).message);
      return {};
    }
  }

  /** The whole cluster's metrics in Prometheus text format. */
  async render(): Promise<string> {
    const [ health, counts ] = await Promise.all([ this.health(), this.counts() ]);
    return this.app.metrics.render({
      ...(health.database ? counts : {}),
      databaseUp: health.database,
      redisUp: health.redis,
    });
  }
}
