import { app } from 'egg-mock/bootstrap';

/**
 * A clean world for every test: empty tables, empty shared state (the test Redis
 * db, or the in-process state), empty token cache.
 */
export async function resetWorld() {
  const db = app.model;
  if (db.getDialect() === 'mysql') {
    // FOREIGN_KEY_CHECKS is per connection: every statement on one connection of the pool
    // (a transaction pins it; TRUNCATE commits implicitly, which is fine here).
    await db.transaction(async transaction => {
      await db.query('SET FOREIGN_KEY_CHECKS = 0', { transaction });
      try {
        for (const t of [ 'device_log', 'auto_auth_configs', 'kv_entries', 'app_installs', 'devices', 'accounts' ]) await db.query(`TRUNCATE TABLE ${t}`, { transaction });
      } finally {
        await db.query('SET FOREIGN_KEY_CHECKS = 1', { transaction });
      }
    });
  } else {
    for (const t of [ 'device_log', 'auto_auth_configs', 'kv_entries', 'app_installs', 'devices', 'accounts' ]) await db.query(`DELETE FROM ${t}`);
  }
  app.tokenCache.clear();
  app.valueCache.clear(); // the tables were emptied behind its back (revisions start over)
  app.metricsCounts.clear(); // so are the counts GET /metrics reuses
  const redis = (app as unknown as { redis?: { flushdb(): Promise<unknown> } }).redis;
  if (redis) await redis.flushdb();
  const state = app.sharedState as unknown as Record<'counters' | 'codes' | 'rooms' | 'revisions' | 'distrusted' | 'tickets', Map<unknown, unknown> | undefined>;
  state.counters?.clear();
  state.codes?.clear();
  state.rooms?.clear();
  state.revisions?.clear();
  state.distrusted?.clear();
  state.tickets?.clear();
}
