import { Controller } from 'egg';
import { forbidden } from '../lib/errors';
import * as rules from '../validator/app';
import { isPlainObject } from '../validator/common';
import * as kind from '../validator/tokenKind';

/** /apps routes (KV tokens). Every route runs behind uuidAuth (see router). */
export default class AppsController extends Controller {
  async install() {
    const appId = rules.appId(this.ctx.params.appId);
    const raw = (this.ctx.request as { body?: unknown }).body;
    const body = isPlainObject(raw) ? raw : {};
    const note = rules.note(body.note);
    const deviceType = kind.deviceType(body.deviceType);
    const isReadOnly = kind.isReadOnly(body.isReadOnly);
    this.ctx.status = 201;
    this.ctx.body = await this.service.appInstall.install(this.ctx.device, appId, note, { deviceType, isReadOnly });
  }

  async uninstall() {
    const installId = rules.installId(this.ctx.params.installId);
    const install = await this.service.appInstall.getInstall(installId);
    if (install.deviceId !== this.ctx.device.id) throw forbidden('无权操作此安装记录');
    await this.service.appInstall.uninstall(this.ctx.device, install);
    this.ctx.status = 204;
  }

  async list() {
    const rows = await this.service.appInstall.list(this.ctx.device, 'ASC');
    this.ctx.body = {
      success: true,
      apps: rows.map(r => ({
        id: r.id, appId: r.appId, token: r.token, note: r.note, installedAt: r.installedAt,
        deviceType: r.deviceType ?? null, isReadOnly: !!r.isReadOnly,
      })),
    };
  }

  async tokens() {
    const rows = await this.service.appInstall.list(this.ctx.device, 'DESC');
    this.ctx.body = {
      success: true,
      tokens: rows.map(r => ({
        id: r.id, token: r.token, appId: r.appId, installedAt: r.installedAt, note: r.note, name: r.note,
        deviceType: r.deviceType ?? null, isReadOnly: !!r.isReadOnly,
      })),
      deviceUuid: this.ctx.device.uuid,
    };
  }
}
