import { Service } from 'egg';
import type { DatabaseCounts } from '../lib/metrics';

/** Longest wait for a backing service's answer in a probe (readiness, health gauges). */
const PROBE_TIMEOUT_MS = 2000;

/** What `promise` resolves to, if it does within `ms`; undefined when it rejects or takes longer. */
async function valueWithin<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>(resolve => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  try {
    return await Promise.race([ promise.catch(() => undefined), late ]);
  } finally {
    clearTimeout(timer);
  }
}

/** True when `promise` resolves within `ms`; false when it rejects or takes longer. */
async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  return (await valueWithin(promise.then(() => true), ms)) ?? false;
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

  /**
   * Devices and keys of the whole database. Counted at most once per METRICS_CACHE_MS by
   * each worker (counting every key is a full index scan on InnoDB), by one query pair at
   * a time that concurrent scrapes share (app.metricsCounts). A scrape waits for it at
   * most the probe timeout; `{}` (the gauges left out) when the count fails or is late.
   */
  private async counts(): Promise<Partial<DatabaseCounts>> {
    const { app } = this;
    const counting = app.metricsCounts.get(() => this.countRows(), app.settings.metricsCacheMs);
    const counts = await valueWithin(counting, PROBE_TIMEOUT_MS);
    return counts ?? {};
  }

  private async countRows(): Promise<DatabaseCounts> {
    const { model } = this.app;
    try {
      const [ registeredDevices, keys ] = await Promise.all([ model.Device.count(), model.KvEntry.count() ]);
      return { registeredDevices, keys };
    } catch (err) {
      this.ctx.logger.warn('[metrics] counting devices and keys failed: %s', (err as Error).message);
      throw err;
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
