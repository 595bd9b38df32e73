/**
 * Helpers for the real multi-process tests: an `egg-scripts start --sticky` cluster
 * on the compiled dist/ (run `npm run build` first), HTTP requests bound to a chosen
 * loopback source address (the egg master picks the worker from it), event waiting,
 * and the world reset (MySQL tables, own Redis keys). Socket.IO clients come from
 * test/support/socket.ts (`joinedClient` below gives them this suite's waits).
 *
 * These tests do not use egg-mock: every process they start is stopped in after hooks.
 */
import assert from 'node:assert';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import crypto from 'node:crypto';
import { spawn, spawnSync, ChildProcess } from 'node:child_process';
import IORedis from 'ioredis';
import mysql from 'mysql2/promise';
import { ClientOptions, closeAllClients, openJoined, TestClient } from '../support/socket';

export const ROOT = path.join(__dirname, '..', '..');
const EGG_SCRIPTS = require.resolve('egg-scripts/bin/egg-scripts.js');

export const DATABASE_URL = process.env.DATABASE_URL || 'mysql://root@127.0.0.1:3306/classworks_test_d';
export const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379/14';

/** Source addresses the egg master hashes to worker 0 and worker 1 of a 2-worker cluster. */
export const ADDR_W0 = '127.0.0.2';
export const ADDR_W1 = '127.0.0.3';

/** How long a helper waits for something that must happen before it fails the test. */
export const WAIT_MS = 15000;

export function sleep(ms: number) {
  return new Promise(resolve => setTimeout(resolve, ms));
}

/** A TCP port nobody listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Polls `check` until it returns a truthy value; fails with `what` after `timeoutMs`. */
export async function eventually<T>(what: string, check: () => Promise<T | undefined | null | false>, timeoutMs = WAIT_MS, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}${lastErr ? ` (last error: ${(lastErr as Error).message})` : ''}`);
    }
    await sleep(everyMs);
  }
}

// ---------------------------------------------------------------- cluster

export interface Cluster {
  port: number;
  title: string;
  prefix: string;
  url: string;
  /** Everything the master (and its workers) printed; shown when a test fails. */
  output(): string;
  /** pid of the egg master process. */
  masterPid(): number;
  /** pids of the app workers, from `ps`, by the cluster's title. */
  workerPids(): number[];
  stop(): Promise<void>;
}

/** Processes (`ps`) whose command line contains the cluster title and `needle`. */
function pidsByTitle(title: string, needle: string): number[] {
  const r = spawnSync('ps', [ '-eo', 'pid=,args=' ], { encoding: 'utf8' });
  return r.stdout.split('\n')
    .map(l => l.trim())
    .filter(l => l.includes(`"title":"${title}"`) && l.includes(needle))
    .map(l => Number(l.split(/\s+/)[0]));
}

/**
 * Starts `egg-scripts start --sticky --workers=N --port --title` on dist/ in the
 * foreground (a child of this process) and resolves once the master reports
 * `egg started`. Environment: MySQL + Redis from DATABASE_URL / REDIS_URL, a
 * unique REDIS_PREFIX, fast presence sweeping, plus `env`.
 */
export async function startCluster(opts: { workers?: number; env?: Record<string, string>; port?: number } = {}): Promise<Cluster> {
  assert(fs.existsSync(path.join(ROOT, 'dist', 'app.js')), 'dist/ is missing: run `npm run build` before the cluster tests');
  const workers = opts.workers ?? 2;
  const port = opts.port ?? await freePort();
  const id = `${process.pid}-${crypto.randomBytes(3).toString('hex')}`;
  const title = `ckv-cluster-test-${id}`;
  const prefix = `ckvtest:${id}:`;
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    DATABASE_URL,
    REDIS_URL,
    REDIS_PREFIX: prefix,
    PRESENCE_HEARTBEAT_MS: '500',
    PRESENCE_TTL_MS: '1500',
    RATE_LIMIT_IP: '0',
    // Production (egg-scripts) with MySQL refuses to start without a signing secret (§8).
    JWT_SECRET: 'cluster-suite-jwt-secret-0123456789abcdef',
    WORKERS: String(workers),
    PORT: String(port),
  };
  delete env.EGG_SERVER_ENV;
  delete env.SQLITE_PATH;
  // After the deletes: a suite may run its cluster as EGG_SERVER_ENV=unittest (fault switches, config/env.ts).
  Object.assign(env, opts.env);
  const child: ChildProcess = spawn(process.execPath, [
    EGG_SCRIPTS, 'start', '--sticky', `--workers=${workers}`, `--port=${port}`, `--title=${title}`,
    path.join(ROOT, 'dist'),
  ], { cwd: ROOT, env, stdio: [ 'ignore', 'pipe', 'pipe' ] });
  let out = '';
  let started = false;
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    if (out.length > 4e6) out = out.slice(-2e6);
  });
  child.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
  let exited = false;
  child.on('exit', () => { exited = true; });

  let stopped = false;
  const cluster: Cluster = {
    port,
    title,
    prefix,
    url: `http://127.0.0.1:${port}`,
    output: () => out,
    masterPid: () => {
      const pids = pidsByTitle(title, 'start-cluster');
      assert(pids.length === 1, `expected one master for ${title}, found ${pids.length}`);
      return pids[0];
    },
    workerPids: () => pidsByTitle(title, 'egg-cluster/lib/app_worker.js'),
    stop: async () => {
      if (stopped) return;
      stopped = true;
      // With --title, egg-scripts stop only stops this cluster (never run it without).
      spawnSync(process.execPath, [ EGG_SCRIPTS, 'stop', `--title=${title}` ], { cwd: ROOT, stdio: 'ignore', timeout: 30000 });
      if (!exited) child.kill('SIGKILL');
      for (const pid of [ ...pidsByTitle(title, 'egg-cluster/lib/'), ...pidsByTitle(title, 'start-cluster') ]) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      await deleteOwnKeys(prefix);
    },
  };
  try {
    await eventually('the cluster to report "egg started"', async () => {
      if (exited) throw new Error('egg-scripts exited during start-up');
      started = /egg started on /.test(out);
      return started;
    }, 60000, 100);
  } catch (err) {
    await cluster.stop();
    throw new Error(`${(err as Error).message}\n--- cluster output ---\n${out.slice(-8000)}`);
  }
  return cluster;
}

