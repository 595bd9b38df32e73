/**
 * Reading a ClassworksKV database (CONTRACT.md §9). One reader per source schema
 * (postgresSource.ts: the 1.3 schema on PostgreSQL; mysqlSource.ts: the 1.1 schema on
 * MySQL/MariaDB); both speak the Prisma-generated tables and differ only in quoting,
 * placeholders and how JSON comes back. Everything is read in keyset pages (never OFFSET,
 * never a whole table), so memory stays flat whatever the size of the database.
 */

export interface SourceAccount {
  id: string;
  provider: string;
  providerId: string;
  email: string | null;
  name: string | null;
  avatarUrl: string | null;
  /** JSON text (null: none). */
  providerData: string | null;
  /** The 1.3 refresh token (a secret: only its SHA-256 is kept, as this server does). */
  refreshToken: string | null;
  refreshTokenExpiry: Date | null;
  tokenVersion: number;
  createdAt: Date;
  updatedAt: Date;
}

export interface SourceDevice {
  id: number;
  uuid: string;
  name: string | null;
  /** 1.3 only; null: none of its own. */
  namespace: string | null;
  password: string | null;
  passwordHint: string | null;
  accountId: string | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface SourceInstall {
  id: string;
  deviceId: number;
  appId: string;
  token: string;
  note: string | null;
  deviceType: string | null;
  isReadOnly: boolean;
  installedAt: Date;
  updatedAt: Date;
}

export interface SourceConfig {
  id: string;
  deviceId: number;
  /** Plain text in the original (1.3 kept class passwords unhashed). */
  password: string | null;
  deviceType: string | null;
  isReadOnly: boolean;
  createdAt: Date;
  updatedAt: Date;
}

export interface SourceKey {
  deviceId: number;
  key: string;
  /** The stored JSON as text (parsed only where needed). */
  json: string;
  creatorIp: string | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface SourceCounts {
  accounts: number;
  devices: number;
  installs: number;
  configs: number | null;
  keys: number;
}

/** The source cannot be used: unreachable, or not a ClassworksKV database. One line for stderr. */
export class SourceError extends Error {}

type Row = Record<string, unknown>;

/** Required columns per table; optional ones (later versions) are detected. */
const REQUIRED: Record<string, string[]> = {
  Device: [ 'id', 'uuid', 'name', 'password', 'passwordHint', 'createdAt', 'updatedAt' ],
  AppInstall: [ 'id', 'deviceId', 'appId', 'token', 'note', 'installedAt', 'updatedAt' ],
  KVStore: [ 'deviceId', 'key', 'value', 'creatorIp', 'createdAt', 'updatedAt' ],
};

const date = (v: unknown): Date => {
  if (v instanceof Date) return v;
  // Epoch milliseconds (timeMs()), as a number or as int8 text.
  if (typeof v === 'number' || (typeof v === 'string' && /^-?\d+$/.test(v))) return new Date(Number(v));
  return new Date(String(v));
};
const dateOrNull = (v: unknown): Date | null => (v === null || v === undefined ? null : date(v));
const str = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));

/**
 * The schema-independent part of a reader. Subclasses give the driver (query, quoting,
 * placeholders) and how a JSON column is read as text.
 */
export abstract class SqlSource {
  /** `1.3 (PostgreSQL)` or `1.1 (MySQL)`: for the report. */
  abstract readonly label: string;
  protected columns = new Map<string, Set<string>>();

  /** Runs one statement; `?` placeholders are translated by the subclass. */
  protected abstract query(sql: string, params: unknown[]): Promise<Row[]>;
  /** A quoted identifier. */
  protected abstract q(name: string): string;
  /** SQL that reads a JSON column as its text. */
  protected abstract jsonText(column: string): string;
  /** SQL reading a timestamp column for the hot path (keys); the driver's own Date by default. */
  protected timeMs(column: string): string {
    return column;
  }
  /** SQL listing the source schema's columns as rows `{t: table, c: column}` (information_schema). */
  protected abstract readonly columnsSql: string;

  /** Table name → column names of the source (the schema check reads them). */
  protected async describe(): Promise<Map<string, Set<string>>> {
    const out = new Map<string, Set<string>>();
    for (const r of await this.query(this.columnsSql, [])) {
      const t = String(r.t);
      if (!out.has(t)) out.set(t, new Set());
      out.get(t)!.add(String(r.c));
    }
    return out;
  }
  abstract close(): Promise<void>;

  /** Checks that this is a ClassworksKV database; throws SourceError naming what is missing. */
  async check(): Promise<void> {
    this.columns = await this.describe();
    for (const [ table, cols ] of Object.entries(REQUIRED)) {
      const have = this.columns.get(table);
      if (!have) throw new SourceError(`the source is not a ClassworksKV ${this.label} database: table "${table}" not found`);
      const missing = cols.filter(c => !have.has(c));
      if (missing.length) throw new SourceError(`the source is not a ClassworksKV ${this.label} database: table "${table}" lacks ${missing.map(c => `"${c}"`).join(', ')}`);
    }
  }

