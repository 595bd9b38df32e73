import type { Agent, IBoot } from 'egg';
import { migrateUp } from './app/lib/migrator';
import { isDatabaseUnavailable } from './app/lib/errors';
import type { DatabaseSettings } from './config/env';

/** The database a server could not reach at start; its stack would only hide the message. */
export class DatabaseUnreachableError extends Error {
  constructor(where: string, cause: unknown) {
    const reason = cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause);
    super(`database unreachable: ${where} (${reason}); start the database or fix DATABASE_URL`);
    this.name = 'DatabaseUnreachableError';
    this.stack = `${this.name}: ${this.message}`;
  }
}

/** Where the database is, for messages: the URL without its password, or the SQLite file. */
export function describeDatabase(db: DatabaseSettings): string {
  if (db.dialect === 'sqlite') return `sqlite:${db.storage}`;
  const u = new URL(db.url);
  u.password = '';
  return u.toString();
}

/**
 * The agent starts before any worker. It checks once that the database answers (so
 * a server started while the database is down stops at once with one clear
 * message instead of egg-sequelize's retries and stack traces), then applies
 * pending migrations once for the whole cluster (AUTO_MIGRATE, on by default), so a
 * first `npm start` on the embedded SQLite default needs no separate step.
 */
export default class AgentBoot implements IBoot {
  constructor(private readonly agent: Agent) {}

  async didLoad() {
    const { agent } = this;
    try {
      await agent.model.authenticate();
    } catch (err) {
      if (isDatabaseUnavailable(err)) throw new DatabaseUnreachableError(describeDatabase(agent.config.classworks.database), err);
      throw err;
    }
  }

  async willReady() {
    const { agent } = this;
    if (!agent.config.classworks.autoMigrate) return;
    const applied = await migrateUp(agent.model);
    if (applied.length) agent.coreLogger.info('[migrate] applied %s', applied.join(', '));
  }
}
