import { Service } from 'egg';
import { QueryTypes, UniqueConstraintError } from 'sequelize';
import { conflict, badRequest, forbidden, notFound } from '../lib/errors';
import { hashPassword, verifyPassword } from '../lib/password';
import type { DeviceAttributes } from '../model/device';
import { newInstallId } from './appInstall';

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
   * Registers a device with its namespace (default: the uuid) and its default auto-auth
   * config (no password, classroom, not read-only), in one transaction.
   */
  async create(uuid: string, name: string, namespace?: string) {
    const ns = namespace ?? uuid;
    if (await this.findByUuid(uuid)) throw conflict('设备UUID已存在');
    if (namespace !== undefined && await this.ctx.model.Device.findOne({ attributes: [ 'id' ], where: { namespace: ns } })) {
      throw conflict('该 namespace 已被使用');
    }
    try {
      const d = await this.ctx.model.transaction(async transaction => {
        const row = (await this.ctx.model.Device.create({ uuid, name, namespace: ns }, { transaction })).get({ plain: true });
        await this.ctx.model.AutoAuthConfig.create({
          id: newInstallId(), deviceId: row.id, password: null, deviceType: 'classroom', isReadOnly: false,
        }, { transaction });
        return row;
      });
      return { id: d.id, uuid: d.uuid, name: d.name, namespace: d.namespace, createdAt: d.createdAt };
    } catch (err) {
      if (err instanceof UniqueConstraintError) {
        // Which unique index refused it: the uuid's or the namespace's.
        if (await this.findByUuid(uuid)) throw conflict('设备UUID已存在');
        throw conflict('该 namespace 已被使用');
      }
      throw err;
    }
  }

  describe(d: DeviceAttributes) {
    return {
      id: d.id,
      uuid: d.uuid,
      name: d.name,
      hasPassword: !!d.password,
      passwordHint: d.passwordHint ?? null,
      createdAt: d.createdAt,
      account: null,
      isBoundToAccount: false,
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
