import crypto from 'node:crypto';
import { Service } from 'egg';
import { DatabaseError, Op, Transaction, UniqueConstraintError, type WhereOptions } from 'sequelize';
import { badRequest, conflict, HttpError, notFound, ServiceUnavailableError } from '../lib/errors';
import { hashPassword, verifyPassword } from '../lib/password';
import type { AutoAuthConfigAttributes } from '../model/autoAuthConfig';
import type { DeviceAttributes } from '../model/device';
import type { ConfigInput } from '../validator/autoAuth';
import { uuidv7 } from '../lib/uuidv7';

/**
 * Most auto-auth configs one device may have. A login with a password verifies it against
 * every config hash of the device, and a config change compares against them: the cap keeps
 * that bcrypt work bounded (at cost 10, some 20 verifications at worst).
 */
export const MAX_CONFIGS = 20;

const tooManyConfigs = () => badRequest(`该设备的自动授权配置已达上限 (${MAX_CONFIGS})`, { max: MAX_CONFIGS }, 'AUTO_AUTH_CONFIG_LIMIT');

/** How long a config change waits for the device's lock (MySQL), in seconds. */
export const LOCK_WAIT_SECONDS = 5;

/**
 * The MySQL named lock of a device's configs. Named locks are server-wide, so the name is
 * scoped to the database (two databases on one server do not share device ids' locks),
 * and short (MySQL allows 64 characters).
 */
export function configLockName(database: string, deviceId: number): string {
  const scope = crypto.createHash('sha256').update(database).digest('hex').slice(0, 16);
  return `ckv:autoauth:${scope}:${deviceId}`;
}

const configsBusy = () => new HttpError(409, '该设备的自动授权配置正在被其他请求修改，请稍后重试', { code: 'AUTO_AUTH_CONFIG_BUSY' });

/** The answer of AutoAuthService.match(): the config that grants the token, or why none does. */
export type ConfigMatch =
  | { config: AutoAuthConfigAttributes; failure?: undefined }
  | { config?: undefined; failure: 'wrong_password' | 'password_required' };

/** Per-process queues of config changes per device (SQLite: embedded mode, one process). */
const sqliteQueues = new WeakMap<object, Map<number, Promise<unknown>>>();

/**
 * Namespace login and auto-auth configs (§6.1). A config grants a token of its kind
 * (deviceType, isReadOnly) to whoever presents the device's namespace and the config's
 * password. Config passwords are bcrypt hashes: matching one means verifying the given
 * password against each hash of the device, hence at most MAX_CONFIGS configs per device.
 */
export default class AutoAuthService extends Service {
  private get db() {
    return this.ctx.model;
  }

  /**
   * The device of a namespace (DeviceService.findByNamespace(): a device's own namespace
   * first, then the uuid of a device without one), matched exactly, else with surrounding
   * whitespace ignored. 404 when none.
   */
  async deviceByNamespace(namespace: string): Promise<DeviceAttributes> {
    for (const ns of new Set([ namespace, namespace.trim() ])) {
      const device = await this.service.device.findByNamespace(ns);
      if (device) return device;
    }
    throw notFound('设备不存在或 namespace 不正确');
  }

  /**
   * Which config of the device grants a token for this password, or why none does: with a
   * password, the config whose hash verifies it (`wrong_password` when none); without, the
   * password-less config, which grants nothing while the device has a device password
   * (`password_required`). Counting failures (the throttle) is the caller's business.
   */
  async match(device: DeviceAttributes, password: string | null): Promise<ConfigMatch> {
    if (password !== null) {
      // At most MAX_CONFIGS hashes are verified, oldest first, whatever the table holds.
      const configs = await this.configsOf(device.id, 'ASC', { withPassword: true, limit: MAX_CONFIGS });
      const config = await findByPassword(configs, password);
      return config ? { config } : { failure: 'wrong_password' };
    }
    const [ open ] = device.password ? [] : await this.configsOf(device.id, 'ASC', { withPassword: false, limit: 1 });
    return open ? { config: open } : { failure: 'password_required' };
  }

  /** A new install (note null) of the config's kind. */
  async issueToken(device: DeviceAttributes, config: AutoAuthConfigAttributes, appId: string) {
    const install = await this.service.appInstall.install(device, appId, null, {
      deviceType: config.deviceType, isReadOnly: !!config.isReadOnly,
    });
    return { token: install.token, deviceType: install.deviceType, isReadOnly: install.isReadOnly, installedAt: install.installedAt };
  }

  /** The device's configs, newest first, without passwords. */
  async list(device: DeviceAttributes) {
    return (await this.configsOf(device.id, 'DESC')).map(c => describe(c));
  }

  async getConfig(id: string): Promise<AutoAuthConfigAttributes> {
    const row = await this.db.AutoAuthConfig.findByPk(id);
    if (!row) throw notFound('自动授权配置不存在');
    return row.get({ plain: true }) as AutoAuthConfigAttributes;
  }

