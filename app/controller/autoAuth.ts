import crypto from 'node:crypto';
import { Controller } from 'egg';
import { forbidden, unauthorized } from '../lib/errors';
import { failureThrottle } from '../lib/throttle';
import * as rules from '../validator/autoAuth';
import { isPlainObject } from '../validator/common';

/**
 * Namespace login (POST /apps/auth/token, no prior credentials: the namespace and the
 * config password are the credentials) and the /auto-auth routes, which run behind the
 * router's device authentication (see router: uuidAuth today, the account JWT of §8 later).
 */
export default class AutoAuthController extends Controller {
  private get body(): Record<string, unknown> {
    const b = (this.ctx.request as { body?: unknown }).body;
    return isPlainObject(b) ? b : {};
  }

  /**
   * POST /apps/auth/token. Failed attempts (the 401s) are throttled per client IP and
   * namespace, and per namespace, like device passwords (app/lib/throttle.ts): checked once the device is
   * known (unknown namespaces are not counted), before any password is verified.
   */
  async token() {
    const namespace = rules.loginNamespace(this.body.namespace);
    const appId = rules.loginAppId(this.body.appId);
    const password = rules.optionalPassword(this.body.password);
    const device = await this.service.autoAuth.deviceByNamespace(namespace);
    const ns = crypto.createHash('sha256').update(device.namespace ?? device.uuid).digest('base64url');
    const throttle = failureThrottle(this.ctx, 'nsfail', this.ctx.clientIp, ns);
    await throttle.check();
    const match = await this.service.autoAuth.match(device, password);
    if (!match.config) {
      await throttle.fail();
      throw unauthorized(match.failure === 'wrong_password' ? '密码不正确' : '需要提供密码');
    }
    const token = await this.service.autoAuth.issueToken(device, match.config, appId);
    this.ctx.status = 201;
    this.ctx.body = { success: true, ...token };
  }

  /** GET /auto-auth/devices/:uuid/auth-configs */
  async list() {
    this.ctx.body = { success: true, configs: await this.service.autoAuth.list(this.ctx.device) };
  }

  /** POST /auto-auth/devices/:uuid/auth-configs */
  async create() {
    const input = rules.configInput(this.body);
    const config = await this.service.autoAuth.create(this.ctx.device, input);
    this.ctx.status = 201;
    this.ctx.body = { success: true, config };
  }

  /** PUT /auto-auth/devices/:uuid/auth-configs/:configId */
  async update() {
    const input = rules.configInput(this.body);
    const config = await this.ownConfig();
    this.ctx.body = { success: true, config: await this.service.autoAuth.update(this.ctx.device, config, input) };
  }

  /** DELETE /auto-auth/devices/:uuid/auth-configs/:configId */
  async destroy() {
    const config = await this.ownConfig();
    await this.service.autoAuth.remove(config);
    this.ctx.status = 204;
  }

  /** PUT /auto-auth/devices/:uuid/namespace */
  async setNamespace() {
    const namespace = rules.newNamespace(this.body.namespace);
    this.ctx.body = { success: true, device: await this.service.autoAuth.setNamespace(this.ctx.device, namespace) };
  }

  /** The path's config, which must belong to the authenticated device (404, then 403). */
  private async ownConfig() {
    const config = await this.service.autoAuth.getConfig(rules.configId(this.ctx.params.configId));
    if (config.deviceId !== this.ctx.device.id) throw forbidden('无权操作此配置');
    return config;
  }
}
