import { Service } from 'egg';
import { QueryTypes, UniqueConstraintError } from 'sequelize';
import { conflict, badRequest, forbidden, notFound } from '../lib/errors';
import { hashPassword, verifyPassword } from '../lib/password';
import type { DeviceAttributes } from '../model/device';
import { uuidv7 } from '../lib/uuidv7';

/** Devices: registration, names, passwords, and who is online. */
export default class DeviceService extends Service {
  async findByUuid(uuid: string): Promise<DeviceAttributes | null> {
    return this.findBy('uuid', uuid);
  }

  /** The device whose uuid or namespace is exactly `value`. */
  async findBy(column: 'uuid' | 'namespace', value: string): Promise<DeviceAttributes | null> {
    const { model } = this.ctx;
    let row;
    if (value.includes('\u0000') && model.getDialect() === 'sqlite') {
      // Sequelize writes a WHERE value into the SQL text, and SQLite ends the statement at
      // a NUL (an error, answered 500); a bound parameter carries it intact.
      const [ hit ] = await model.query(`SELECT id FROM devices WHERE ${column} = $1`, {
        bind: [ value ], type: QueryTypes.SELECT, raw: true,
      }) as Array<{ id: number }>;
      row = hit ? await model.Device.findByPk(hit.id) : null;
    } else {
      // Not `raw`: raw rows carry SQLite dates as strings; instances give Date objects.
      row = await model.Device.findOne({ where: { [column]: value } });
    }
    return row ? row.get({ plain: true }) as DeviceAttributes : null;
  }

  async getByUuid(uuid: string): Promise<DeviceAttributes> {
    const device = await this.findByUuid(uuid);
    if (!device) throw notFound('设备不存在');
    return device;
  }

  /**
   * The device whose namespace is exactly `value` (§6.1): the one that has it as its own,
   * else the one whose uuid it is and that has none of its own (namespace NULL, see
   * create(); such a device's namespace is its uuid wherever it is shown).
   */
  async findByNamespace(value: string): Promise<DeviceAttributes | null> {
    const own = await this.findBy('namespace', value);
    // Exact on both dialects (binary collation on MySQL); checked again here all the same.
    if (own && own.namespace === value) return own;
    const byUuid = await this.findBy('uuid', value);
    return byUuid && byUuid.uuid === value && byUuid.namespace === null ? byUuid : null;
  }

  /**
   * Registers a device with its namespace and its default auto-auth config (no password,
   * classroom, not read-only), in one transaction. A namespace given must be free (nobody
   * has it, as their own or as their uuid without one of their own). Without one, the
   * device's namespace is its uuid, stored as the uuid, or as NULL when another device
   * already has that string as its namespace: a Part I client registering its uuid is never
   * refused because of someone else's namespace.
   */
  async create(uuid: string, name: string, namespace?: string) {
    if (await this.findByUuid(uuid)) throw conflict('设备UUID已存在');
    if (namespace !== undefined && await this.findByNamespace(namespace)) throw conflict('该 namespace 已被使用');
    const uuidTaken = async () => (await this.findBy('namespace', uuid))?.namespace === uuid;
    const ns = namespace ?? (await uuidTaken() ? null : uuid);
    try {
      return await this.insert(uuid, name, ns);
    } catch (err) {
      if (!(err instanceof UniqueConstraintError)) throw err;
      // Which unique index refused it: the uuid's or the namespace's.
      if (await this.findByUuid(uuid)) throw conflict('设备UUID已存在');
      if (namespace !== undefined) throw conflict('该 namespace 已被使用');
      // Another device took the uuid as its namespace meanwhile.
      try {
        return await this.insert(uuid, name, null);
      } catch (again) {
        if (again instanceof UniqueConstraintError) throw conflict('设备UUID已存在');
        throw again;
      }
    }
  }

