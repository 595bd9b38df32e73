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

  private loadMore(path: string, q: rules.ListQuery, total: number) {
    if (q.limit <= 0 || q.skip + q.limit >= total) return {};
    const params = new URLSearchParams({ sortBy: q.sortBy, sortDir: q.sortDir, limit: String(q.limit), skip: String(q.skip + q.limit) });
    return { load_more: `${path}?${params.toString()}` };
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

  async keys() {
    const q = rules.listQuery(this.ctx.query);
    const { keys, total } = await this.service.kv.keys(this.ctx.kvToken.deviceId, q);
    this.ctx.body = {
      keys,
      total_rows: total,
      current_page: { limit: q.limit, skip: q.skip, count: keys.length },
      ...this.loadMore('/kv/_keys', q, total),
    };
  }

  async list() {
    const q = rules.listQuery(this.ctx.query);
    const { items, total } = await this.service.kv.list(this.ctx.kvToken.deviceId, q);
    this.ctx.body = { items, total_rows: total, ...this.loadMore('/kv', q, total) };
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