  private has(table: string, column?: string): boolean {
    const cols = this.columns.get(table);
    return !!cols && (column === undefined || cols.has(column));
  }

  /** Whether the source has auto-auth configs (1.3); a 1.1 source has none. */
  get hasConfigs(): boolean {
    return this.has('AutoAuth');
  }

  private opt(table: string, column: string, fallback: string): string {
    return this.has(table, column) ? this.q(column) : fallback;
  }

  async counts(): Promise<SourceCounts> {
    const count = async (table: string) => Number((await this.query(`SELECT COUNT(*) AS n FROM ${this.q(table)}`, []))[0].n);
    return {
      accounts: this.has('Account') ? await count('Account') : 0,
      devices: await count('Device'),
      installs: await count('AppInstall'),
      configs: this.hasConfigs ? await count('AutoAuth') : null,
      keys: await count('KVStore'),
    };
  }

  /** Rows whose device does not exist (possible on 1.3: no foreign keys); they are not copied. */
  async orphans(): Promise<{ installs: number; configs: number; keys: number }> {
    const count = async (table: string) => Number((await this.query(
      `SELECT COUNT(*) AS n FROM ${this.q(table)} c WHERE NOT EXISTS (SELECT 1 FROM ${this.q('Device')} d WHERE d.${this.q('id')} = c.${this.q('deviceId')})`, []))[0].n);
    return {
      installs: await count('AppInstall'),
      configs: this.hasConfigs ? await count('AutoAuth') : 0,
      keys: await count('KVStore'),
    };
  }

  async* accounts(pageSize: number): AsyncGenerator<SourceAccount[]> {
    if (!this.has('Account')) return;
    const t = 'Account';
    const cols = [
      this.q('id'), this.q('provider'), this.q('providerId'), this.q('email'), this.q('name'), this.q('avatarUrl'),
      `${this.has(t, 'providerData') ? this.jsonText(this.q('providerData')) : 'NULL'} AS ${this.q('providerData')}`,
      `${this.opt(t, 'refreshToken', 'NULL')} AS ${this.q('refreshToken')}`,
      `${this.opt(t, 'refreshTokenExpiry', 'NULL')} AS ${this.q('refreshTokenExpiry')}`,
      `${this.opt(t, 'tokenVersion', '1')} AS ${this.q('tokenVersion')}`,
      this.q('createdAt'), this.q('updatedAt'),
    ].join(', ');
    let after: string | null = null;
    for (;;) {
      const rows: Row[] = await this.query(
        `SELECT ${cols} FROM ${this.q(t)}${after === null ? '' : ` WHERE ${this.q('id')} > ?`} ORDER BY ${this.q('id')} LIMIT ${pageSize}`,
        after === null ? [] : [ after ]);
      if (rows.length === 0) return;
      yield rows.map(r => ({
        id: String(r.id),
        provider: String(r.provider),
        providerId: String(r.providerId),
        email: str(r.email),
        name: str(r.name),
        avatarUrl: str(r.avatarUrl),
        providerData: str(r.providerData),
        refreshToken: str(r.refreshToken),
        refreshTokenExpiry: dateOrNull(r.refreshTokenExpiry),
        tokenVersion: Number(r.tokenVersion ?? 1),
        createdAt: date(r.createdAt),
        updatedAt: date(r.updatedAt),
      }));
      after = String(rows[rows.length - 1].id);
      if (rows.length < pageSize) return;
    }
  }

  /** Devices in id order, `pageSize` at a time. */
  async* devices(pageSize: number): AsyncGenerator<SourceDevice[]> {
    const t = 'Device';
    const cols = [
      'id', 'uuid', 'name', 'password', 'passwordHint', 'createdAt', 'updatedAt',
    ].map(c => this.q(c)).concat([
      `${this.opt(t, 'namespace', 'NULL')} AS ${this.q('namespace')}`,
      `${this.opt(t, 'accountId', 'NULL')} AS ${this.q('accountId')}`,
    ]).join(', ');
    let after = -Infinity;
    for (;;) {
      const rows = await this.query(
        `SELECT ${cols} FROM ${this.q(t)}${after === -Infinity ? '' : ` WHERE ${this.q('id')} > ?`} ORDER BY ${this.q('id')} LIMIT ${pageSize}`,
        after === -Infinity ? [] : [ after ]);
      if (rows.length === 0) return;
      yield rows.map(r => ({
        id: Number(r.id),
        uuid: String(r.uuid),
        name: str(r.name),
        namespace: str(r.namespace),
        password: str(r.password),
        passwordHint: str(r.passwordHint),
        accountId: str(r.accountId),
        createdAt: date(r.createdAt),
        updatedAt: date(r.updatedAt),
      }));
      after = Number(rows[rows.length - 1].id);
      if (rows.length < pageSize) return;
    }
  }

  /** Which of `values` are some source device's own namespace. */
  async namespacesTaken(values: string[]): Promise<Set<string>> {
    if (values.length === 0 || !this.has('Device', 'namespace')) return new Set();
    const rows = await this.query(
      `SELECT ${this.q('namespace')} AS ns FROM ${this.q('Device')} WHERE ${this.q('namespace')} IN (${values.map(() => '?').join(', ')})`, values);
    return new Set(rows.map(r => String(r.ns)));
  }

