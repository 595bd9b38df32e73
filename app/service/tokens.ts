import { Service } from 'egg';
import { badRequest, describeError, notFound } from '../lib/errors';
import type { AppInstallAttributes } from '../model/appInstall';
import { isPlainObject } from '../validator/common';

/** The device's KV key holding its student list (Classworks' roster). */
export const STUDENT_LIST_KEY = 'classworks-list-main';

/**
 * Token self-service (§6.2): what a token says about itself (GET /kv/_token) and the
 * note a token carries (set-student-name, set-teacher-name, PUT note). The note feeds
 * every worker's token cache (socket tokenInfo / senderInfo), so a change is announced
 * on the shared-state bus.
 */
export default class TokensService extends Service {
  /** The install of `token`, compared exactly; 404 Token 不存在. */
  async byToken(token: string): Promise<AppInstallAttributes> {
    const rows = await this.ctx.model.AppInstall.findAll({ where: { token } });
    // The token column uses a case-insensitive collation on MySQL: compare exactly here.
    const found = rows.map(r => r.get({ plain: true }) as AppInstallAttributes).find(r => r.token === token);
    if (!found) throw notFound('Token 不存在');
    return found;
  }

  /** GET /kv/_token: the install and its device, read from the database (not the token cache). */
  async describe(installId: string) {
    const install = await this.ctx.model.AppInstall.findByPk(installId);
    const i = install?.get({ plain: true }) as AppInstallAttributes | undefined;
    const device = i && await this.ctx.model.Device.findByPk(i.deviceId, { attributes: [ 'id', 'uuid', 'name', 'namespace' ] });
    // Uninstalled between authentication and this read.
    if (!i || !device) throw notFound('Token 信息不存在');
    const d = device.get({ plain: true });
    return {
      success: true,
      token: i.token,
      appId: i.appId,
      deviceType: i.deviceType ?? null,
      isReadOnly: !!i.isReadOnly,
      note: i.note,
      installedAt: i.installedAt,
      updatedAt: i.updatedAt,
      device: { id: d.id, uuid: d.uuid, name: d.name, namespace: d.namespace ?? d.uuid },
    };
  }

  /**
   * The names of the device's student list: an array whose elements are `{name, …}`
   * objects or plain strings (an object without a string `name` names nobody).
   * 404 设备未设置学生列表 without the key; 400 学生列表格式错误 for anything else.
   */
  private async studentNames(deviceId: number): Promise<Set<string>> {
    const row = await this.ctx.model.KvEntry.findOne({
      attributes: [ 'value' ], where: { deviceId, key: STUDENT_LIST_KEY }, raw: true,
    }) as { value: string } | null;
    if (!row) throw notFound('设备未设置学生列表');
    let list: unknown;
    try {
      list = JSON.parse(row.value);
    } catch {
      list = undefined;
    }
    const malformed = () => badRequest('学生列表格式错误', { key: STUDENT_LIST_KEY });
    if (!Array.isArray(list)) throw malformed();
    const names = new Set<string>();
    for (const element of list) {
      if (typeof element === 'string') names.add(element);
      else if (isPlainObject(element)) {
        if (typeof element.name === 'string') names.add(element.name);
      } else throw malformed();
    }
    return names;
  }

  /** Student or parent token: note = the name (student) or `<name> 家长` (parent), if the name is on the list. */
  async setStudentName(install: AppInstallAttributes, name: string) {
    const names = await this.studentNames(install.deviceId);
    if (!names.has(name)) throw badRequest('该名称不在学生列表中');
    const row = await this.setNoteOf(install, install.deviceType === 'parent' ? `${name} 家长` : name);
    return { success: true, token: row.token, name: row.note, deviceType: row.deviceType, updatedAt: row.updatedAt };
  }

  /** Teacher token: note = the name. */
  async setTeacherName(install: AppInstallAttributes, name: string) {
    const row = await this.setNoteOf(install, name);
    return { success: true, token: row.token, name: row.note, deviceType: row.deviceType, updatedAt: row.updatedAt };
  }

  async setNote(install: AppInstallAttributes, note: string | null) {
    const row = await this.setNoteOf(install, note);
    return { success: true, token: row.token, note: row.note, updatedAt: row.updatedAt };
  }

  /**
   * Writes the note (updatedAt always moves), then makes every worker forget its cached
   * copy of the token and refresh its sockets joined with it (senderInfo, requestedBy).
   * This worker's sockets are refreshed before the answer: a client that sets its name
   * and then sends an event through this worker is sent with the new name.
   */
  private async setNoteOf(install: AppInstallAttributes, note: string | null) {
    const updatedAt = new Date();
    const [ affected ] = await this.ctx.model.AppInstall.update({ note, updatedAt }, { where: { id: install.id }, silent: true });
    if (affected === 0) throw notFound('Token 不存在'); // uninstalled meanwhile
    this.app.tokenCache.delete(install.token);
    await this.app.realtime.refreshToken(install.token);
    try {
      await this.app.sharedState.publish({ type: 'token-updated', token: install.token });
    } catch (err) {
      // The note is written; other workers see it when their cache entry expires or when
      // they reconnect to Redis (they clear their caches then); their sockets joined with
      // the token keep the old note until they join again.
      this.ctx.logger.warn('[tokens] token update broadcast failed: %s', describeError(err));
    }
    return { token: install.token, note, deviceType: install.deviceType ?? null, updatedAt };
  }
}
