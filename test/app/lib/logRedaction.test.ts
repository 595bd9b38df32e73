import assert from 'node:assert';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { app, mock } from 'egg-mock/bootstrap';
import { logPadding, redactUrl } from '../../../app/lib/logRedaction';
import { createDevice, installApp } from '../../support/factories';
import { eventually } from '../../support/socket';

/** Renames a table away for the duration of `fn`: queries on it fail (a real database error). */
async function withoutTable<T>(table: string, fn: () => Promise<T>): Promise<T> {
  await app.model.query(`ALTER TABLE ${table} RENAME TO ${table}_away`);
  try {
    return await fn();
  } finally {
    await app.model.query(`ALTER TABLE ${table}_away RENAME TO ${table}`);
  }
}
const withoutKvEntries = <T>(fn: () => Promise<T>) => withoutTable('kv_entries', fn);

/** The text of one of the app's log files (egg writes them under config.logger.dir). */
function logFile(name: 'app' | 'error'): string {
  const { dir, appLogName, errorLogName } = app.config.logger as unknown as Record<string, string>;
  const file = path.join(dir, name === 'app' ? appLogName : errorLogName);
  return fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
}

describe('test/app/lib/logRedaction.test.ts', () => {
  describe('redactUrl()', () => {
    it('replaces the token segment of /apps/tokens/<token>/… and the values of credential query parameters with ***', () => {
      const cases: Array<[string, string]> = [
        [ '/apps/tokens/3f0c9a/set-student-name', '/apps/tokens/***/set-student-name' ],
        [ '/APPS/Tokens/3f0c9a/note?x=1', '/APPS/Tokens/***/note?x=1' ],
        [ '/metrics?token=s3cret', '/metrics?token=***' ],
        [ '/kv/k?apptoken=a&sortBy=key&token=b', '/kv/k?apptoken=***&sortBy=key&token=***' ],
        [ '/devices/u/password?currentPassword=a&newPassword=b&password=c&passwordHint=h', '/devices/u/password?currentPassword=***&newPassword=***&password=***&passwordHint=h' ],
        [ '/auth/cb?code=c&state=s&access_token=a&refresh_token=r', '/auth/cb?code=***&state=s&access_token=***&refresh_token=***' ],
        [ '/kv?%74oken=x&TOKEN=y&token[]=z&token', '/kv?%74oken=***&TOKEN=***&token[]=***&token=***' ],
        [ '/kv/tokens?tokenish=1', '/kv/tokens?tokenish=1' ],
        [ '/check', '/check' ],
      ];
      for (const [ url, expected ] of cases) assert.strictEqual(redactUrl(url), expected, url);
    });

    it('logPadding() keeps egg\'s prefix format, the URL redacted', () => {
      const padding = logPadding({ ip: '10.0.0.1', method: 'GET', url: '/metrics?token=abc', starttime: Date.now() });
      assert.match(padding, /^\[-\/10\.0\.0\.1\/-\/\d+ms GET \/metrics\?token=\*\*\*\]$/);
    });
  });

  describe('log files: no secret from the URL', () => {
    it('a warning logged while serving GET /metrics?token=<METRICS_TOKEN> shows token=***, never the token', async () => {
      const secret = `metrics-${Date.now()}-secret`;
      mock(app.settings, 'metricsToken', secret);
      mock(app.settings, 'metricsCacheMs', 0);
      await withoutKvEntries(() => app.httpRequest().get(`/metrics?token=${secret}&x=1`).expect(200));
      await eventually(() => assert.ok(logFile('app').split('\n')
        .some(l => l.includes('GET /metrics?token=***&x=1]') && l.includes('[metrics] counting devices and keys failed'))));
      assert.ok(!logFile('app').includes(secret), 'the metrics token is in the app log');
    });

    it('a 500 logged by errorHandler for POST /apps/tokens/<token>/set-student-name shows /apps/tokens/***/, never the token', async () => {
      const { token } = await installApp(await createDevice(), { appId: 'student-app', deviceType: 'student' });
      const res = await withoutKvEntries(() => app.httpRequest().post(`/apps/tokens/${token}/set-student-name`).send({ name: 'x' }));
      assert.deepStrictEqual([ res.status, res.body.message, res.body.code ], [ 500, '服务器内部错误', 'INTERNAL_ERROR' ]);
      for (const name of [ 'error', 'app' ] as const) {
        await eventually(() => assert.ok(logFile(name).includes('POST /apps/tokens/***/set-student-name]'), name));
        assert.ok(!logFile(name).includes(token), `the token is in the ${name} log`);
      }
    });

    it('a 500 whose database error carries the failed SQL (a token lookup) logs name, code and message only: neither the token nor the SQL (issue 10, item 5)', async () => {
      const secret = crypto.randomBytes(32).toString('hex');
      const res = await withoutTable('app_installs', () => app.httpRequest().get(`/kv/some-key?token=${secret}&sortBy=key`));
      assert.deepStrictEqual([ res.status, res.body.message, res.body.code ], [ 500, '服务器内部错误', 'INTERNAL_ERROR' ]);
      await eventually(() => assert.ok(logFile('error').split('\n').some(l => l.includes('GET /kv/some-key?token=***&sortBy=key]') && l.includes('SequelizeDatabaseError'))));
      for (const name of [ 'error', 'app' ] as const) {
        const text = logFile(name);
        assert.ok(!text.includes(secret), `the token is in the ${name} log`);
        assert.ok(!/SELECT [^\n]*app_installs/.test(text), `SQL is in the ${name} log`);
      }
    });

    it('the same for a token given in the header (only the SQL could carry it)', async () => {
      const secret = crypto.randomBytes(32).toString('hex');
      const res = await withoutTable('app_installs', () => app.httpRequest().get('/kv/header-key').set('x-app-token', secret));
      assert.strictEqual(res.status, 500);
      await eventually(() => assert.ok(logFile('error').includes('GET /kv/header-key]')));
      for (const name of [ 'error', 'app' ] as const) assert.ok(!logFile(name).includes(secret), `the token is in the ${name} log`);
    });
  });
});