  /** The installs of the devices with ids in [lo, hi]. */
  async installs(lo: number, hi: number): Promise<SourceInstall[]> {
    const t = 'AppInstall';
    const cols = [ 'id', 'deviceId', 'appId', 'token', 'note', 'installedAt', 'updatedAt' ].map(c => this.q(c)).concat([
      `${this.opt(t, 'deviceType', 'NULL')} AS ${this.q('deviceType')}`,
      `${this.opt(t, 'isReadOnly', '0')} AS ${this.q('isReadOnly')}`,
    ]).join(', ');
    const rows = await this.query(
      `SELECT ${cols} FROM ${this.q(t)} WHERE ${this.q('deviceId')} BETWEEN ? AND ? ORDER BY ${this.q('deviceId')}, ${this.q('id')}`, [ lo, hi ]);
    return rows.map(r => ({
      id: String(r.id),
      deviceId: Number(r.deviceId),
      appId: String(r.appId),
      token: String(r.token),
      note: str(r.note),
      deviceType: str(r.deviceType),
      isReadOnly: Boolean(Number(r.isReadOnly === true ? 1 : r.isReadOnly === false ? 0 : r.isReadOnly)),
      installedAt: date(r.installedAt),
      updatedAt: date(r.updatedAt),
    }));
  }

  /** The auto-auth configs of the devices with ids in [lo, hi] (none on a 1.1 source). */
  async configs(lo: number, hi: number): Promise<SourceConfig[]> {
    if (!this.hasConfigs) return [];
    const rows = await this.query(
      `SELECT ${[ 'id', 'deviceId', 'password', 'deviceType', 'isReadOnly', 'createdAt', 'updatedAt' ].map(c => this.q(c)).join(', ')}` +
      ` FROM ${this.q('AutoAuth')} WHERE ${this.q('deviceId')} BETWEEN ? AND ? ORDER BY ${this.q('deviceId')}, ${this.q('id')}`, [ lo, hi ]);
    return rows.map(r => ({
      id: String(r.id),
      deviceId: Number(r.deviceId),
      password: str(r.password),
      deviceType: str(r.deviceType),
      isReadOnly: Boolean(Number(r.isReadOnly === true ? 1 : r.isReadOnly === false ? 0 : r.isReadOnly)),
      createdAt: date(r.createdAt),
      updatedAt: date(r.updatedAt),
    }));
  }

  /** The keys of the devices with ids in [lo, hi], in (deviceId, key) order, `pageSize` at a time. */
  async* keys(lo: number, hi: number, pageSize: number): AsyncGenerator<SourceKey[]> {
    const d = this.q('deviceId');
    const k = this.q('key');
    const cols = `${d}, ${k}, ${this.jsonText(this.q('value'))} AS ${this.q('json')}, ${this.q('creatorIp')}, ` +
      `${this.timeMs(this.q('createdAt'))} AS ${this.q('createdAt')}, ${this.timeMs(this.q('updatedAt'))} AS ${this.q('updatedAt')}`;
    const from = `SELECT ${cols} FROM ${this.q('KVStore')} WHERE`;
    // Two exact index ranges after a cursor (the rest of its device, then the next devices):
    // an OR of both would make some planners scan from the start of the range on every page.
    const fetch = async (cursor: { deviceId: number; key: string } | null): Promise<Row[]> => {
      if (cursor === null) return this.query(`${from} ${d} BETWEEN ? AND ? ORDER BY ${d}, ${k} LIMIT ${pageSize}`, [ lo, hi ]);
      const rest = await this.query(`${from} ${d} = ? AND ${k} > ? ORDER BY ${k} LIMIT ${pageSize}`, [ cursor.deviceId, cursor.key ]);
      if (rest.length === pageSize) return rest;
      const next = await this.query(`${from} ${d} > ? AND ${d} <= ? ORDER BY ${d}, ${k} LIMIT ${pageSize - rest.length}`, [ cursor.deviceId, hi ]);
      return rest.concat(next);
    };
    // The next page is read while the caller works on this one (two pages in memory at most).
    let pending = fetch(null);
    for (;;) {
      const rows = await pending;
      if (rows.length === 0) return;
      const last = rows[rows.length - 1];
      const more = rows.length === pageSize;
      if (more) {
        pending = fetch({ deviceId: Number(last.deviceId), key: String(last.key) });
        // Not awaited until the next page is asked for; a failure then surfaces there.
        pending.catch(() => undefined);
      }
      yield rows.map(r => ({
        deviceId: Number(r.deviceId),
        key: String(r.key),
        json: String(r.json),
        creatorIp: str(r.creatorIp),
        createdAt: date(r.createdAt),
        updatedAt: date(r.updatedAt),
      }));
      if (!more) return;
    }
  }
}

/** A source URL with its password hidden, for messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '<unparseable url>';
  }
}
