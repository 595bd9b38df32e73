import { Service } from 'egg';
import { Op, QueryTypes, Transaction, UniqueConstraintError, type WhereOptions } from 'sequelize';
import { badRequest, conflict, notFound } from '../lib/errors';
import { hashPassword, verifyPassword } from '../lib/password';
import type { AutoAuthConfigAttributes } from '../model/autoAuthConfig';
import type { DeviceAttributes } from '../model/device';
import type { ConfigInput } from '../validator/autoAuth';
import { newInstallId } from './appInstall';

/**
 * Most auto-auth configs one device may have. A login with a password verifies it against
 * every config hash of the device, and a config change compares against them: the cap keeps
 * that bcrypt work bounded (at cost 10, some 20 verifications at worst).
 */
export const MAX_CONFIGS = 20;

const tooManyConfigs = () => badRequest(`该设备的自动授权配置已达上限 (${MAX_CONFIGS})`, { max: MAX_CONFIGS }, 'AUTO_AUTH_CONFIG_LIMIT');

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

  /** The device of a namespace: matched exactly, else with surrounding whitespace ignored. 404 when none. */
  async deviceByNamespace(namespace: string): Promise<DeviceAttributes> {
    for (const ns of new Set([ namespace, namespace.trim() ])) {
      const device = await this.service.device.findBy('namespace', ns);
      // Exact on both dialects (binary collation on MySQL); checked again here all the same.
      if (device && device.namespace === ns) return device;
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

  /** A new config; at most MAX_CONFIGS per device, one per password (and one without). */
  async create(device: DeviceAttributes, input: ConfigInput) {
    const password = input.password ?? null;
    const hash = password !== null ? await hashPassword(password, this.app.settings.bcryptCost) : null;
    const row = await this.underDeviceLock(device.id, async transaction => {
      const configs = await this.configsOf(device.id, 'ASC', { transaction });
      if (configs.length >= MAX_CONFIGS) throw tooManyConfigs();
      if (await samePassword(configs, password)) throw badRequest('该密码的自动授权配置已存在');
      return this.db.AutoAuthConfig.create({
        id: newInstallId(),
        deviceId: device.id,
        password: hash,
        deviceType: input.deviceType ?? null,
        isReadOnly: input.isReadOnly ?? false,
      }, { transaction });
    });
    const c = describe(row.get({ plain: true }) as AutoAuthConfigAttributes);
    return { id: c.id, hasPassword: c.hasPassword, password: c.password, deviceType: c.deviceType, isReadOnly: c.isReadOnly, createdAt: c.createdAt };
  }

  /** Changes the given fields of a config (partial); a password may not be another config's. */
  async update(device: DeviceAttributes, config: AutoAuthConfigAttributes, input: ConfigInput) {
    const hash = input.password ? await hashPassword(input.password, this.app.settings.bcryptCost) : null;
    return this.underDeviceLock(device.id, async transaction => {
      const values: Partial<AutoAuthConfigAttributes> = {};
      if (input.password !== undefined) {
        const others = (await this.configsOf(device.id, 'ASC', { transaction })).filter(c => c.id !== config.id);
        if (await samePassword(others, input.password)) throw badRequest('该密码已被其他配置使用');
        values.password = hash;
      }
      if (input.deviceType !== undefined) values.deviceType = input.deviceType;
      if (input.isReadOnly !== undefined) values.isReadOnly = input.isReadOnly;
      const row = await this.db.AutoAuthConfig.findByPk(config.id, { transaction });
      if (!row) throw notFound('自动授权配置不存在');
      if (Object.keys(values).length > 0) await row.update(values, { transaction });
      return describe(row.get({ plain: true }) as AutoAuthConfigAttributes);
    });
  }

  async remove(config: AutoAuthConfigAttributes) {
    const n = await this.db.AutoAuthConfig.destroy({ where: { id: config.id } });
    if (n === 0) throw notFound('自动授权配置不存在');
  }

  /** Sets the device's namespace (its own current one included); updatedAt always advances. */
  async setNamespace(device: DeviceAttributes, namespace: string) {
    const taken = await this.service.device.findBy('namespace', namespace);
    if (taken && taken.id !== device.id && taken.namespace === namespace) throw conflict('该 namespace 已被其他设备使用');
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
   * concurrent creates cannot both pass the duplicate check: a MySQL named lock held on
   * the transaction's connection (not a row lock: the bcrypt comparisons inside must not
   * hold up the device's KV writes), or a per-process queue on SQLite (one process).
   */
  private async underDeviceLock<T>(deviceId: number, fn: (transaction?: Transaction) => Promise<T>): Promise<T> {
    if (this.db.getDialect() === 'mysql') {
      const name = `classworks-kv:autoauth:${deviceId}`;
      return this.db.transaction({ isolationLevel: Transaction.ISOLATION_LEVELS.READ_COMMITTED }, async transaction => {
        const [ row ] = await this.db.query('SELECT GET_LOCK(?, 10) AS locked', {
          replacements: [ name ], transaction, type: QueryTypes.SELECT, raw: true,
        }) as Array<{ locked: number | null }>;
        if (Number(row?.locked) !== 1) throw new Error(`could not take lock ${name}`);
        try {
          return await fn(transaction);
        } finally {
          await this.db.query('SELECT RELEASE_LOCK(?)', { replacements: [ name ], transaction, type: QueryTypes.SELECT });
        }
      });
    }
    let queues = sqliteQueues.get(this.app);
    if (!queues) sqliteQueues.set(this.app, queues = new Map());
    const run = (queues.get(deviceId) ?? Promise.resolve()).then(() => fn());
    const tail = run.catch(() => undefined);
    queues.set(deviceId, tail);
    void tail.then(() => {
      if (queues!.get(deviceId) === tail) queues!.delete(deviceId);
    });
    return run;
  }
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