  private async insert(uuid: string, name: string, namespace: string | null) {
    const d = await this.ctx.model.transaction(async transaction => {
      const row = (await this.ctx.model.Device.create({ uuid, name, namespace }, { transaction })).get({ plain: true });
      await this.ctx.model.AutoAuthConfig.create({
        id: uuidv7(), deviceId: row.id, password: null, deviceType: 'classroom', isReadOnly: false,
      }, { transaction });
      return row;
    });
    return { id: d.id, uuid: d.uuid, name: d.name, namespace: d.namespace ?? d.uuid, createdAt: d.createdAt };
  }

  /** GET /devices/:uuid: with the bound account as 1.3 shows it ({id, name, email, avatarUrl} or null). */
  async describe(d: DeviceAttributes) {
    const a = await this.service.accounts.ofDevice(d);
    return {
      id: d.id,
      uuid: d.uuid,
      name: d.name,
      hasPassword: !!d.password,
      passwordHint: d.passwordHint ?? null,
      createdAt: d.createdAt,
      account: a ? { id: a.id, name: a.name, email: a.email, avatarUrl: a.avatarUrl } : null,
      isBoundToAccount: a !== null,
      namespace: d.namespace ?? d.uuid,
    };
  }

  async rename(device: DeviceAttributes, name: string) {
    await this.ctx.model.Device.update({ name }, { where: { id: device.id } });
    return { id: device.id, uuid: device.uuid, name, hasPassword: !!device.password, passwordHint: device.passwordHint ?? null };
  }

  /** First password of a device: allowed without credentials only while none is set. */
  async setPassword(device: DeviceAttributes, password: string, hint?: string | null) {
    if (device.password) throw forbidden('设备已设置密码，请使用修改密码接口');
    const hash = await hashPassword(password, this.app.settings.bcryptCost);
    // The WHERE clause makes "only while no password is set" hold under races too.
    const [ n ] = await this.ctx.model.Device.update(
      { password: hash, ...(hint !== undefined ? { passwordHint: hint } : {}) },
      { where: { id: device.id, password: null } },
    );
    if (n === 0) throw forbidden('设备已设置密码，请使用修改密码接口');
  }

  async changePassword(device: DeviceAttributes, password: string, hint?: string | null) {
    if (!device.password) throw badRequest('设备未设置密码，请使用设置密码接口');
    const hash = await hashPassword(password, this.app.settings.bcryptCost);
    await this.ctx.model.Device.update(
      { password: hash, ...(hint !== undefined ? { passwordHint: hint } : {}) },
      { where: { id: device.id } },
    );
  }

  async deletePassword(device: DeviceAttributes) {
    if (!device.password) throw badRequest('设备未设置密码');
    await this.ctx.model.Device.update({ password: null, passwordHint: null }, { where: { id: device.id } });
  }

  async setPasswordHint(device: DeviceAttributes, hint: string | null) {
    await this.ctx.model.Device.update({ passwordHint: hint }, { where: { id: device.id } });
    return hint;
  }

  async checkPassword(device: DeviceAttributes, password: string) {
    return !!device.password && verifyPassword(password, device.password);
  }

  /** Devices with joined sockets, cluster-wide, most connections first. */
  async online() {
    const entries = await this.app.sharedState.presenceList();
    if (entries.length === 0) return [];
    const rows = await this.ctx.model.Device.findAll({
      attributes: [ 'uuid', 'name' ],
      where: { uuid: entries.map(e => e.uuid) },
      raw: true,
    }) as unknown as Array<Pick<DeviceAttributes, 'uuid' | 'name'>>;
    const names = new Map(rows.map(r => [ r.uuid, r.name ]));
    return entries
      .map(e => ({ uuid: e.uuid, connections: e.connections, name: names.get(e.uuid) ?? null }))
      .sort((a, b) => b.connections - a.connections || (a.uuid < b.uuid ? -1 : a.uuid > b.uuid ? 1 : 0));
  }
}
