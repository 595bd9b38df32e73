import { Service } from 'egg';
import { describeError, notFound } from '../lib/errors';
import { newToken } from '../lib/password';
import { failureThrottle } from '../lib/throttle';
import type { TokenInfo } from '../lib/tokenCache';
import { uuidv7 } from '../lib/uuidv7';
import type { AppInstallAttributes } from '../model/appInstall';
import type { DeviceAttributes } from '../model/device';

interface TokenRow {
  installId: string;
  deviceId: number;
  token: string;
  appId: string;
  deviceType: string | null;
  isReadOnly: number | boolean;
  note: string | null;
  uuid: string;
}

/** What kind of token an install is (§6.2). */
export interface TokenKind {
  deviceType?: string | null;
  isReadOnly?: boolean;
}


/** App installs: the KV tokens of a device. */
export default class AppInstallService extends Service {
  /** A new install (KV token) of `appId` on the device; `kind` sets its deviceType and read-only flag (§6.2). */
  async install(device: DeviceAttributes, appId: string, note: string | null, kind: TokenKind = {}) {
    const row = (await this.ctx.model.AppInstall.create({
      id: uuidv7(),
      deviceId: device.id,
      appId,
      token: newToken(),
      note,
      deviceType: kind.deviceType ?? null,
      isReadOnly: kind.isReadOnly ?? false,
    })).get({ plain: true });
    await this.forgetUnknown(row.token);
    return {
      id: row.id,
      appId: row.appId,
      token: row.token,
      note: row.note,
      name: row.note,
      deviceType: row.deviceType ?? null,
      isReadOnly: !!row.isReadOnly,
      installedAt: row.installedAt,
    };
  }

  /**
   * Deletes an install. Its token stops working at once on every worker (cache
   * entries dropped) and sockets that joined with it leave the room (realtime layer).
   */
  async getInstall(installId: string): Promise<AppInstallAttributes> {
    const found = await this.ctx.model.AppInstall.findByPk(installId);
    if (!found) throw notFound('应用未安装');
    return found.get({ plain: true }) as AppInstallAttributes;
  }

  async uninstall(device: DeviceAttributes, row: AppInstallAttributes) {
    await this.ctx.model.AppInstall.destroy({ where: { id: row.id } });
    this.app.tokenCache.delete(row.token);
    // The row is gone (the truth). Recorded and broadcast with retries; a worker that
    // misses both still drops it within a bound (app/lib/revocations.ts).
    await this.app.revocations.revoke(row.token, device.uuid);
  }

  async list(device: DeviceAttributes, order: 'ASC' | 'DESC') {
    // Not `raw`: raw rows carry SQLite dates as strings; instances give Date objects.
    const rows = await this.ctx.model.AppInstall.findAll({
      where: { deviceId: device.id },
      order: [[ 'installedAt', order ], [ 'id', order ]],
    });
    return rows.map(r => r.get({ plain: true }) as AppInstallAttributes);
  }

  /** token → device, from this worker's cache or one indexed query. */
  async resolveToken(token: string): Promise<TokenInfo | null> {
    const cache = this.app.tokenCache;
    // Cache hits only while this worker reads the revocation record (app/lib/revocations.ts).
    const cached = this.app.revocations.current ? cache.get(token) : undefined;
    if (cached) return cached;
    // Looked up a few seconds ago and not found (TOKEN_NEGATIVE_CACHE_MS).
    if (cache.isUnknown(token)) return null;
    // Tokens are printable ASCII; anything else (NUL, control characters, huge strings)
    // is never looked up, whichever path (HTTP or socket) it came from.
    if (!/^[\x21-\x7e]{1,255}$/.test(token)) return null;
    // Concurrent lookups of one token (a classroom's sockets joining at once) share one
    // query, while this worker hears of revocations (as for cache hits).
    if (!this.app.revocations.current) return this.readToken(token, cache.generation);
    return cache.once(token, generation => this.readToken(token, generation));
  }

  /** The database read of resolveToken(): the result is cached under `generation`. */
  private async readToken(token: string, generation: number): Promise<TokenInfo | null> {
    const cache = this.app.tokenCache;
    const rows = (await this.ctx.model.query(
      'SELECT a.id AS installId, a.deviceId AS deviceId, a.token AS token, a.appId AS appId, a.deviceType AS deviceType,' +
      ' a.isReadOnly AS isReadOnly, a.note AS note, d.uuid AS uuid FROM app_installs a ' +
      'JOIN devices d ON d.id = a.deviceId WHERE a.token = ?',
      { replacements: [ token ], type: 'SELECT', raw: true },
    ) as TokenRow[])
      // The token column uses a case-insensitive collation on MySQL: compare exactly here.
      .filter(r => r.token === token);
    if (rows.length === 0) {
      cache.setUnknown(token, generation);
      return null;
    }
    const r = rows[0];
    const info: TokenInfo = {
      installId: r.installId,
      deviceId: Number(r.deviceId),
      uuid: r.uuid,
      token,
      appId: r.appId,
      deviceType: r.deviceType ?? null,
      isReadOnly: !!Number(r.isReadOnly),
      note: r.note ?? null,
    };
    this.app.tokenCache.set(info, generation);
    return info;
  }

  /**
   * resolveToken() for a client at `ip` (kvAuth and the rate limiter, join-token): a
   * token in this worker's cache (known or known not to exist) answers at once; any
   * other one is looked up only while `ip` has fewer than RATE_LIMIT_TOKEN_FAILURES failed
   * lookups in the window, cluster-wide. The check comes before the query, so a client
   * spraying random tokens costs one shared-state read per request and no query once
   * past the limit; a token not found counts one failure. A valid token keeps working
   * from other addresses, and from this one while it is cached.
   * Throws the 429 (HttpError RATE_LIMITED) past the limit.
   */
  async lookupToken(token: string, ip: string): Promise<TokenInfo | null> {
    const cache = this.app.tokenCache;
    const cached = this.app.revocations.current ? cache.get(token) : undefined;
    if (cached) return cached;
    if (cache.isUnknown(token)) return null;
    const throttle = failureThrottle(this.ctx, 'tokenfail', ip, undefined, 'token');
    await throttle.check();
    const info = await this.resolveToken(token);
    if (!info) await throttle.fail();
    return info;
  }

  /**
   * A token was just created: no worker may still remember it as unknown (negative
   * cache), here nor on the others (the bus's `token-updated`, which drops the token from
   * every worker's cache). If the bus is down, the other workers' entries expire within
   * TOKEN_NEGATIVE_CACHE_MS.
   */
  private async forgetUnknown(token: string) {
    this.app.tokenCache.delete(token);
    try {
      await this.app.sharedState.publish({ type: 'token-updated', token });
    } catch (err) {
      this.ctx.logger.warn('[apps] token creation broadcast failed: %s', describeError(err));
    }
  }
}
