import fs from 'node:fs';
import type { Application } from 'egg';
import { Op, Sequelize, Transaction } from 'sequelize';
import type { Settings } from '../../../config/env';
import { bumpRevision } from '../../lib/deviceRevision';
import { MIGRATIONS_DIR, migrateUp, pendingMigrations } from '../../lib/migrator';
import defineAccount from '../../model/account';
import defineAppInstall from '../../model/appInstall';
import defineAutoAuthConfig from '../../model/autoAuthConfig';
import defineDevice, { DeviceAttributes } from '../../model/device';
import defineDeviceLog from '../../model/deviceLog';
import defineKvEntry from '../../model/kvEntry';
import type { AccountAttributes } from '../../model/account';
import type { AppInstallAttributes } from '../../model/appInstall';
import type { AutoAuthConfigAttributes } from '../../model/autoAuthConfig';
import type { KvEntryAttributes } from '../../model/kvEntry';

/**
 * This server's database as the import's target: the configured DATABASE_URL (or the
 * embedded SQLite default), read through config/env.ts exactly as the server reads it,
 * the server's own models (app/model) and migrations (database/migrations).
 */
export class Target {
  readonly sequelize: Sequelize;
  readonly Account;
  readonly Device;
  readonly AppInstall;
  readonly AutoAuthConfig;
  readonly KvEntry;
  readonly DeviceLog;

  constructor(readonly settings: Settings) {
    const db = settings.database;
    // The options of config/config.default.ts (config.sequelize), for one connection.
    this.sequelize = db.dialect === 'mysql'
      ? new Sequelize(db.url, {
        dialect: 'mysql',
        timezone: '+00:00',
        dialectOptions: { charset: 'utf8mb4', connectTimeout: 5000 },
        pool: { max: 2, min: 0, acquire: 30000, idle: 10000 },
        logging: false,
        define: { underscored: false, freezeTableName: true, timestamps: true },
      })
      : new Sequelize({
        dialect: 'sqlite',
        storage: db.storage,
        pool: { max: 1, min: 0, acquire: 30000, idle: 60000 },
        logging: false,
        define: { underscored: false, freezeTableName: true, timestamps: true },
      });
    // The model files are written for egg-sequelize's `app`; they need only these two.
    const app = { Sequelize, model: this.sequelize } as unknown as Application;
    this.Account = defineAccount(app);
    this.Device = defineDevice(app);
    this.AppInstall = defineAppInstall(app);
    this.AutoAuthConfig = defineAutoAuthConfig(app);
    this.KvEntry = defineKvEntry(app);
    this.DeviceLog = defineDeviceLog(app);
  }

  /** Where the target is, without credentials. */
  describe(): string {
    const db = this.settings.database;
    if (db.dialect === 'sqlite') return `sqlite:${db.storage}`;
    const u = new URL(db.url);
    if (u.password) u.password = '***';
    return u.toString();
  }

  /**
   * Connects. `write`: applies the pending migrations and returns their names. Otherwise
   * (dry run) nothing is written: returns the pending ones, and tables they would create
   * read as empty.
   */
  async connect(write: boolean): Promise<string[]> {
    const db = this.settings.database;
    if (!write && db.dialect === 'sqlite' && db.storage !== ':memory:' && !fs.existsSync(db.storage)) {
      // Opening it would create the file: a dry run reads it as a database not created yet.
      for (const name of [ 'accounts', 'devices', 'app_installs', 'auto_auth_configs', 'kv_entries' ]) this.absent.add(name);
      this.unopened = true;
      return fs.readdirSync(MIGRATIONS_DIR).filter(f => /^\d+[\w-]+\.js$/.test(f)).sort();
    }
    await this.sequelize.authenticate();
    if (write) return migrateUp(this.sequelize);
    const pending = await pendingMigrations(this.sequelize);
    const tables = (await this.sequelize.getQueryInterface().showAllTables())
      .map(t => (typeof t === 'string' ? t : (t as { tableName: string }).tableName));
    for (const name of [ 'accounts', 'devices', 'app_installs', 'auto_auth_configs', 'kv_entries' ]) {
      if (!tables.includes(name)) this.absent.add(name);
    }
    return pending;
  }

  /** Tables not created yet (dry run before the migrations): they read as empty. */
  private readonly absent = new Set<string>();

  private has(table: string) {
    return !this.absent.has(table);
  }

  /** Dry run on an embedded database file that does not exist yet: never opened. */
  private unopened = false;

  async close() {
    if (!this.unopened) await this.sequelize.close();
  }

  transaction<T>(fn: (t: Transaction) => Promise<T>): Promise<T> {
    return this.sequelize.transaction(fn);
  }

