import { Service } from 'egg';
import { Op, UniqueConstraintError } from 'sequelize';
import { HttpError, badRequest, forbidden, notFound, unauthorized } from '../lib/errors';
import {
  AccessClaims, AccessTokenError, hashRefreshToken, newRefreshToken, refreshTokenAccountId,
  signAccessToken, verifyAccessToken,
} from '../lib/accountJwt';
import type { OAuthUser } from '../lib/oauth';
import { sameSecret } from '../lib/secret';
import type { AccountAttributes } from '../model/account';
import type { DeviceAttributes } from '../model/device';
import { uuidv7 } from '../lib/uuidv7';

/** Access tokens with fewer seconds left than this get a fresh one in `X-New-Access-Token`. */
export const RENEW_BELOW_SEC = 300;
/** Shared-state ticket kind of access tokens revoked by logout (by jti, until they expire). */
const REVOKED = 'jwt-revoked';

export interface AccountSession {
  account: AccountAttributes;
  claims: AccessClaims;
  /** A new access token when the presented one has less than RENEW_BELOW_SEC left. */
  renewed?: string;
}

export interface IssuedTokens {
  accessToken: string;
  refreshToken: string;
  /** As configured (`15m`): the 1.3 `expires_in`. */
  expiresIn: string;
}

const expiredError = () => new HttpError(401, 'JWT_EXPIRED', { code: 'AUTH_JWT_EXPIRED' });
const iso = (d: Date | string | null) => (d === null ? null : new Date(d));

/**
 * Accounts (§8): sign-in, access and refresh tokens, device binding. The one verification
 * path of account tokens is authenticate(); authorization (is this device the account's?)
 * stays with the middleware and controllers.
 */
export default class AccountsService extends Service {
  private get cfg() {
    return this.app.settings.accounts;
  }

  private get secret(): string {
    return this.cfg.jwtSecret as string;
  }

  /**
   * Verifies an access token (signature, iss, aud, type, expiry), then that it was not logged
   * out (revoked jti, shared by every worker) and that the account still exists with the same
   * tokenVersion (read from the database on every request, so logout-all holds at once on
   * every worker and instance). 401 `JWT_EXPIRED` (code AUTH_JWT_EXPIRED), 401 `账户不存在`,
   * 401 `token验证失败` otherwise.
   */
  async authenticate(token: string): Promise<AccountSession> {
    let claims: AccessClaims;
    try {
      claims = await verifyAccessToken(this.secret, token);
    } catch (err) {
      if (err instanceof AccessTokenError && err.reason === 'expired') throw expiredError();
      throw unauthorized('token验证失败');
    }
    const [ account, revoked ] = await Promise.all([
      this.find(claims.accountId),
      this.app.sharedState.ticketExists(REVOKED, claims.jti),
    ]);
    if (!account) throw unauthorized('账户不存在');
    if (revoked || account.tokenVersion !== claims.tokenVersion) throw unauthorized('token验证失败');
    const left = claims.exp - Math.floor(Date.now() / 1000);
    const renewed = left < RENEW_BELOW_SEC ? await this.accessToken(account) : undefined;
    return { account, claims, renewed };
  }

  async find(id: string): Promise<AccountAttributes | null> {
    const row = await this.ctx.model.Account.findByPk(id);
    return row ? row.get({ plain: true }) as AccountAttributes : null;
  }

  private accessToken(account: AccountAttributes) {
    return signAccessToken(this.secret, { accountId: account.id, tokenVersion: account.tokenVersion, provider: account.provider },
      this.cfg.accessTokenTtlSec);
  }

  /** A new refresh token for the account, replacing the one it had (one per account, as in 1.3). */
  private async newRefresh(account: AccountAttributes, onlyIfHash?: string): Promise<string | null> {
    const token = newRefreshToken(account.id);
    const where = onlyIfHash === undefined ? { id: account.id } : { id: account.id, refreshTokenHash: onlyIfHash };
    const [ n ] = await this.ctx.model.Account.update({
      refreshTokenHash: hashRefreshToken(token),
      refreshTokenExpiry: new Date(Date.now() + this.cfg.refreshTokenTtlSec * 1000),
    }, { where });
    return n === 1 ? token : null;
  }

