import { Service } from 'egg';
import { DatabaseError, QueryTypes, Transaction } from 'sequelize';
import { bumpRevision } from '../lib/deviceRevision';
import { HttpError, notFound } from '../lib/errors';
import type { KvChange } from '../lib/kvEvents';
import type { TokenInfo } from '../lib/tokenCache';
import type { ListQuery } from '../validator/kv';
import type { KvEntryAttributes } from '../model/kvEntry';

/** The callback API of the mysql2 connections in Sequelize's pool. */
interface MysqlConnection {
  query(options: { sql: string; values: unknown[]; typeCast?: TypeCast }, callback: (err: Error | null, rows: unknown) => void): void;
}

/** mysql2's per-query type cast (a field of the result, and the default conversion). */
type TypeCast = (field: { type: string; string(): string | null }, next: () => unknown) => unknown;

/** DATETIME columns as the text the server sent ("2025-10-25 08:30:00.123"). */
const textDates: TypeCast = (field, next) => (field.type === 'DATETIME' ? field.string() : next());

/**
 * ISO-8601 (as Date.prototype.toJSON writes it) of a stored date: a Date, MySQL's UTC
 * text "YYYY-MM-DD HH:MM:SS.mmm" (rewritten without parsing), or SQLite's text.
 */
export function isoDate(d: Date | string): string {
  if (typeof d === 'string' && d.length === 23 && d[10] === ' ' && d[19] === '.') return `${d.slice(0, 10)}T${d.slice(11)}Z`;
  return new Date(d).toISOString();
}

/** The `load_more` link of a list page (CONTRACT.md §3): when limit > 0 and more remain. */
function loadMore(path: string, q: ListQuery, total: number): { load_more?: string } {
  if (q.limit <= 0 || q.skip + q.limit >= total) return {};
  const params = new URLSearchParams({ sortBy: q.sortBy, sortDir: q.sortDir, limit: String(q.limit), skip: String(q.skip + q.limit) });
  return { load_more: `${path}?${params.toString()}` };
}

/**
 * The JSON text of a `GET /kv` page, written out directly: the same text as
 * JSON.stringify of `{ items: [{ deviceId, key, metadata: { creatorIp, createdAt,
 * updatedAt } }], total_rows, load_more? }` (strings escaped by JSON.stringify, dates
 * are ISO-8601), without building the 300 objects of a 100-item page first (about a
 * third of the serialisation's time, docs/PERFORMANCE.md §9).
 */
export function listPageJson(deviceId: number,
  rows: ReadonlyArray<{ key: string; creatorIp: string | null; createdAt: Date | string; updatedAt: Date | string }>,
  total: number, more: { load_more?: string }): string {
  const head = `{"deviceId":${deviceId},"key":`;
  let s = '{"items":[';
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i];
    if (i > 0) s += ',';
    s += `${head}${JSON.stringify(r.key)},"metadata":{"creatorIp":${JSON.stringify(r.creatorIp ?? '')},"createdAt":"${isoDate(r.createdAt)}","updatedAt":"${isoDate(r.updatedAt)}"}}`;
  }
  s += `],"total_rows":${total}`;
  if (more.load_more !== undefined) s += `,"load_more":${JSON.stringify(more.load_more)}`;
  return `${s}}`;
}

/** The account a device is bound to, as `GET /kv/_info` shows it (§6.3). */
interface DeviceAccount {
  id: string;
  name: string | null;
  avatarUrl: string | null;
}

type Meta = Pick<KvEntryAttributes, 'key' | 'creatorIp' | 'createdAt' | 'updatedAt'>;

const notFoundKey = (key: string) => notFound(`未找到键名为 '${key}' 的记录`);

/**
 * SQLite (embedded mode, one worker): Sequelize opens a separate connection per
 * transaction and SQLite lets only one of them write, so two concurrent KV writes
 * would fail with SQLITE_BUSY. KV write transactions of a process therefore run one
 * after the other, and take the write lock when they begin (BEGIN IMMEDIATE).
 */
const sqliteQueues = new WeakMap<object, Promise<unknown>>();

/**
 * Key-value entries of a device. Every write commits, then records the device's new
 * revision for every worker's value cache (app.valueCache), then publishes a KvChange
 * (app.kvEvents); `GET /kv/:key` is served from the value cache or one indexed query.
 */
export default class KvService extends Service {
  private get db() {
    return this.ctx.model;
  }

