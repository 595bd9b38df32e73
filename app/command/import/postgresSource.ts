import { Client } from 'pg';
import { SqlSource, SourceError, redactUrl } from './source';

/**
 * The ClassworksKV 1.3 schema on PostgreSQL (Prisma, `relationMode = "prisma"`: quoted
 * CamelCase tables and columns, no foreign keys), read with `pg` (node-postgres).
 */
export class PostgresSource extends SqlSource {
  readonly label = '1.3 (PostgreSQL)';

  private constructor(private readonly client: Client) {
    super();
  }

  static async open(url: string): Promise<PostgresSource> {
    const client = new Client({ connectionString: url, connectionTimeoutMillis: 5000, application_name: 'classworks-kv-import' });
    // A connection that breaks later surfaces through the failing query.
    client.on('error', () => undefined);
    try {
      await client.connect();
    } catch (err) {
      await client.end().catch(() => undefined);
      throw new SourceError(`cannot reach the source database ${redactUrl(url)}: ${(err as Error).message}`);
    }
    // Timestamps come back as Date (timestamptz), the JSON column as its text (jsonText()).
    return new PostgresSource(client);
  }

  protected async query(sql: string, params: unknown[]) {
    let i = 0;
    const text = sql.replace(/\?/g, () => `$${++i}`);
    return (await this.client.query(text, params)).rows;
  }

  protected q(name: string) {
    return `"${name.replace(/"/g, '""')}"`;
  }

  protected jsonText(column: string) {
    return `${column}::text`;
  }

  /**
   * Epoch milliseconds, truncated like the Date node-postgres would build (timestamptz(6)
   * keeps microseconds; this server keeps milliseconds), without parsing a date string per
   * row (measured: the largest single cost of reading keys, docs/PERFORMANCE.md §6).
   */
  protected timeMs(column: string) {
    return `floor(extract(epoch from ${column}) * 1000)::bigint`;
  }

  protected readonly columnsSql =
    'SELECT table_name AS t, column_name AS c FROM information_schema.columns WHERE table_schema = current_schema()';

  async close() {
    await this.client.end().catch(() => undefined);
  }
}
