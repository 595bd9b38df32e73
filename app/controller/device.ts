import { Controller } from 'egg';
import * as rules from '../validator/device';
import { isPlainObject } from '../validator/common';

/** /devices routes. uuidAuth (router) has already authenticated where the contract asks. */
export default class DeviceController extends Controller {
  private get body(): Record<string, unknown> {
    const b = (this.ctx.request as { body?: unknown }).body;
    return isPlainObject(b) ? b : {};
  }

  /** newPassword / passwordHint may come from the query or the body. */
  private fromQueryOrBody(name: string): unknown {
    const q = this.ctx.query[name];
    return q !== undefined && q !== '' ? q : this.body[name];
  }

  async create() {
    const uuid = rules.deviceUuid(this.body.uuid);
    const name = rules.deviceName(this.body.deviceName);
    const namespace = rules.optionalNamespace(this.body.namespace);
    const device = await this.service.device.create(uuid, name, namespace);
    this.ctx.status = 201;
    this.ctx.body = { success: true, device };
  }

  async online() {
    this.ctx.body = { success: true, devices: await this.service.device.online() };
  }

  async show() {
    const device = await this.service.device.getByUuid(rules.lookupUuid(this.ctx.params.uuid));
    this.ctx.body = await this.service.device.describe(device);
  }

  async rename() {
    const name = rules.deviceName(this.body.name);
    this.ctx.body = { success: true, device: await this.service.device.rename(this.ctx.device, name) };
  }

  async setPassword() {
    const password = rules.newPassword(this.fromQueryOrBody('newPassword'));
    const hint = rules.passwordHint(this.fromQueryOrBody('passwordHint'));
    const device = await this.service.device.getByUuid(rules.lookupUuid(this.ctx.params.uuid));
    await this.service.device.setPassword(device, password, hint);
    this.ctx.body = { success: true, message: '密码设置成功' };
  }

  async changePassword() {
    const password = rules.newPassword(this.fromQueryOrBody('newPassword'));
    const hint = rules.passwordHint(this.fromQueryOrBody('passwordHint'));
    await this.service.device.changePassword(this.ctx.device, password, hint);
    this.ctx.body = { success: true, message: '密码修改成功' };
  }

  async setPasswordHint() {
    const hint = rules.passwordHint(this.body.passwordHint) ?? null;
    await this.service.device.setPasswordHint(this.ctx.device, hint);
    this.ctx.body = { success: true, message: '密码提示设置成功', passwordHint: hint };
  }

  async getPasswordHint() {
    const device = await this.service.device.getByUuid(rules.lookupUuid(this.ctx.params.uuid));
    this.ctx.body = { success: true, passwordHint: device.passwordHint ?? null };
  }

  async deletePassword() {
    await this.service.device.deletePassword(this.ctx.device);
    this.ctx.body = { success: true, message: '密码删除成功' };
  }
}
