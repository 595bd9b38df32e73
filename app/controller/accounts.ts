import { Controller } from 'egg';
import { notFound } from '../lib/errors';
import { checkDevicePassword } from '../middleware/uuidAuth';
import * as rules from '../validator/accounts';
import { lookupUuid } from '../validator/device';
import { isPlainObject, single } from '../validator/common';

/**
 * /accounts (§8). Routes marked accountAuth in the router have `ctx.accountSession`; the
 * OAuth routes and /refresh authenticate with what they carry (state, refresh token).
 */
export default class AccountsController extends Controller {
  private get body(): Record<string, unknown> {
    const b = (this.ctx.request as { body?: unknown }).body;
    return isPlainObject(b) ? b : {};
  }

  private get session() {
    return this.ctx.accountSession;
  }

  /** GET /accounts/oauth/providers */
  async providers() {
    this.ctx.body = { success: true, data: this.service.oauth.list() };
  }

  /** GET /accounts/oauth/:provider → 302 to the provider. */
  async authorize() {
    const provider = this.service.oauth.provider(rules.providerId(this.ctx.params.provider));
    // Both targets are configured URLs (the provider's, FRONTEND_URL): egg's safe redirect
    // would need every provider domain in a whitelist.
    this.ctx.unsafeRedirect(await this.service.oauth.begin(provider));
  }

  /** GET /accounts/oauth/:provider/callback → 302 to the front end, with tokens or with `error`. */
  async callback() {
    const provider = this.service.oauth.provider(rules.providerId(this.ctx.params.provider));
    const query: Record<string, string> = {};
    for (const [ k, v ] of Object.entries(this.ctx.query)) {
      const one = single(v);
      if (typeof one === 'string') query[k] = one;
    }
    let target: string;
    try {
      target = await this.service.oauth.finish(provider, query);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      // The reason, never the query (it holds the authorization code).
      this.ctx.logger.warn('[oauth] %s: sign-in failed: %s', provider.id, message);
      target = this.service.oauth.frontendUrl({ error: message, provider: provider.id, success: 'false' });
    }
    this.ctx.unsafeRedirect(target);
  }

  /** GET /accounts/profile */
  async profile() {
    const { account } = this.session;
    this.ctx.body = { success: true, data: await this.service.accounts.profile(account, this.service.oauth.providerInfo(account.provider)) };
  }

  /** GET /accounts/devices */
  async devices() {
    this.ctx.body = { success: true, data: await this.service.accounts.devices(this.session.account) };
  }

  /**
   * POST /accounts/devices/bind `{uuid}`. Fixed: a device with a password is bound only with
   * that password (`x-device-password`): binding hands the device to the account's token.
   */
  async bind() {
    const uuid = rules.bindUuid(this.body.uuid);
    const device = await this.service.device.findByUuid(uuid);
    if (!device) throw notFound('设备不存在 #1');
    if (device.accountId !== this.session.account.id) await checkDevicePassword(this.ctx, device, '需要提供设备密码');
    const data = await this.service.accounts.bind(this.session.account, device);
    this.ctx.body = { success: true, message: '设备绑定成功', data };
  }

  /** POST /accounts/devices/unbind `{uuid}` or `{uuids}` */
  async unbind() {
    const { uuids, many } = rules.unbindUuids(this.body);
    const n = await this.service.accounts.unbind(this.session.account, uuids);
    this.ctx.body = { success: true, message: many ? `成功解绑 ${n} 个设备` : '设备解绑成功', unboundCount: n };
  }

  /** GET /accounts/device/:uuid/account (no auth, as in 1.3) */
  async deviceAccount() {
    const device = await this.service.device.findByUuid(lookupUuid(String(this.ctx.params.uuid)));
    if (!device) throw notFound('设备不存在 #2');
    const account = await this.service.accounts.ofDevice(device);
    this.ctx.body = {
      success: true,
      data: account ? { id: account.id, provider: account.provider, name: account.name, avatarUrl: account.avatarUrl, bindTime: device.updatedAt } : null,
    };
  }

  /** POST /accounts/refresh `{refresh_token}` */
  async refresh() {
    const data = await this.service.accounts.refresh(rules.refreshToken(this.body));
    this.ctx.body = { success: true, message: '令牌刷新成功', data };
  }

  /** POST /accounts/logout */
  async logout() {
    await this.service.accounts.logout(this.session);
    this.ctx.body = { success: true, message: '登出成功' };
  }

  /** POST /accounts/logout-all */
  async logoutAll() {
    await this.service.accounts.logoutAll(this.session.account);
    this.ctx.body = { success: true, message: '已从所有设备登出' };
  }

  /** GET /accounts/token-info */
  async tokenInfo() {
    this.ctx.body = { success: true, data: this.service.accounts.tokenInfo(this.session) };
  }
}