// ---------------------------------------------------------------- world reset

/** Empties the tables of the test database (the cluster's agent created them). */
export async function truncateTables() {
  const conn = await mysql.createConnection(DATABASE_URL);
  try {
    await conn.query('SET FOREIGN_KEY_CHECKS = 0');
    // Every table: with foreign key checks off, child rows would outlive their device and show
    // up under the next device given the same id (its history, its configs).
    for (const t of [ 'device_log', 'auto_auth_configs', 'kv_entries', 'app_installs', 'devices', 'accounts' ]) await conn.query(`TRUNCATE TABLE ${t}`);
    await conn.query('SET FOREIGN_KEY_CHECKS = 1');
  } finally {
    await conn.end();
  }
}

let redisClient: IORedis | undefined;
export function redis(): IORedis {
  if (!redisClient) redisClient = new IORedis(REDIS_URL, { maxRetriesPerRequest: 2 });
  return redisClient;
}

/** Deletes every Redis key under `prefix` (the cluster's own REDIS_PREFIX), nothing else. */
export async function deleteOwnKeys(prefix: string) {
  const r = redis();
  let cursor = '0';
  do {
    const [ next, keys ] = await r.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
    cursor = next;
    if (keys.length) await r.del(...keys);
  } while (cursor !== '0');
}

/** Deletes the cluster's rate-limit counters (so one test's requests do not count in another). */
export async function resetRateLimits(prefix: string) {
  const r = redis();
  let cursor = '0';
  do {
    const [ next, keys ] = await r.scan(cursor, 'MATCH', `${prefix}rl:*`, 'COUNT', 500);
    cursor = next;
    if (keys.length) await r.del(...keys);
  } while (cursor !== '0');
}

export async function closeRedis() {
  const r = redisClient;
  redisClient = undefined;
  if (r) await r.quit().catch(() => r.disconnect());
}

