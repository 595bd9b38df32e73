import assert from 'node:assert';
import { app, mock } from 'egg-mock/bootstrap';
import { createDevice, deviceWithToken, installApp, overrideRateLimits, restoreRateLimits } from '../../support/factories';
import { COMBINATIONS, closeAllClients, connect, connectJoined, eventually, startServer, stopServer } from '../../support/socket';
import { parseMetrics, sample } from '../../support/metrics';

const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
const UNAUTHORIZED = { error: 'Unauthorized', message: 'Valid metrics token required' };
const withRedis = !!process.env.REDIS_URL;

async function scrape() {
  const res = await app.httpRequest().get('/metrics').expect(200);
  assert.strictEqual(res.headers['content-type'], CONTENT_TYPE);
  return { text: res.text, m: parseMetrics(res.text) };
}

describe('test/app/controller/metrics.test.ts', () => {
  describe('[GET /metrics] show()', () => {
    before(() => startServer());
    afterEach(() => closeAllClients());
    after(() => stopServer());

    it('200 text format with the 1.3 gauges: registered devices and keys counted in the database, health 1, one worker', async () => {
      mock(app.settings, 'metricsCacheMs', 0); // counted on every scrape
      let { m } = await scrape();
      assert.strictEqual(sample(m, 'classworks_registered_devices_total'), 0);
      assert.strictEqual(sample(m, 'classworks_keys_total'), 0);
      assert.strictEqual(sample(m, 'classworks_online_devices_total'), 0);

      const a = await deviceWithToken();
      const b = await deviceWithToken();
      await createDevice();
      for (const [ token, key ] of [[ a.token, 'k1' ], [ a.token, 'k2' ], [ b.token, 'k1' ]]) {
        await app.httpRequest().post(`/kv/${key}`).set('x-app-token', token).send({ v: 1 }).expect(200);
      }
      ({ m } = await scrape());
      assert.strictEqual(sample(m, 'classworks_registered_devices_total'), 3);
      assert.strictEqual(sample(m, 'classworks_keys_total'), 3);
      assert.strictEqual(sample(m, 'classworks_database_up'), 1);
      assert.strictEqual(sample(m, 'classworks_redis_up'), withRedis ? 1 : undefined);
      assert.strictEqual(sample(m, 'classworks_metrics_workers'), 1);

      await app.httpRequest().delete('/kv/k2').set('x-app-token', a.token).expect(204);
      ({ m } = await scrape());
      assert.strictEqual(sample(m, 'classworks_keys_total'), 2);
    });

    describe('devices and keys counts (kept per worker for METRICS_CACHE_MS, one count at a time)', () => {
      const sql = (q: string) => app.model.query(q);
      /** Inserts a device and one of its keys straight into the tables (behind the app's back). */
      async function insertRows(uuid: string) {
        const now = new Date().toISOString().replace('T', ' ').replace('Z', '');
        await app.model.query('INSERT INTO devices (uuid, name, createdAt, updatedAt) VALUES (?, ?, ?, ?)', { replacements: [ uuid, uuid, now, now ] });
        const [[{ id }]] = await app.model.query('SELECT id FROM devices WHERE uuid = ?', { replacements: [ uuid ] }) as [[{ id: number }], unknown];
        await app.model.query('INSERT INTO kv_entries (deviceId, `key`, value, createdAt, updatedAt) VALUES (?, ?, ?, ?, ?)',
          { replacements: [ id, 'k', '{}', now, now ] });
      }
      const counts = async () => {
        const { m } = await scrape();
        return [ sample(m, 'classworks_registered_devices_total'), sample(m, 'classworks_keys_total') ];
      };

      it('200 a second scrape within METRICS_CACHE_MS shows the counts of the first; once the setting is lowered, the new ones', async () => {
        assert.strictEqual(app.settings.metricsCacheMs, 15000);
        await insertRows('first');
        assert.deepStrictEqual(await counts(), [ 1, 1 ]);
        await insertRows('second');
        assert.deepStrictEqual(await counts(), [ 1, 1 ]);
        assert.deepStrictEqual(await counts(), [ 1, 1 ]);
        mock(app.settings, 'metricsCacheMs', 0);
        assert.deepStrictEqual(await counts(), [ 2, 2 ]);
        await sql('DELETE FROM kv_entries');
        assert.deepStrictEqual(await counts(), [ 2, 0 ]);
      });

      it('200 for 8 concurrent scrapes that find no fresh counts: the two COUNT queries run once, and every scrape shows them', async () => {
        mock(app.settings, 'metricsCacheMs', 0);
        await insertRows('one');
        const N = 8;
        let probes = 0;
        const countQueries = { Device: 0, KvEntry: 0 };
        let release!: () => void;
        const released = new Promise<void>(resolve => {
          release = resolve;
        });
        // Every scrape asks for the counts in the same tick as it starts its database probe
        // (SELECT 1): the device count is held until all N probes are done, so every scrape
        // has asked for the counts while the first count was still running.
        app.model.addHook('afterQuery', 'metricsTest', (_options, query) => {
          if ((query as unknown as { sql?: string }).sql === 'SELECT 1' && ++probes === N) release();
        });
        app.model.Device.addHook('beforeCount', 'metricsTest', async () => {
          countQueries.Device++;
          await released;
        });
        app.model.KvEntry.addHook('beforeCount', 'metricsTest', () => {
          countQueries.KvEntry++;
        });
        try {
          const answers = await Promise.all(Array.from({ length: N }, () => counts()));
          assert.deepStrictEqual(answers, Array.from({ length: N }, () => [ 1, 1 ]));
          assert.deepStrictEqual([ probes, countQueries ], [ N, { Device: 1, KvEntry: 1 }]);
        } finally {
          app.model.removeHook('afterQuery', 'metricsTest');
          app.model.Device.removeHook('beforeCount', 'metricsTest');
          app.model.KvEntry.removeHook('beforeCount', 'metricsTest');
          release();
        }
      });

      it('200 without the two gauges while the counts do not answer within the probe timeout; database_up stays 1', async () => {
        let release!: () => void;
        const released = new Promise<void>(resolve => {
          release = resolve;
        });
        app.model.Device.addHook('beforeCount', 'metricsTest', () => released);
        try {
          const { m } = await scrape();
          assert.deepStrictEqual([ sample(m, 'classworks_registered_devices_total'), sample(m, 'classworks_keys_total'), sample(m, 'classworks_database_up') ],
            [ undefined, undefined, 1 ]);
        } finally {
          app.model.Device.removeHook('beforeCount', 'metricsTest');
          release();
        }
        // The late count fills the cache once it lands.
        await eventually(async () => assert.deepStrictEqual(await counts(), [ 0, 0 ]));
      });
    });

    it('200 classworks_online_devices_total counts distinct tokens with a joined socket (2 sockets of one token = 1), ' +
      'sockets connected counts every socket, and both go down after disconnects', async () => {
      const combo = COMBINATIONS[0];
      const a = await deviceWithToken();
      const a2 = await installApp(a.device, { appId: 'second' });
      const b = await deviceWithToken();
      const online = async () => sample((await scrape()).m, 'classworks_online_devices_total');
      const sockets = async () => sample((await scrape()).m, 'classworks_sockets_connected');

      const s1 = await connectJoined(combo, a.token, a.device.uuid, 1);
      const s2 = await connectJoined(combo, a.token, a.device.uuid, 2);
      assert.strictEqual(await online(), 1);
      const s3 = await connectJoined(combo, a2.token, a.device.uuid, 3);
      assert.strictEqual(await online(), 2);
      await connectJoined(combo, b.token, b.device.uuid, 1);
      const idle = await connect(combo);
      assert.strictEqual(await online(), 3);
      assert.strictEqual(await sockets(), 5);

      s3.close();
      await eventually(async () => assert.strictEqual(await online(), 2));
      s1.close();
      idle.close();
      await eventually(async () => assert.strictEqual(await sockets(), 2));
      assert.strictEqual(await online(), 2); // s2 still holds a.token
      s2.close();
      await eventually(async () => assert.strictEqual(await online(), 1));
      closeAllClients();
      await eventually(async () => assert.deepStrictEqual([ await online(), await sockets() ], [ 0, 0 ]));
    });

    it('200 counts HTTP requests by method, route pattern and final status (401, 404, 429 included) with a latency ' +
      'histogram, and never shows a token, a key or a raw URL', async () => {
      const { token } = await deviceWithToken();
      const secretKey = 'secret-key-name-4f1c';
      await app.httpRequest().post(`/kv/${secretKey}`).set('x-app-token', token).send({ v: 1 }).expect(200);
      const before = (await scrape()).m;

      await app.httpRequest().get(`/kv/${secretKey}?token=${token}`).expect(200);
      await app.httpRequest().get(`/kv/${secretKey}`).set('Authorization', `Bearer ${token}`).expect(200);
      await app.httpRequest().get('/kv/missing-key').set('x-app-token', token).expect(404);
      await app.httpRequest().get(`/kv/${secretKey}?token=${'0'.repeat(64)}`).expect(401);
      await app.httpRequest().get(`/no/such/${token}`).expect(404);
      const other = await deviceWithToken();
      overrideRateLimits({ kvRead: 1 });
      try {
        await app.httpRequest().get(`/kv/${secretKey}`).set('x-app-token', other.token).expect(404); // not its key
        await app.httpRequest().get(`/kv/${secretKey}`).set('x-app-token', other.token).expect(429);
      } finally {
        restoreRateLimits();
      }
      const { text, m } = await scrape();

      const delta = (name: string, labels: Record<string, string>) => (sample(m, name, labels) ?? 0) - (sample(before, name, labels) ?? 0);
      const requests = 'classworks_http_requests_total';
      assert.deepStrictEqual({
        ok: delta(requests, { method: 'GET', route: '/kv/:key', status: '200' }),
        notFound: delta(requests, { method: 'GET', route: '/kv/:key', status: '404' }),
        unauthorized: delta(requests, { method: 'GET', route: '/kv/:key', status: '401' }),
        limited: delta(requests, { method: 'GET', route: '/kv/:key', status: '429' }),
        unmatched: delta(requests, { method: 'GET', route: 'unmatched', status: '404' }),
        // The first scrape was counted once it was answered.
        metrics: delta(requests, { method: 'GET', route: '/metrics', status: '200' }),
        latencies: delta('classworks_http_request_duration_seconds_count', { method: 'GET', route: '/kv/:key' }),
        slowest: delta('classworks_http_request_duration_seconds_bucket', { method: 'GET', route: '/kv/:key', le: '+Inf' }),
      }, { ok: 2, notFound: 2, unauthorized: 1, limited: 1, unmatched: 1, metrics: 1, latencies: 6, slowest: 6 });
      assert.ok(sample(m, 'classworks_http_request_duration_seconds_sum', { method: 'GET', route: '/kv/:key' })! > 0);

      assert.ok(!text.includes(token), 'a token appears in the metrics');
      assert.ok(!text.includes(secretKey), 'a key appears in the metrics');
      assert.ok(!text.includes('/no/such'), 'a raw URL appears in the metrics');
      // Every route label is one of the router's patterns.
      const patterns = new Set((app.router as unknown as { stack: Array<{ path: string }> }).stack.map(layer => layer.path));
      for (const series of m) {
        if (series.name === requests && series.labels.route !== 'unmatched') assert.ok(patterns.has(series.labels.route), JSON.stringify(series));
      }
    });

    it('200 counts kv-key-changed broadcasts (one per key of a batch) and relayed events under one label', async () => {
      const { token } = await deviceWithToken();
      const before = (await scrape()).m;
      await app.httpRequest().post('/kv/one').set('x-app-token', token).send({ v: 1 }).expect(200);
      await app.httpRequest().post('/kv/_batchimport').set('x-app-token', token).send({ x: 1, y: [], z: {} }).expect(200);
      await app.httpRequest().delete('/kv/one').set('x-app-token', token).expect(204);
      await app.httpRequest().get('/kv/x').set('x-app-token', token).expect(200); // reads broadcast nothing
      // Relayed by real sockets: one event to one device room, one to the two rooms a socket joined.
      const other = await deviceWithToken();
      const single = await connect(COMBINATIONS[0], { query: { token } });
      await single.waitFor('joined');
      const both = await connect(COMBINATIONS[0], { query: { token } });
      await both.waitFor('joined');
      assert.strictEqual((await both.request('join-token', { token: other.token })).ok, true);
      assert.strictEqual((await single.request('send-event', { type: 'notification', content: { text: 'hi' } })).ok, true);
      assert.strictEqual((await both.request('send-event', { type: 'chat-message', content: null })).ok, true);
      const { text, m } = await scrape();
      const delta = (type: string) => (sample(m, 'classworks_events_delivered_total', { type }) ?? 0) -
        (sample(before, 'classworks_events_delivered_total', { type }) ?? 0);
      assert.deepStrictEqual({ kv: delta('kv-key-changed'), relayed: delta('relayed') }, { kv: 5, relayed: 3 });
      assert.ok(!text.includes('notification') && !text.includes('chat-message'), 'a client-chosen event type became a label');
    });

    describe('with METRICS_TOKEN set', () => {
      const SECRET = 'metrics-secret-7d2e';
      let saved: string | undefined;
      beforeEach(() => {
        saved = app.config.classworks.metricsToken;
        app.config.classworks.metricsToken = SECRET;
      });
      afterEach(() => {
        app.config.classworks.metricsToken = saved;
      });

      it('401 {"error":"Unauthorized",...} without a token, with a wrong one (Bearer or ?token=), or in another scheme', async () => {
        const attempts = [
          app.httpRequest().get('/metrics'),
          app.httpRequest().get('/metrics').set('Authorization', 'Bearer wrong'),
          app.httpRequest().get('/metrics').set('Authorization', `Bearer ${SECRET}x`),
          app.httpRequest().get('/metrics').set('Authorization', `Basic ${SECRET}`),
          app.httpRequest().get('/metrics?token=wrong'),
          app.httpRequest().get('/metrics?token='),
          app.httpRequest().get('/metrics').set('x-app-token', SECRET),
        ];
        for (const req of attempts) {
          const res = await req.expect(401);
          assert.deepStrictEqual(res.body, UNAUTHORIZED);
          assert.match(res.headers['content-type'], /^application\/json/);
        }
      });

      it('200 with Authorization: Bearer <token> or ?token=<token>, which never appears in the output', async () => {
        const viaHeader = await app.httpRequest().get('/metrics').set('Authorization', `Bearer ${SECRET}`).expect(200);
        assert.strictEqual(viaHeader.headers['content-type'], CONTENT_TYPE);
        assert.strictEqual(sample(parseMetrics(viaHeader.text), 'classworks_database_up'), 1);
        const viaQuery = await app.httpRequest().get(`/metrics?token=${SECRET}`).expect(200);
        assert.strictEqual(sample(parseMetrics(viaQuery.text), 'classworks_database_up'), 1);
        assert.ok(!viaQuery.text.includes(SECRET));
        // A wrong header does not spoil a right query token.
        await app.httpRequest().get(`/metrics?token=${SECRET}`).set('Authorization', 'Bearer nope').expect(200);
      });
    });
  });

  describe('[GET /ready] ready()', () => {
    it('200 {"status":"ready"} when the database (and Redis, when configured) answer', async () => {
      const res = await app.httpRequest().get('/ready').expect(200).expect('Content-Type', /application\/json/);
      assert.deepStrictEqual(res.body, { status: 'ready' });
    });

    it('200 for /ready and /metrics however often they are asked: not counted by the per-IP rate limit', async () => {
      overrideRateLimits({ ip: 1 });
      try {
        for (let i = 0; i < 3; i++) {
          const ready = await app.httpRequest().get('/ready').expect(200);
          assert.strictEqual(ready.headers.ratelimit, undefined);
          const metrics = await app.httpRequest().get('/metrics').expect(200);
          assert.strictEqual(metrics.headers.ratelimit, undefined);
        }
      } finally {
        restoreRateLimits();
      }
    });
  });
});
