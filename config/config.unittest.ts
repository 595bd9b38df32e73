import path from 'node:path';
import type { EggAppConfig, PowerPartial } from 'egg';

/**
 * Tests use the same configuration as production, read from the environment
 * (DATABASE_URL / REDIS_URL). Without them they run on a throw-away SQLite file.
 */
export default () => {
  const config = {} as PowerPartial<EggAppConfig>;
  if (!process.env.DATABASE_URL) {
    config.sequelize = { storage: path.join(process.cwd(), 'run', 'test.sqlite') } as any;
  }
  config.logger = { consoleLevel: 'WARN' } as any;
  return config;
};