  /**
   * The stored JSON text of a key (served as-is, never re-serialised): from this
   * worker's value cache when it is current, else one indexed query that also reads the
   * device revision the value belongs to (see app/lib/valueCache.ts).
   */
  async getRaw(deviceId: number, key: string): Promise<string> {
    const value = await this.app.valueCache.get(deviceId, key, async () => {
      const sql = 'SELECT e.value, d.revision FROM kv_entries e JOIN devices d ON d.id = e.deviceId WHERE e.deviceId = ? AND e.`key` = ?';
      const rows = this.db.getDialect() === 'mysql'
        ? await this.mysqlSelect<{ value: string; revision: number | string }>(sql, [ deviceId, key ])
        : await this.db.query(sql, { replacements: [ deviceId, key ], type: QueryTypes.SELECT, raw: true }) as Array<{ value: string; revision: number | string }>;
      return rows.length === 0 ? null : { value: rows[0].value, revision: Number(rows[0].revision) };
    });
    if (value === null) throw notFoundKey(key);
    return value;
  }

  /**
   * The hottest read, sent on a pooled mysql2 connection directly: skipping Sequelize's
   * query pipeline (option cloning, replacement formatting, result formatting) gave
   * `GET /kv/:key` +44% req/s (docs/PERFORMANCE.md). Same pool, same type casting; an
   * error is wrapped as Sequelize's DatabaseError so an outage is still answered 503.
   */
  private async mysqlSelect<T>(sql: string, values: unknown[], typeCast?: TypeCast): Promise<T[]> {
    const manager = this.db.connectionManager;
    const conn = await manager.getConnection({ type: 'read' });
    try {
      return await new Promise<T[]>((resolve, reject) => {
        (conn as unknown as MysqlConnection).query({ sql, values, ...(typeCast ? { typeCast } : {}) }, (err, rows) => {
          if (err) reject(new DatabaseError(err as Error & { sql: string }));
          else resolve(rows as T[]);
        });
      });
    } finally {
      manager.releaseConnection(conn);
    }
  }

  private static metadata(deviceId: number, row: Meta) {
    return {
      deviceId,
      key: row.key,
      metadata: { creatorIp: row.creatorIp ?? '', createdAt: new Date(row.createdAt), updatedAt: new Date(row.updatedAt) },
    };
  }

  async metadata(deviceId: number, key: string) {
    const row = await this.db.KvEntry.findOne({
      attributes: [ 'key', 'creatorIp', 'createdAt', 'updatedAt' ],
      where: { deviceId, key },
      raw: true,
    }) as Meta | null;
    if (!row) throw notFoundKey(key);
    return KvService.metadata(deviceId, row);
  }

  /**
   * The JSON text of a `GET /kv` page (CONTRACT.md §3), from this worker's value cache
   * when it is current (see page()).
   */
  listJson(deviceId: number, q: ListQuery): Promise<string> {
    type Row = { key: string; creatorIp: string | null; createdAt: Date | string; updatedAt: Date | string };
    return this.page<Row>('list', deviceId, q, 'e.`key` AS `key`, e.creatorIp AS creatorIp, e.createdAt AS createdAt, e.updatedAt AS updatedAt', true,
      (rows, total) => listPageJson(deviceId, rows, total, loadMore('/kv', q, total)));
  }

  /** The JSON text of a `GET /kv/_keys` page (CONTRACT.md §3), cached as listJson(). */
  keysJson(deviceId: number, q: ListQuery): Promise<string> {
    return this.page<{ key: string }>('keys', deviceId, q, 'e.`key` AS `key`', false, (rows, total) => JSON.stringify({
      keys: rows.map(r => r.key),
      total_rows: total,
      current_page: { limit: q.limit, skip: q.skip, count: rows.length },
      ...loadMore('/kv/_keys', q, total),
    }));
  }

  /**
   * A list page, serialised once and kept in the value cache under a name no key can
   * have (keys never contain NUL), tagged with the device revision like a value: any
   * write of the device raises the revision, so a page is served only while nothing
   * changed since it was read. The revision, the total and the rows are read in one
   * statement (one snapshot), so the tag is exactly the page's revision.
   */
  private async page<R extends { key: string }>(kind: 'list' | 'keys', deviceId: number, q: ListQuery,
    columns: string, dates: boolean, build: (rows: R[], total: number) => string): Promise<string> {
    const name = `\u0000${kind}\u0000${q.sortBy}\u0000${q.sortDir}\u0000${q.limit}\u0000${q.skip}`;
    const json = await this.app.valueCache.get(deviceId, name, async () => {
      const read = await this.pageRead<R>(columns, deviceId, q, dates);
      return read && { value: build(read.rows, read.total), revision: read.revision };
    });
    // The device is gone (deleted meanwhile): an empty page, as a query of its entries would give.
    return json ?? build([], 0);
  }

