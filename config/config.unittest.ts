import path from 'node:path';
import type { EggAppConfig, PowerPartial } from 'egg';

/**
 * Tests use the same configuration as production, read from the environment
 * (DATABASE_URL / REDIS_URL). Without them they run on a throw-away SQLite file
 * (run/test.sqlite, or SQLITE_PATH).
 */
export default () => {
  const config = {} as PowerPartial<EggAppConfig>;
  if (!process.env.DATABASE_URL && !process.env.SQLITE_PATH) {
    config.sequelize = { storage: path.join(process.cwd(), 'run', 'test.sqlite') } as any;
  }
  config.logger = { consoleLevel: 'WARN' } as any;
  return config;
};