  /**
   * A new config; at most MAX_CONFIGS per device, one per password (and one without).
   * The checks and the bcrypt work run before the device's lock is taken; under the lock
   * the checks run again, against the configs created or changed meanwhile only (none,
   * unless two changes race), so the lock and its connection are not held during bcrypt.
   */
  async create(device: DeviceAttributes, input: ConfigInput) {
    const password = input.password ?? null;
    const seen = await this.configsOf(device.id, 'ASC');
    if (seen.length >= MAX_CONFIGS) throw tooManyConfigs();
    if (await samePassword(seen, password)) throw badRequest('该密码的自动授权配置已存在');
    const hash = password !== null ? await hashPassword(password, this.app.settings.bcryptCost) : null;
    const row = await this.underDeviceLock(device.id, async transaction => {
      const configs = await this.configsOf(device.id, 'ASC', { transaction });
      if (configs.length >= MAX_CONFIGS) throw tooManyConfigs();
      if (await samePassword(changedSince(seen, configs), password)) throw badRequest('该密码的自动授权配置已存在');
      return this.db.AutoAuthConfig.create({
        id: uuidv7(),
        deviceId: device.id,
        password: hash,
        deviceType: input.deviceType ?? null,
        isReadOnly: input.isReadOnly ?? false,
      }, { transaction });
    });
    const c = describe(row.get({ plain: true }) as AutoAuthConfigAttributes);
    return { id: c.id, hasPassword: c.hasPassword, password: c.password, deviceType: c.deviceType, isReadOnly: c.isReadOnly, createdAt: c.createdAt };
  }

  /**
   * Changes the given fields of a config (partial); a password may not be another config's.
   * A password change is checked like a create (before the lock, then the delta under it).
   */
  async update(device: DeviceAttributes, config: AutoAuthConfigAttributes, input: ConfigInput) {
    const others = async (transaction?: Transaction) => (await this.configsOf(device.id, 'ASC', { transaction })).filter(c => c.id !== config.id);
    const values: Partial<AutoAuthConfigAttributes> = {};
    if (input.deviceType !== undefined) values.deviceType = input.deviceType;
    if (input.isReadOnly !== undefined) values.isReadOnly = input.isReadOnly;
    const apply = async (transaction?: Transaction) => {
      const row = await this.db.AutoAuthConfig.findByPk(config.id, { transaction });
      if (!row) throw notFound('自动授权配置不存在');
      if (Object.keys(values).length > 0) await row.update(values, { transaction });
      return describe(row.get({ plain: true }) as AutoAuthConfigAttributes);
    };
    if (input.password === undefined) return apply();

    const password = input.password;
    const seen = await others();
    if (await samePassword(seen, password)) throw badRequest('该密码已被其他配置使用');
    values.password = password !== null ? await hashPassword(password, this.app.settings.bcryptCost) : null;
    return this.underDeviceLock(device.id, async transaction => {
      if (await samePassword(changedSince(seen, await others(transaction)), password)) throw badRequest('该密码已被其他配置使用');
      return apply(transaction);
    });
  }

  async remove(config: AutoAuthConfigAttributes) {
    const n = await this.db.AutoAuthConfig.destroy({ where: { id: config.id } });
    if (n === 0) throw notFound('自动授权配置不存在');
  }

  /** Sets the device's namespace (its own current one included); updatedAt always advances. */
  async setNamespace(device: DeviceAttributes, namespace: string) {
    // Another device's namespace, its own or its uuid when it has none of its own.
    const holder = await this.service.device.findByNamespace(namespace);
    if (holder && holder.id !== device.id) throw conflict('该 namespace 已被其他设备使用');
    try {
      // A static update always sets updatedAt (also when the namespace is unchanged).
      await this.db.Device.update({ namespace }, { where: { id: device.id } });
    } catch (err) {
      if (err instanceof UniqueConstraintError) throw conflict('该 namespace 已被其他设备使用');
      throw err;
    }
    const row = await this.db.Device.findByPk(device.id);
    if (!row) throw notFound('设备不存在');
    const d = row.get({ plain: true }) as DeviceAttributes;
    return { id: d.id, uuid: d.uuid, name: d.name, namespace: d.namespace, updatedAt: d.updatedAt };
  }

  /** A device's configs in creation order (`withPassword`: only those with / without a password). */
  private async configsOf(deviceId: number, order: 'ASC' | 'DESC', opts: { transaction?: Transaction; withPassword?: boolean; limit?: number } = {}) {
    const where: WhereOptions<AutoAuthConfigAttributes> = opts.withPassword === undefined
      ? { deviceId }
      : { deviceId, password: opts.withPassword ? { [Op.ne]: null } : null };
    // Not `raw`: raw rows carry SQLite dates as strings; instances give Date objects.
    const rows = await this.db.AutoAuthConfig.findAll({
      where,
      order: [[ 'createdAt', order ], [ 'id', order ]],
      limit: opts.limit,
      transaction: opts.transaction,
    });
    return rows.map(r => r.get({ plain: true }) as AutoAuthConfigAttributes);
  }