/** socketId -> instanceId (`hostname:pid:random`) of a device room, read from the presence hash. */
export async function presence(prefix: string, uuid: string): Promise<Record<string, string>> {
  return redis().hgetall(`${prefix}presence:dev:${uuid}`);
}

/** The pid inside an instance id `hostname:pid:random`. */
export function pidOfInstance(instanceId: string): number {
  const parts = instanceId.split(':');
  return Number(parts[parts.length - 2]);
}

// ---------------------------------------------------------------- HTTP

export interface Res {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  body: any;
}

/**
 * One HTTP request on a fresh TCP connection from `localAddress` (default
 * 127.0.0.1), so the sticky master routes it by that address.
 */
export function request(baseUrl: string, method: string, urlPath: string, opts: { body?: unknown; headers?: Record<string, string>; localAddress?: string } = {}): Promise<Res> {
  const u = new URL(urlPath, baseUrl);
  const payload = opts.body === undefined ? undefined : Buffer.from(JSON.stringify(opts.body));
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: u.hostname,
      port: u.port,
      path: u.pathname + u.search,
      method,
      agent: false,
      localAddress: opts.localAddress ?? '127.0.0.1',
      headers: {
        ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}),
        ...opts.headers,
      },
      timeout: WAIT_MS,
    }, res => {
      const chunks: Buffer[] = [];
      res.on('data', c => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown = text;
        try {
          body = text ? JSON.parse(text) : undefined;
        } catch {
          // not JSON
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${urlPath}: no answer within ${WAIT_MS} ms`)));
    req.on('error', reject);
    if (payload) req.write(payload);
    req.end();
  });
}

let deviceSeq = 0;

/** Registers a device and installs one app through the API; returns uuid, token and install id. */
export async function deviceWithToken(baseUrl: string, localAddress?: string) {
  deviceSeq += 1;
  const uuid = `cluster-${process.pid}-${Date.now().toString(36)}-${deviceSeq}`;
  const dev = await request(baseUrl, 'POST', '/devices', { body: { uuid, deviceName: `Cluster device ${deviceSeq}` }, localAddress });
  assert.strictEqual(dev.status, 201, `POST /devices: ${dev.status} ${dev.text}`);
  const inst = await request(baseUrl, 'POST', `/apps/devices/${encodeURIComponent(uuid)}/install/cluster-test`, { body: {}, localAddress });
  assert.strictEqual(inst.status, 201, `install: ${inst.status} ${inst.text}`);
  return { uuid, name: `Cluster device ${deviceSeq}`, token: inst.body.token as string, installId: inst.body.id as string };
}

// ---------------------------------------------------------------- Socket.IO clients

/**
 * A client (test/support/socket.ts) bound to `localAddress` that has joined with its
 * handshake token; it waits up to WAIT_MS for events and acks.
 */
export function joinedClient(url: string, opts: ClientOptions & { token: string; localAddress: string }): Promise<TestClient> {
  return openJoined(url, { waitMs: WAIT_MS, ...opts });
}

/**
 * The hooks of a suite on one 2-worker cluster: started once with `env`, clean tables and
 * rate limits before each test, clients closed (and the cluster's output printed when a test
 * failed) after each, everything stopped at the end. `use` receives the cluster once it runs;
 * `afterEachTest` runs after each test's own clean-up.
 */
export function useCluster(env: Record<string, string>, use: (cluster: Cluster) => void, afterEachTest?: (cluster: Cluster) => Promise<void>) {
  let cluster: Cluster | undefined;
  before(async () => {
    cluster = await startCluster({ workers: 2, env });
    use(cluster);
  });
  beforeEach(async () => {
    await truncateTables();
    await resetRateLimits(cluster!.prefix);
  });
  afterEach(async function() {
    closeAllClients();
    if (this.currentTest?.state === 'failed' && cluster) {
      console.error(`--- cluster output (tail) ---\n${cluster.output().slice(-6000)}`);
    }
    if (cluster && afterEachTest) await afterEachTest(cluster);
  });
  after(async () => {
    closeAllClients();
    await cluster?.stop();
    await closeRedis();
  });
}
