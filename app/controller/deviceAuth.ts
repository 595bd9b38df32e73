import { Controller } from 'egg';
import { badRequest } from '../lib/errors';
import { isPlainObject } from '../validator/common';

const code = (v: unknown) => (typeof v === 'string' && v.length > 0 && v.length <= 64 ? v : undefined);

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
