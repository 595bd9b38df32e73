import { Controller } from 'egg';
import * as rules from '../validator/kv';

/** /kv routes. kvAuth (router) has resolved the token's device into ctx.kvToken. */
export default class KvController extends Controller {
  private get value(): unknown {
    return (this.ctx.request as { body?: unknown }).body;
  }

  /** The `:key` of the path, decoded from the raw path (see rules.pathKey). */
  private get key(): string {
    return rules.kvKey(rules.pathKey(this.ctx.path));
  }

  async info() {
    this.ctx.body = await this.service.kv.info(this.ctx.kvToken.deviceId);
  }

  /** GET /kv/_token: the token describes itself, read fresh from the database. */
  async token() {
    this.ctx.body = await this.service.tokens.describe(this.ctx.kvToken.installId);
  }

  /** The device's changes after `since`, oldest first (CONTRACT.md §7). */
  async changes() {
    const q = rules.changesQuery(this.ctx.query);
    this.ctx.body = await this.service.changes.since(this.ctx.kvToken, q.since, q.limit);
  }

  /** GET /kv/_keys: the page's JSON text, serialised (and cached) by the service. */
  async keys() {
    const q = rules.listQuery(this.ctx.query);
    const json = await this.service.kv.keysJson(this.ctx.kvToken.deviceId, q);
    this.ctx.type = 'application/json; charset=utf-8';
    this.ctx.body = json;
  }

  /** GET /kv: as keys(). */
  async list() {
    const q = rules.listQuery(this.ctx.query);
    const json = await this.service.kv.listJson(this.ctx.kvToken.deviceId, q);
    this.ctx.type = 'application/json; charset=utf-8';
    this.ctx.body = json;
  }

  async show() {
    const key = this.key;
    const raw = await this.service.kv.getRaw(this.ctx.kvToken.deviceId, key);
    this.ctx.type = 'application/json; charset=utf-8';
    this.ctx.body = raw;
  }

  async metadata() {
    const key = this.key;
    this.ctx.body = await this.service.kv.metadata(this.ctx.kvToken.deviceId, key);
  }

  async upsert() {
    const key = rules.writableKey(rules.pathKey(this.ctx.path));
    const value = rules.kvValue(this.value, this.ctx.state.hasBody);
    this.ctx.body = await this.service.kv.upsert(this.ctx.kvToken, key, value, this.ctx.clientIp);
  }

  async batchImport() {
    const entries = rules.batchEntries(this.value, this.ctx.state.hasBody, this.app.settings.batchLimit);
    this.ctx.body = await this.service.kv.batchImport(this.ctx.kvToken, entries, this.ctx.clientIp);
  }

  async destroy() {
    const key = this.key;
    await this.service.kv.remove(this.ctx.kvToken, key);
    this.ctx.status = 204;
  }
}