  /** Creates or updates the account of a provider's user and issues its tokens (OAuth callback). */
  async signIn(provider: string, user: OAuthUser): Promise<IssuedTokens & { account: AccountAttributes }> {
    const name = user.name ?? (user.email ? user.email.split('@')[0] : null);
    const fields = {
      email: user.email?.slice(0, 191) ?? null,
      name: name?.slice(0, 191) ?? null,
      avatarUrl: user.avatarUrl && user.avatarUrl.length <= 1024 ? user.avatarUrl : null,
      providerData: JSON.stringify(user.raw),
    };
    const where = { provider, providerId: user.providerId };
    let row = await this.ctx.model.Account.findOne({ where });
    if (!row) {
      try {
        row = await this.ctx.model.Account.create({ id: uuidv7(), ...where, ...fields, tokenVersion: 1 });
      } catch (err) {
        // The same user signing in twice at once: the other request created it.
        if (!(err instanceof UniqueConstraintError)) throw err;
        row = await this.ctx.model.Account.findOne({ where });
        if (!row) throw err;
      }
    }
    await row.update(fields);
    const account = row.get({ plain: true }) as AccountAttributes;
    const refreshToken = await this.newRefresh(account) as string;
    return { account, accessToken: await this.accessToken(account), refreshToken, expiresIn: this.cfg.accessTokenExpiresIn };
  }

  /**
   * POST /accounts/refresh: a new access token and a new refresh token (rotation). The
   * presented refresh token is replaced in the same UPDATE that checks it, so of two
   * concurrent uses only one wins; an old token is refused afterwards.
   */
  async refresh(token: string) {
    const accountId = refreshTokenAccountId(token);
    if (!accountId) throw unauthorized('无效的刷新令牌');
    const account = await this.find(accountId);
    if (!account) throw unauthorized('账户不存在');
    const hash = hashRefreshToken(token);
    if (!account.refreshTokenHash || !sameSecret(account.refreshTokenHash, hash)) throw unauthorized('无效的刷新令牌');
    if (!account.refreshTokenExpiry || new Date(account.refreshTokenExpiry).getTime() <= Date.now()) throw unauthorized('刷新令牌已过期');
    const refreshToken = await this.newRefresh(account, hash);
    if (!refreshToken) throw unauthorized('无效的刷新令牌');
    return {
      access_token: await this.accessToken(account),
      expires_in: this.cfg.accessTokenExpiresIn,
      refresh_token: refreshToken,
      refresh_expires_in: this.cfg.refreshTokenExpiresIn,
      account: this.brief(account),
    };
  }

  /**
   * POST /accounts/logout: revokes the access token presented (its jti is refused by every
   * worker until it would have expired) and the account's refresh token (1.3 keeps one per
   * account). Other access tokens of the account live until they expire (≤ the access lifetime);
   * logout-all ends them too.
   */
  async logout(session: AccountSession) {
    const ttlMs = (session.claims.exp * 1000) - Date.now();
    if (ttlMs > 0) await this.app.sharedState.ticketPut(REVOKED, session.claims.jti, '1', ttlMs);
    await this.ctx.model.Account.update({ refreshTokenHash: null, refreshTokenExpiry: null }, { where: { id: session.account.id } });
  }

  /** POST /accounts/logout-all: raises tokenVersion (every access token issued so far is refused) and drops the refresh token. */
  async logoutAll(account: AccountAttributes) {
    await this.ctx.model.Account.update({
      tokenVersion: this.app.Sequelize.literal('`tokenVersion` + 1') as unknown as number,
      refreshTokenHash: null,
      refreshTokenExpiry: null,
    }, { where: { id: account.id } });
  }