  async accounts(ids: string[], providers: Array<{ provider: string; providerId: string }>, transaction?: Transaction) {
    if (ids.length === 0 || !this.has('accounts')) return [];
    return await this.Account.findAll({
      where: { [Op.or]: [{ id: ids }, ...providers.map(p => ({ provider: p.provider, providerId: p.providerId })) ] },
      raw: true, transaction,
    }) as unknown as AccountAttributes[];
  }

  async devicesByUuid(uuids: string[], transaction?: Transaction) {
    if (uuids.length === 0 || !this.has('devices')) return [];
    return await this.Device.findAll({ where: { uuid: uuids }, raw: true, transaction,
    }) as unknown as DeviceAttributes[];
  }

  /**
   * The devices that answer to these namespaces (DeviceService.findByNamespace()): their own
   * namespace, or their uuid while they have none of their own.
   */
  async namespaceHolders(values: string[], transaction?: Transaction) {
    if (values.length === 0 || !this.has('devices')) return [];
    return await this.Device.findAll({
      attributes: [ 'id', 'uuid', 'namespace' ],
      where: { [Op.or]: [{ namespace: values }, { uuid: values, namespace: null }] },
      raw: true, transaction,
    }) as unknown as Array<Pick<DeviceAttributes, 'id' | 'uuid' | 'namespace'>>;
  }

  async installs(tokens: string[], ids: string[], transaction?: Transaction) {
    if ((tokens.length === 0 && ids.length === 0) || !this.has('app_installs')) return [];
    return await this.AppInstall.findAll({ where: { [Op.or]: [{ token: tokens }, { id: ids }] }, raw: true, transaction,
    }) as unknown as AppInstallAttributes[];
  }

  async configs(ids: string[], transaction?: Transaction) {
    if (ids.length === 0 || !this.has('auto_auth_configs')) return [];
    return await this.AutoAuthConfig.findAll({ where: { id: ids }, raw: true, transaction,
    }) as unknown as AutoAuthConfigAttributes[];
  }

  async configCount(deviceIds: number[], transaction?: Transaction) {
    if (deviceIds.length === 0 || !this.has('auto_auth_configs')) return new Map<number, number>();
    const rows = await this.AutoAuthConfig.findAll({
      attributes: [ 'deviceId', [ this.sequelize.fn('COUNT', this.sequelize.col('id')), 'n' ]],
      where: { deviceId: deviceIds }, group: [ 'deviceId' ], raw: true, transaction,
    }) as unknown as Array<{ deviceId: number; n: number | string }>;
    return new Map(rows.map(r => [ Number(r.deviceId), Number(r.n) ]));
  }

  /** The stored entries among `deviceIds` × `keys` (a superset query, filtered by the caller). */
  async entries(deviceIds: number[], keys: string[], transaction?: Transaction) {
    if (deviceIds.length === 0 || keys.length === 0 || !this.has('kv_entries')) return [];
    return await this.KvEntry.findAll({ where: { deviceId: deviceIds, key: keys }, raw: true, transaction,
    }) as unknown as KvEntryAttributes[];
  }

  /** Raises a device's revision by `n` and returns the first new number, as the KV writes do. */
  bumpRevision(deviceId: number, n: number, transaction: Transaction): Promise<number> {
    return bumpRevision(this.sequelize, deviceId, n, transaction);
  }

  /** Sets the revision of new devices (one statement). */
  async setRevisions(revisions: Map<number, number>, transaction: Transaction) {
    if (revisions.size === 0) return;
    const ids = [ ...revisions.keys() ];
    const cases = ids.map(() => 'WHEN ? THEN ?').join(' ');
    await this.sequelize.query(`UPDATE devices SET revision = CASE id ${cases} END WHERE id IN (${ids.map(() => '?').join(', ')})`, {
      replacements: [ ...ids.flatMap(id => [ id, revisions.get(id)! ]), ...ids ], transaction,
    });
  }

  /** Row counts of this server's tables (for the report). */
  async tableCounts() {
    const count = async (table: string, model: { count(): Promise<number> }) => (this.has(table) && !this.unopened ? model.count() : 0);
    return {
      accounts: await count('accounts', this.Account),
      devices: await count('devices', this.Device),
      tokens: await count('app_installs', this.AppInstall),
      configs: await count('auto_auth_configs', this.AutoAuthConfig),
      keys: await count('kv_entries', this.KvEntry),
    };
  }
}

/** A stored timestamp as epoch ms, whatever the dialect handed back. */
export function ms(v: unknown): number | null {
  if (v === null || v === undefined) return null;
  if (v instanceof Date) return v.getTime();
  return new Date(String(v)).getTime();
}
