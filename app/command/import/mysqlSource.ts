import mysql from 'mysql2/promise';
import { SqlSource, SourceError, redactUrl } from './source';

/**
 * The ClassworksKV 1.1 schema on MySQL/MariaDB (Prisma: `Device`, `AppInstall`, `KVStore`,
 * `Account`), read with mysql2 (already this server's MySQL driver). Columns of later
 * versions (namespace, token kinds, `AutoAuth`) are read when present.
 */
export class MysqlSource extends SqlSource {
  readonly label = '1.1 (MySQL)';

  private constructor(private readonly conn: mysql.Connection) {
    super();
  }

  static async open(url: string): Promise<MysqlSource> {
    const u = new URL(url);
    u.protocol = 'mysql:';
    let conn: mysql.Connection;
    try {
      // Prisma stores DATETIME(3) in UTC.
      conn = await mysql.createConnection({ uri: u.toString(), timezone: 'Z', charset: 'utf8mb4', connectTimeout: 5000, dateStrings: false });
    } catch (err) {
      throw new SourceError(`cannot reach the source database ${redactUrl(url)}: ${(err as Error).message}`);
    }
    conn.on('error', () => undefined);
    return new MysqlSource(conn);
  }

  protected async query(sql: string, params: unknown[]) {
    const [ rows ] = await this.conn.query(sql, params);
    return rows as Array<Record<string, unknown>>;
  }

  protected q(name: string) {
    return `\`${name.replace(/`/g, '``')}\``;
  }

  /** MySQL 8 returns JSON parsed and MariaDB (JSON = LONGTEXT) as text: read the text on both. */
  protected jsonText(column: string) {
    return `CAST(${column} AS CHAR CHARACTER SET utf8mb4)`;
  }

  protected readonly columnsSql =
    'SELECT TABLE_NAME AS t, COLUMN_NAME AS c FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()';

  async close() {
    await this.conn.end().catch(() => undefined);
  }
}
