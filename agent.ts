import type { Agent, IBoot } from 'egg';
import { migrateUp } from './app/lib/migrator';

/**
 * The agent starts before any worker: it applies pending migrations once for the
 * whole cluster (AUTO_MIGRATE, on by default), so a first `npm start` on the
 * embedded SQLite default needs no separate step.
 */
export default class AgentBoot implements IBoot {
  constructor(private readonly agent: Agent) {}

  async willReady() {
    const { agent } = this;
    if (!agent.config.classworks.autoMigrate) return;
    const applied = await migrateUp(agent.model);
    if (applied.length) agent.coreLogger.info('[migrate] applied %s', applied.join(', '));
  }
}