  tokenInfo(session: AccountSession) {
    const { claims, account } = session;
    const now = Math.floor(Date.now() / 1000);
    return {
      accountId: account.id,
      tokenType: 'access',
      tokenVersion: claims.tokenVersion,
      issuedAt: new Date(claims.iat * 1000),
      expiresAt: new Date(claims.exp * 1000),
      expiresIn: Math.max(0, claims.exp - now),
      isExpired: claims.exp <= now,
      isLegacyToken: false,
      hasRefreshToken: !!account.refreshTokenHash,
      refreshTokenExpiry: iso(account.refreshTokenExpiry),
    };
  }

  brief(a: AccountAttributes) {
    return { id: a.id, provider: a.provider, email: a.email, name: a.name, avatarUrl: a.avatarUrl };
  }

  private async devicesOf(accountId: string) {
    const rows = await this.ctx.model.Device.findAll({ where: { accountId }, order: [[ 'id', 'ASC' ]] });
    return rows.map(r => r.get({ plain: true }) as DeviceAttributes);
  }

  async profile(account: AccountAttributes, providerInfo: Record<string, unknown> | null) {
    const devices = await this.devicesOf(account.id);
    return {
      id: account.id,
      provider: account.provider,
      providerInfo,
      email: account.email,
      name: account.name,
      avatarUrl: account.avatarUrl,
      devices: devices.map(d => ({ id: d.id, uuid: d.uuid, name: d.name, createdAt: d.createdAt })),
      createdAt: account.createdAt,
    };
  }

  async devices(account: AccountAttributes) {
    const devices = await this.devicesOf(account.id);
    return devices.map(d => ({
      id: d.id, uuid: d.uuid, name: d.name, namespace: d.namespace ?? d.uuid, createdAt: d.createdAt, updatedAt: d.updatedAt,
    }));
  }

  /**
   * Binds a device to the account. The controller has checked the device's own credentials
   * (a device password, when it has one). The UPDATE only takes an unbound device (or one
   * already the account's), so two accounts racing for a device cannot both win.
   */
  async bind(account: AccountAttributes, device: DeviceAttributes) {
    if (device.accountId && device.accountId !== account.id) throw badRequest('设备已绑定其他账户');
    const [ n ] = await this.ctx.model.Device.update({ accountId: account.id }, {
      where: { id: device.id, [Op.or]: [{ accountId: null }, { accountId: account.id }] },
    });
    if (n === 0) throw badRequest('设备已绑定其他账户');
    return { deviceId: device.id, uuid: device.uuid, name: device.name };
  }

  /** Unbinds devices of the account: all of them or none (404 for unknown uuids first, then 403 for others'). */
  async unbind(account: AccountAttributes, uuids: string[]) {
    const rows = (await this.ctx.model.Device.findAll({ where: { uuid: uuids } })).map(r => r.get({ plain: true }) as DeviceAttributes);
    const found = new Map(rows.filter(r => uuids.includes(r.uuid)).map(r => [ r.uuid, r ]));
    const missing = uuids.filter(u => !found.has(u));
    if (missing.length) throw notFound(`以下设备不存在: ${missing.join(', ')}`);
    const foreign = uuids.filter(u => found.get(u)?.accountId !== account.id);
    if (foreign.length) throw forbidden(`您没有权限解绑以下设备: ${foreign.join(', ')}`);
    const [ n ] = await this.ctx.model.Device.update({ accountId: null }, {
      where: { id: [ ...found.values() ].map(d => d.id), accountId: account.id },
    });
    return n;
  }

  /** The account a device is bound to, or null (GET /kv/_info, GET /devices/:uuid, GET /accounts/device/:uuid/account). */
  async ofDevice(device: Pick<DeviceAttributes, 'accountId'>): Promise<AccountAttributes | null> {
    return device.accountId ? this.find(device.accountId) : null;
  }
}