  /**
   * Runs the check-then-write of a config change one at a time per device, so two
   * concurrent changes cannot both pass the duplicate and cap checks.
   *
   * MySQL: a named lock (GET_LOCK, scoped to this database, see configLockName()), taken on
   * the connection of the transaction `fn` runs in. That transaction is committed before
   * the lock is released (released first, the next change could read before the commit and
   * miss the new config), and the lock is released on every path; if RELEASE_LOCK itself
   * fails, the connection is closed, which frees it. One connection per change: `fn` does
   * no bcrypt work (see create()). Not a row lock: that would hold up the device's KV
   * writes. Waiting longer than LOCK_WAIT_SECONDS answers 409 AUTO_AUTH_CONFIG_BUSY.
   * SQLite (embedded mode, one process): a per-process queue.
   */
  private async underDeviceLock<T>(deviceId: number, fn: (transaction?: Transaction) => Promise<T>): Promise<T> {
    if (this.db.getDialect() !== 'mysql') return inProcessQueue(this.app, deviceId, () => fn());
    const name = configLockName(this.db.config.database, deviceId);
    const queryTimeout = this.app.settings.dbQueryTimeoutMs;
    return this.db.transaction({ isolationLevel: Transaction.ISOLATION_LEVELS.READ_COMMITTED }, async transaction => {
      const conn = (transaction as unknown as { connection: LockConnection }).connection;
      // Its own bound: the wait plus the usual one of a query (DB_QUERY_TIMEOUT_MS, app/lib/queryTimeout.ts).
      const [ row ] = await ask<{ locked: number | string | null }>(conn, 'SELECT GET_LOCK(?, ?) AS locked', [ name, LOCK_WAIT_SECONDS ],
        queryTimeout > 0 ? LOCK_WAIT_SECONDS * 1000 + queryTimeout : undefined);
      if (row?.locked === null || row?.locked === undefined) throw new ServiceUnavailableError('database');
      if (Number(row.locked) !== 1) throw configsBusy();
      try {
        const result = await fn(transaction);
        // Committed now, while the lock is held; the transaction's own COMMIT then has nothing left to do.
        await this.db.query('COMMIT', { transaction });
        return result;
      } finally {
        try {
          await ask(conn, 'SELECT RELEASE_LOCK(?) AS released', [ name ]);
        } catch (err) {
          this.ctx.logger.warn('[autoAuth] could not release lock %s, closing its connection: %s', name, (err as Error).message);
          conn.destroy();
        }
      }
    });
  }
}

/** The parts of a pooled mysql2 connection the lock uses. */
interface LockConnection {
  query(options: { sql: string; values: unknown[]; timeout?: number }, callback: (err: Error | null, rows: unknown) => void): void;
  destroy(): void;
}

/** One statement on `conn`; a driver error is wrapped as Sequelize's (an outage is then answered 503). */
function ask<T>(conn: LockConnection, sql: string, values: unknown[], timeout?: number): Promise<T[]> {
  return new Promise<T[]>((resolve, reject) => {
    conn.query({ sql, values, ...(timeout ? { timeout } : {}) }, (err, rows) => {
      if (err) reject(new DatabaseError(err as Error & { sql: string }));
      else resolve(rows as T[]);
    });
  });
}

/** Runs `fn` after every earlier call for the same device of this process (SQLite). */
function inProcessQueue<T>(app: object, deviceId: number, fn: () => Promise<T>): Promise<T> {
  let queues = sqliteQueues.get(app);
  if (!queues) sqliteQueues.set(app, queues = new Map());
  const run = (queues.get(deviceId) ?? Promise.resolve()).then(() => fn());
  const tail = run.catch(() => undefined);
  queues.set(deviceId, tail);
  void tail.then(() => {
    if (queues!.get(deviceId) === tail) queues!.delete(deviceId);
  });
  return run;
}

/** The configs of `now` that are new, or whose password changed, since `before` was read. */
function changedSince(before: AutoAuthConfigAttributes[], now: AutoAuthConfigAttributes[]) {
  const known = new Map(before.map(c => [ c.id, c.password ]));
  return now.filter(c => !known.has(c.id) || known.get(c.id) !== c.password);
}

/** The answer shape of a config: the password itself is never returned. */
function describe(c: AutoAuthConfigAttributes) {
  return {
    id: c.id,
    hasPassword: c.password !== null,
    password: null,
    deviceType: c.deviceType ?? null,
    isReadOnly: !!c.isReadOnly,
    createdAt: c.createdAt,
    updatedAt: c.updatedAt,
  };
}

/** The first config (in the given order) whose hash verifies `password`. */
async function findByPassword(configs: AutoAuthConfigAttributes[], password: string) {
  for (const c of configs) {
    if (c.password !== null && await verifyPassword(password, c.password)) return c;
  }
  return undefined;
}

/** Whether one of `configs` has this password (null: whether one has none). */
async function samePassword(configs: AutoAuthConfigAttributes[], password: string | null): Promise<boolean> {
  if (password === null) return configs.some(c => c.password === null);
  return !!await findByPassword(configs, password);
}
