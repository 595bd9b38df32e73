import crypto from 'node:crypto';
import { Service } from 'egg';
import { badRequest, HttpError } from '../lib/errors';

export const DEVICE_CODE_TTL_MS = 15 * 60 * 1000;
const LETTERS = 'ABCDEFGHJKLMNPQRSTUVWXYZ';
const EXPIRED = '设备代码不存在或已过期';

/** Device-code flow for CLI tools; state shared by all workers (15-minute codes). */
export default class DeviceCodeService extends Service {
  private static generate(): string {
    const digits = String(crypto.randomInt(0, 10000)).padStart(4, '0');
    let letters = '';
    for (let i = 0; i < 4; i++) letters += LETTERS[crypto.randomInt(0, LETTERS.length)];
    return `${digits}-${letters}`;
  }

  async create() {
    for (let attempt = 0; attempt < 10; attempt++) {
      const code = DeviceCodeService.generate();
      if (await this.app.sharedState.deviceCodeCreate(code, DEVICE_CODE_TTL_MS, Date.now())) {
        return { device_code: code, expires_in: DEVICE_CODE_TTL_MS / 1000, message: '请在前端输入此代码进行授权' };
      }
    }
    throw new HttpError(503, '暂时无法生成设备代码，请稍后重试', { code: 'SERVICE_UNAVAILABLE' });
  }

  async bind(code: string, token: string) {
    const resolved = await this.service.appInstall.resolveToken(token);
    if (!resolved) throw badRequest('无效的令牌');
    if (!await this.app.sharedState.deviceCodeBind(code, token)) throw badRequest(EXPIRED);
    return { success: true, message: '令牌已成功绑定到设备代码' };
  }

  async consume(code: string) {
    const r = await this.app.sharedState.deviceCodeConsume(code);
    if (r.status === 'success') return { status: 'success', token: r.token };
    if (r.status === 'pending') return { status: 'pending', message: '等待用户授权', expires_in: Math.ceil(r.ttlMs / 1000) };
    return { status: 'expired', message: EXPIRED };
  }

  async status(code: string) {
    const s = await this.app.sharedState.deviceCodeStatus(code);
    if (!s) return { device_code: code, exists: false, message: EXPIRED };
    return { device_code: code, exists: true, has_token: !!s.token, expires_in: Math.ceil(s.ttlMs / 1000), created_at: s.createdAt };
  }
}