  /**
   * The device's revision and total and the rows of one page (`key` breaks ties in the
   * order). One statement: devices JOIN kv_entries (the page in index order, no sort on
   * MariaDB), the total as a subquery (run once). An empty page (no entries, past the end,
   * `limit=0`) has no row to carry revision and total: then one statement for those two.
   */
  private async pageRead<R extends { key: string }>(columns: string, deviceId: number, q: ListQuery, dates: boolean):
  Promise<{ revision: number; total: number; rows: R[] } | null> {
    type Head = { revision: number | string; total: number | string };
    const head = 'SELECT d.revision AS revision, (SELECT COUNT(*) FROM kv_entries c WHERE c.deviceId = d.id) AS total';
    if (q.limit > 0) {
      const dir = q.sortDir === 'desc' ? 'DESC' : 'ASC';
      const order = q.sortBy === 'key' ? `e.\`key\` ${dir}` : `e.${q.sortBy === 'createdAt' ? 'createdAt' : 'updatedAt'} ${dir}, e.\`key\` ${dir}`;
      // MySQL: DATETIMEs as the server's text (UTC, see config.sequelize.timezone), not
      // through Sequelize's moment-based parser: isoDate() turns the text into ISO-8601.
      const rows = await this.select<Head & R>(
        `${head}, ${columns} FROM devices d JOIN kv_entries e ON e.deviceId = d.id WHERE d.id = ? ORDER BY ${order} LIMIT ? OFFSET ?`,
        [ deviceId, q.limit, q.skip ], dates ? textDates : undefined);
      if (rows.length > 0) return { revision: Number(rows[0].revision), total: Number(rows[0].total), rows };
    }
    const found = await this.select<Head>(`${head} FROM devices d WHERE d.id = ?`, [ deviceId ]);
    return found.length === 0 ? null : { revision: Number(found[0].revision), total: Number(found[0].total), rows: [] };
  }

  /** A read-only statement: mysql2 directly on MySQL (see mysqlSelect), Sequelize on SQLite. */
  private async select<T>(sql: string, values: unknown[], typeCast?: TypeCast): Promise<T[]> {
    if (this.db.getDialect() === 'mysql') return this.mysqlSelect<T>(sql, values, typeCast);
    return await this.db.query(sql, { replacements: values, type: QueryTypes.SELECT, raw: true }) as T[];
  }

  /** Runs a write transaction (serialised per process on SQLite, see sqliteQueues). */
  private writeTransaction<T>(fn: (transaction: Transaction) => Promise<T>): Promise<T> {
    // READ COMMITTED: an UPDATE that matches no row takes no gap lock, so first writes of
    // new keys on neighbouring devices cannot deadlock each other (the device row lock in
    // bumpRevision still serialises the writes of one device).
    if (this.db.getDialect() !== 'sqlite') {
      return this.db.transaction({ isolationLevel: Transaction.ISOLATION_LEVELS.READ_COMMITTED }, fn);
    }
    const queue = sqliteQueues.get(this.app) ?? Promise.resolve();
    const run = queue.then(() => this.db.transaction({ type: Transaction.TYPES.IMMEDIATE }, fn));
    sqliteQueues.set(this.app, run.catch(() => undefined));
    return run;
  }

  /**
   * Runs a write. If it fails other than with an answer of ours (an HttpError), it may
   * have committed all the same (or may still): the device's cached values are not
   * trusted for a while (ValueCache.unsure).
   */
  private async unlessUnsure<T>(deviceId: number, write: () => Promise<T>): Promise<T> {
    try {
      return await write();
    } catch (err) {
      if (!(err instanceof HttpError)) await this.app.valueCache.unsure(deviceId);
      throw err;
    }
  }

  async upsert(device: TokenInfo, key: string, value: unknown, creatorIp: string) {
    const json = JSON.stringify(value);
    const now = new Date();
    const { created, revision } = await this.unlessUnsure(device.deviceId, () => (this.app.kvWriter
      ? this.app.kvWriter.upsert({ deviceId: device.deviceId, key, json, creatorIp, at: now })
      : this.sqliteUpsert(device.deviceId, key, json, creatorIp, now)));
    await this.app.valueCache.committed(device.deviceId, revision);
    const change: KvChange = { uuid: device.uuid, key, action: 'upsert', created, updatedAt: now.toISOString(), revision };
    this.app.kvEvents.publish(change);
    return { deviceId: device.deviceId, key, created, updatedAt: now };
  }

