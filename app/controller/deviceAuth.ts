import { Controller } from 'egg';
import { badRequest } from '../lib/errors';
import { isPlainObject } from '../validator/common';

/**
 * A device code as typed by a person: surrounding spaces are dropped and letters
 * compared in upper case (codes are generated as `1234-ABCD`).
 */
function code(v: unknown): string | undefined {
  if (typeof v !== 'string') return undefined;
  const c = v.trim().toUpperCase();
  return c.length > 0 && c.length <= 64 ? c : undefined;
}

/** /auth/device/* — the device-code flow for CLI tools. */
export default class DeviceAuthController extends Controller {
  async create() {
    this.ctx.body = await this.service.deviceCode.create();
  }

  async bind() {
    const body = (this.ctx.request as { body?: unknown }).body;
    const b = isPlainObject(body) ? body : {};
    const deviceCode = code(b.device_code);
    const token = typeof b.token === 'string' && b.token ? b.token : undefined;
    if (!deviceCode || !token) throw badRequest('请提供 device_code 和 token');
    this.ctx.body = await this.service.deviceCode.bind(deviceCode, token);
  }

  async token() {
    const deviceCode = code(this.ctx.query.device_code);
    if (!deviceCode) throw badRequest('请提供 device_code');
    this.ctx.body = await this.service.deviceCode.consume(deviceCode);
  }

  async status() {
    const deviceCode = code(this.ctx.query.device_code);
    if (!deviceCode) throw badRequest('请提供 device_code');
    this.ctx.body = await this.service.deviceCode.status(deviceCode);
  }
}