  /** The SQLite write of upsert() (MySQL: app.kvWriter, batched). */
  private async sqliteUpsert(deviceId: number, key: string, json: string, creatorIp: string, now: Date) {
    let created = false;
    let revision = 0;
    await this.writeTransaction(async transaction => {
      revision = await bumpRevision(this.db, deviceId, 1, transaction);
      const [ affected ] = await this.db.KvEntry.update(
        { value: json, creatorIp, revision, updatedAt: now },
        { where: { deviceId, key }, transaction, silent: true },
      );
      if (affected === 0) {
        created = true;
        await this.db.KvEntry.create(
          { deviceId, key, value: json, creatorIp, revision, createdAt: now, updatedAt: now },
          { transaction, silent: true },
        );
      }
      await this.service.changes.recordKvChanges(deviceId, [
        { uuid: '', key, action: 'upsert', created, updatedAt: now.toISOString(), revision },
      ], transaction);
    });
    return { created, revision };
  }

  async remove(device: TokenInfo, key: string) {
    let change: KvChange | undefined;
    await this.unlessUnsure(device.deviceId, () => this.writeTransaction(async transaction => {
      const revision = await bumpRevision(this.db, device.deviceId, 1, transaction);
      const n = await this.db.KvEntry.destroy({ where: { deviceId: device.deviceId, key }, transaction });
      if (n === 0) throw notFoundKey(key);
      change = { uuid: device.uuid, key, action: 'delete', deletedAt: new Date().toISOString(), revision };
      await this.service.changes.recordKvChanges(device.deviceId, [ change ], transaction);
    }));
    await this.app.valueCache.committed(device.deviceId, change!.revision);
    this.app.kvEvents.publish(change!);
  }

  /** All or nothing: one transaction, then one change per key in input order. */
  async batchImport(device: TokenInfo, entries: Array<[string, unknown]>, creatorIp: string) {
    const now = new Date();
    const keys = entries.map(([ k ]) => k);
    let first = 0;
    let existing = new Set<string>();
    let changes: KvChange[] = [];
    await this.unlessUnsure(device.deviceId, () => this.writeTransaction(async transaction => {
      first = await bumpRevision(this.db, device.deviceId, entries.length, transaction);
      const found = await this.db.KvEntry.findAll({
        attributes: [ 'key' ], where: { deviceId: device.deviceId, key: keys }, transaction, raw: true,
      }) as unknown as Array<{ key: string }>;
      existing = new Set(found.map(r => r.key));
      await this.db.KvEntry.bulkCreate(entries.map(([ key, value ], i) => ({
        deviceId: device.deviceId,
        key,
        value: JSON.stringify(value),
        creatorIp,
        revision: first + i,
        createdAt: now,
        updatedAt: now,
      })), { transaction, updateOnDuplicate: [ 'value', 'creatorIp', 'revision', 'updatedAt' ] });
      const updatedAt = now.toISOString();
      changes = keys.map((key, i) => ({
        uuid: device.uuid, key, action: 'upsert', created: !existing.has(key), updatedAt, revision: first + i, batch: true,
      }));
      await this.service.changes.recordKvChanges(device.deviceId, changes, transaction);
    }));
    await this.app.valueCache.committed(device.deviceId, first + entries.length - 1);
    for (const change of changes) this.app.kvEvents.publish(change);
    const n = entries.length;
    // Both generations at once (§6.3): 1.1 clients read `results[].created`, 1.3 clients
    // check `code` and read `data.summary` and `data.results[].isNew`.
    return {
      deviceId: device.deviceId,
      total: n,
      successful: n,
      failed: 0,
      results: keys.map(key => ({ key, created: !existing.has(key) })),
      code: 200,
      message: '批量导入成功',
      data: {
        deviceId: device.deviceId,
        summary: { total: n, successful: n, failed: 0 },
        results: keys.map(key => ({ key, isNew: !existing.has(key) })),
      },
    };
  }

  async info(deviceId: number) {
    const d = await this.db.Device.findByPk(deviceId, {
      attributes: [ 'id', 'uuid', 'name', 'accountId', 'createdAt', 'updatedAt' ], raw: true,
    }) as { id: number; uuid: string; name: string | null; accountId: string | null; createdAt: Date | string; updatedAt: Date | string } | null;
    if (!d) throw notFound('设备不存在');
    const bound = await this.service.accounts.ofDevice(d);
    const account: DeviceAccount | null = bound ? { id: bound.id, name: bound.name, avatarUrl: bound.avatarUrl } : null;
    // Raw SQLite rows carry dates as text ("2025-10-25 08:30:00.000 +00:00"); the contract wants ISO-8601.
    const createdAt = new Date(d.createdAt);
    const updatedAt = new Date(d.updatedAt);
    // §6.3: the uuid is a credential of password-less devices, so a bound device's is not shown.
    const device = account
      ? { id: Number(d.id), name: d.name, createdAt, updatedAt }
      : { id: Number(d.id), uuid: d.uuid, name: d.name, createdAt, updatedAt };
    return { device, hasAccount: account !== null, ...(account ? { account } : {}) };
  }
}
