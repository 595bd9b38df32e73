/**
 * Fault-suite support: a private MariaDB, a private Redis and a real egg cluster
 * (the built dist/, started like scripts/start.js does: egg-scripts start --sticky),
 * all children of this test process so the suite can stop and restart them without
 * disturbing anyone. Every process started here is killed when the process exits,
 * even when a test fails or mocha is interrupted.
 *
 * FAULT_DIST=<dir> runs another build than <repo>/dist (e.g. a private build on a
 * shared machine); FAULT_SEED=<n> replays a run of random inputs.
 */
import assert from 'node:assert';
import { spawn, spawnSync, ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import mysql from 'mysql2/promise';
import { ClientOptions, eventually as recheck, openClient, openJoined, TestClient } from '../support/socket';

export const ROOT = path.join(__dirname, '..', '..');
export const DIST = process.env.FAULT_DIST ? path.resolve(process.env.FAULT_DIST) : path.join(ROOT, 'dist');
const EGG_SCRIPTS = require.resolve('egg-scripts/bin/egg-scripts.js');

// ---------------------------------------------------------------- randomness

/** The seed of every random input of this run (printed, so a failure can be replayed with FAULT_SEED). */
export const SEED = process.env.FAULT_SEED ? Number(process.env.FAULT_SEED) : Math.floor(Math.random() * 2 ** 31);
console.log(`[fault] random seed ${SEED} (replay with FAULT_SEED=${SEED})`);

/* eslint-disable no-bitwise -- a PRNG is bit arithmetic */
/** Small deterministic PRNG (mulberry32). */
export class Rand {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /* eslint-enable no-bitwise */

  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }

  string(n: number, alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789-_.~'): string {
    let s = '';
    for (let i = 0; i < n; i++) s += alphabet[this.int(alphabet.length)];
    return s;
  }
}

// ---------------------------------------------------------------- small helpers

export const sleep = (ms: number) => new Promise<void>(resolve => setTimeout(resolve, ms));

/** eventually() of test/support/socket.ts, re-checking every 100 ms by default (most checks here are requests to the cluster). */
export function eventually<T>(check: () => Promise<T> | T, ms: number, interval = 100): Promise<T> {
  return recheck(check, ms, interval);
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

function which(names: string[]): string {
  const dirs = (process.env.PATH ?? '').split(':').concat([ '/usr/sbin', '/usr/local/sbin', '/usr/bin', '/usr/local/bin' ]);
  for (const name of names) {
    for (const d of dirs) {
      const p = path.join(d, name);
      try {
        fs.accessSync(p, fs.constants.X_OK);
        return p;
      } catch {
        // next
      }
    }
  }
  throw new Error(`none of ${names.join(', ')} found in PATH`);
}

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `ckv-fault-${prefix}-`));
}

function tail(file: string, lines = 30): string {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie is dead for our purposes.
  try {
    return !/^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------- process registry

/** Process groups (detached children) to kill if this process goes away. */
const groups = new Set<number>();
const dirs = new Set<string>();

function killGroup(pid: number, signal: NodeJS.Signals) {
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // gone
    }
  }
}

/** Clusters started here: their master may not be known yet (egg-scripts start still running). */
const clusters = new Set<{ findMaster(): number | undefined }>();

process.on('exit', () => {
  for (const c of clusters) {
    const master = c.findMaster();
    if (master) groups.add(master);
  }
  for (const pid of groups) killGroup(pid, 'SIGKILL');
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});
for (const sig of [ 'SIGINT', 'SIGTERM', 'SIGHUP' ] as const) {
  process.once(sig, () => process.exit(130));
}

async function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return true;
  return new Promise(resolve => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

async function stopChild(child: ChildProcess | undefined, signal: NodeJS.Signals = 'SIGTERM', graceMs = 20000) {
  if (!child?.pid) return;
  if (child.exitCode === null && child.signalCode === null) {
    killGroup(child.pid, signal);
    if (!await waitExit(child, graceMs)) {
      killGroup(child.pid, 'SIGKILL');
      await waitExit(child, 5000);
    }
  }
  groups.delete(child.pid);
}

// ---------------------------------------------------------------- MariaDB

/** A private MariaDB server on its own datadir and port (root, empty password). */
export class MariaDb {
  readonly dir = tmpDir('mariadb');
  readonly datadir = path.join(this.dir, 'data');
  port = 0;
  private child?: ChildProcess;
  private initialised = false;
  private frozen = false;

  constructor() {
    dirs.add(this.dir);
  }

  url(database: string) {
    return `mysql://root@127.0.0.1:${this.port}/${database}`;
  }

  get pid() {
    return this.child?.pid;
  }

  async start() {
    if (!this.initialised) {
      const install = which([ 'mariadb-install-db', 'mysql_install_db' ]);
      const r = spawnSync(install, [ '--no-defaults', `--datadir=${this.datadir}`, '--auth-root-authentication-method=normal',
        '--user=root', '--skip-test-db' ], { encoding: 'utf8' });
      assert.strictEqual(r.status, 0, `${install} failed: ${r.stderr || r.stdout}`);
      this.initialised = true;
      this.port = await freePort();
    }
    const log = path.join(this.dir, 'mariadb.log');
    const out = fs.openSync(log, 'a');
    this.child = spawn(which([ 'mariadbd', 'mysqld' ]), [
      '--no-defaults', `--datadir=${this.datadir}`, `--port=${this.port}`, `--socket=${path.join(this.dir, 'm.sock')}`,
      '--bind-address=127.0.0.1', '--user=root', `--pid-file=${path.join(this.dir, 'm.pid')}`, '--skip-log-bin',
      '--skip-name-resolve', '--innodb-buffer-pool-size=32M', '--max-connections=200',
    ], { detached: true, stdio: [ 'ignore', out, out ] });
    fs.closeSync(out);
    groups.add(this.child.pid!);
    await eventually(async () => {
      assert.ok(this.child?.exitCode === null, `mariadbd exited: ${tail(log)}`);
      const c = await mysql.createConnection({ host: '127.0.0.1', port: this.port, user: 'root', connectTimeout: 1000 });
      await c.end();
    }, 60000, 200);
  }

  /** Graceful stop (SIGTERM), SIGKILL if it does not stop within 20 s. */
  async stop() {
    this.thaw();
    await stopChild(this.child, 'SIGTERM');
    this.child = undefined;
  }

  /**
   * Freezes the server (SIGSTOP): its process no longer runs, but the kernel still
   * accepts connections and acknowledges what clients send, so nothing fails, nothing
   * answers: a stalled database as its clients see it.
   */
  freeze() {
    assert.ok(this.child?.pid && this.child.exitCode === null, 'mariadbd is not running');
    process.kill(this.child.pid, 'SIGSTOP');
    this.frozen = true;
  }

  /** Resumes a frozen server (SIGCONT); a no-op when it is not frozen. */
  thaw() {
    if (!this.frozen) return;
    this.frozen = false;
    if (this.child?.pid) process.kill(this.child.pid, 'SIGCONT');
  }

  async query<T = any>(sql: string, params: unknown[] = [], database?: string): Promise<T> {
    const c = await mysql.createConnection({ host: '127.0.0.1', port: this.port, user: 'root', database, connectTimeout: 3000 });
    try {
      const [ rows ] = await c.query(sql, params);
      return rows as T;
    } finally {
      await c.end();
    }
  }

  async createDatabase(name: string) {
    await this.query(`CREATE DATABASE IF NOT EXISTS \`${name}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`);
  }

  async destroy() {
    await this.stop();
    fs.rmSync(this.dir, { recursive: true, force: true });
    dirs.delete(this.dir);
  }
}

// ---------------------------------------------------------------- Redis

/** A private Redis without persistence: a restart loses everything, as in production without AOF/RDB. */
export class RedisServer {
  readonly dir = tmpDir('redis');
  port = 0;
  private child?: ChildProcess;

  constructor() {
    dirs.add(this.dir);
  }

  url(db = 0) {
    return `redis://127.0.0.1:${this.port}/${db}`;
  }

  get pid() {
    return this.child?.pid;
  }

  async start() {
    if (!this.port) this.port = await freePort();
    const log = path.join(this.dir, 'redis.log');
    this.child = spawn(which([ 'redis-server' ]), [
      '--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--dir', this.dir, '--logfile', log, '--daemonize', 'no',
    ], { detached: true, stdio: 'ignore' });
    groups.add(this.child.pid!);
    await eventually(async () => {
      assert.ok(this.child?.exitCode === null, `redis-server exited: ${tail(log)}`);
      assert.strictEqual(await this.command('PING'), '+PONG');
    }, 20000, 100);
  }

  /** Kills the server (SIGKILL: an outage, not a shutdown); its data is gone. */
  async stop() {
    await stopChild(this.child, 'SIGKILL');
    this.child = undefined;
  }

  /** One inline command; resolves with the first reply line. */
  command(cmd: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const s = net.connect(this.port, '127.0.0.1');
      let data = '';
      s.setTimeout(2000, () => s.destroy(new Error('redis command timed out')));
      s.on('connect', () => s.write(`${cmd}\r\n`));
      s.on('data', chunk => {
        data += chunk.toString('utf8');
        if (data.includes('\r\n')) {
          s.destroy();
          resolve(data.split('\r\n')[0]);
        }
      });
      s.on('error', reject);
    });
  }

  async destroy() {
    await this.stop();
    fs.rmSync(this.dir, { recursive: true, force: true });
    dirs.delete(this.dir);
  }
}

// ---------------------------------------------------------------- the cluster

let clusterSeq = 0;

export interface StartResult {
  code: number | null;
  output: string;
}

/**
 * The built server started like scripts/start.js does (egg-scripts start --sticky
 * --workers=N --title=<unique> --port=<free> dist), in daemon mode so that
 * `egg-scripts start` reports success or failure with its exit code. HOME points to
 * a private directory, so egg's logs of this cluster are its own.
 */
export class Cluster {
  readonly home = tmpDir('egg');
  readonly title: string;
  port = 0;
  private master?: number;

  constructor(private readonly env: Record<string, string>, readonly workers = 2) {
    clusterSeq += 1;
    this.title = `ckv-fault-${process.pid}-${clusterSeq}`;
    dirs.add(this.home);
    clusters.add(this);
  }

  url(p = '') {
    return `http://127.0.0.1:${this.port}${p}`;
  }

  private childEnv(): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const k of Object.keys(env)) {
      if (/^(DATABASE_URL|REDIS_URL|SQLITE_PATH|RATE_LIMIT_|PRESENCE_|TOKEN_CACHE_|BODY_LIMIT|BATCH_LIMIT|TRUST_PROXY|EGG_|NODE_ENV|WORKERS|APP_TITLE|PORT)/.test(k)) delete env[k];
    }
    return {
      ...env,
      HOME: this.home,
      // egg's own logs (prod: <EGG_HOME>/logs/<app>) stay with this cluster.
      EGG_HOME: this.home,
      NODE_LOG_DIR: path.join(this.home, 'alinode'),
      APP_KEYS: 'fault-suite-keys',
      JWT_SECRET: 'fault-suite-jwt-secret-0123456789abcdef',
      PORT: String(this.port),
      ...this.env,
    };
  }

  /** Runs `egg-scripts start --daemon`; resolves with its exit code and output (does not throw). */
  async tryStart(timeoutMs = 120000): Promise<StartResult> {
    if (!this.port) this.port = await freePort();
    const args = [ EGG_SCRIPTS, 'start', '--daemon', '--sticky', `--workers=${this.workers}`, `--port=${this.port}`,
      `--title=${this.title}`, `--timeout=${timeoutMs}`,
      `--stdout=${path.join(this.home, 'master-stdout.log')}`, `--stderr=${path.join(this.home, 'master-stderr.log')}`, DIST ];
    const child = spawn(process.execPath, args, { cwd: this.home, env: this.childEnv(), stdio: [ 'ignore', 'pipe', 'pipe' ] });
    let output = '';
    child.stdout!.on('data', d => { output += d; });
    child.stderr!.on('data', d => { output += d; });
    const code = await new Promise<number | null>(resolve => child.once('exit', c => resolve(c)));
    const master = this.findMaster();
    if (master) {
      this.master = master;
      groups.add(master);
    }
    return { code, output };
  }

  /** Starts the cluster and waits until it answers; throws with egg's output if it does not start. */
  async start() {
    const r = await this.tryStart();
    assert.strictEqual(r.code, 0, `cluster did not start:\n${r.output}\n${this.logs()}`);
    await eventually(async () => {
      const res = await request(this, 'GET', '/check', { timeoutMs: 2000 });
      assert.strictEqual(res.status, 200);
    }, 30000, 200);
  }

  /** egg's own logs of this cluster (master stdout/stderr, common-error), for failure messages. */
  logs(lines = 40): string {
    const files = [ 'master-stdout.log', 'master-stderr.log' ].map(f => path.join(this.home, f));
    const logDir = path.join(this.home, 'logs');
    try {
      for (const d of fs.readdirSync(logDir)) files.push(path.join(logDir, d, 'common-error.log'));
    } catch {
      // no logs yet
    }
    return files.map(f => `--- ${f}\n${tail(f, lines)}`).join('\n');
  }

  /** Lines of egg's error logs that match `re` (e.g. worker deaths). */
  grepLogs(re: RegExp): string[] {
    const out: string[] = [];
    const walk = (d: string) => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.name.endsWith('.log')) out.push(...fs.readFileSync(p, 'utf8').split('\n').filter(l => re.test(l)));
      }
    };
    walk(this.home);
    return out;
  }

  /** The master process of this cluster, found by its unique title. */
  findMaster(): number | undefined {
    for (const e of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(e)) continue;
      try {
        const cmd = fs.readFileSync(`/proc/${e}/cmdline`, 'utf8');
        if (cmd.includes(`--title=${this.title}\0`) || cmd.endsWith(`--title=${this.title}`)) {
          if (cmd.includes('start-cluster')) return Number(e);
        }
      } catch {
        // gone
      }
    }
    return undefined;
  }

  /** Every live process whose command line names this cluster's title (master, agent and workers carry it). */
  processes(): number[] {
    const out: number[] = [];
    for (const e of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
      try {
        if (fs.readFileSync(`/proc/${e}/cmdline`, 'utf8').includes(this.title) && isAlive(Number(e))) out.push(Number(e));
      } catch {
        // gone
      }
    }
    return out;
  }

  get masterPid(): number {
    assert.ok(this.master, 'cluster not started');
    return this.master;
  }

  private children(): Array<{ pid: number; cmd: string }> {
    const out: Array<{ pid: number; cmd: string }> = [];
    for (const e of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(e)) continue;
      try {
        const stat = fs.readFileSync(`/proc/${e}/stat`, 'utf8');
        const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
        if (ppid !== this.master) continue;
        if (!isAlive(Number(e))) continue;
        out.push({ pid: Number(e), cmd: fs.readFileSync(`/proc/${e}/cmdline`, 'utf8') });
      } catch {
        // gone
      }
    }
    return out;
  }

  /** Live app worker pids, ascending. */
  workerPids(): number[] {
    return this.children().filter(c => c.cmd.includes('app_worker')).map(c => c.pid).sort((a, b) => a - b);
  }

  agentPid(): number | undefined {
    return this.children().find(c => c.cmd.includes('agent_worker'))?.pid;
  }

  /**
   * The worker pid that holds the connection a client bound to `localAddress` gets
   * (egg's sticky master hashes the source address): found through /proc/net/tcp*.
   */
  async workerFor(localAddress: string): Promise<number> {
    const s = net.connect({ host: '127.0.0.1', port: this.port, localAddress });
    await new Promise<void>((resolve, reject) => {
      s.once('connect', () => resolve());
      s.once('error', reject);
    });
    try {
      const want = `${ipHex(localAddress)}:${s.localPort!.toString(16).toUpperCase().padStart(4, '0')}`;
      return await eventually(() => {
        const inodes = new Set<string>();
        for (const f of [ '/proc/net/tcp', '/proc/net/tcp6' ]) {
          for (const line of fs.readFileSync(f, 'utf8').split('\n').slice(1)) {
            const cols = line.trim().split(/\s+/);
            // server side: remote address is the client's
            if (cols.length > 9 && cols[2].endsWith(want) && !cols[1].endsWith(want)) inodes.add(cols[9]);
          }
        }
        for (const pid of this.workerPids()) {
          for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
            try {
              const link = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
              const m = /^socket:\[(\d+)\]$/.exec(link);
              if (m && inodes.has(m[1])) return pid;
            } catch {
              // closed meanwhile
            }
          }
        }
        throw new Error(`no worker holds the connection from ${localAddress}`);
      }, 10000, 50);
    } finally {
      s.destroy();
    }
  }

  /** Resident set size of a process in kB (VmRSS). */
  static rssKb(pid: number): number {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  }

  /** Stops the whole cluster (SIGTERM to the master like egg-scripts stop; SIGKILL after 20 s). */
  async stop() {
    const master = this.master ?? this.findMaster();
    if (!master) return;
    const pids = [ master, ...this.children().map(c => c.pid) ];
    try {
      process.kill(master, 'SIGTERM');
    } catch {
      // gone
    }
    const deadline = Date.now() + 20000;
    while (pids.some(isAlive) && Date.now() < deadline) await sleep(100);
    for (const pid of pids) {
      if (isAlive(pid)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    }
    killGroup(master, 'SIGKILL');
    groups.delete(master);
    this.master = undefined;
  }

  async destroy() {
    await this.stop();
    fs.rmSync(this.home, { recursive: true, force: true });
    dirs.delete(this.home);
    clusters.delete(this);
  }
}

function ipHex(ip: string): string {
  // /proc/net/tcp prints IPv4 as one little-endian 32-bit word (also inside ::ffff:a.b.c.d in tcp6).
  return ip.split('.').map(n => Number(n).toString(16).toUpperCase().padStart(2, '0')).reverse().join('');
}

// ---------------------------------------------------------------- HTTP

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  /** The parsed body, or undefined when it is not JSON. */
  json: any;
}

export interface RequestOptions {
  headers?: Record<string, string>;
  body?: unknown;
  /** Source address (egg's sticky master picks the worker from it). */
  localAddress?: string;
  timeoutMs?: number;
  /** A keep-alive agent (see pinnedAgent) instead of a fresh connection. */
  agent?: http.Agent;
}

/**
 * A keep-alive agent with one connection: once its first request is answered, every
 * request goes over that connection, so to the same worker whatever the sticky
 * master does meanwhile (poll at least every few seconds, or the server closes it).
 */
export function pinnedAgent(localAddress?: string): http.Agent {
  return new http.Agent({ keepAlive: true, maxSockets: 1, localAddress } as http.AgentOptions);
}

/** One HTTP request on a fresh connection (no keep-alive: the sticky master routes every connection). */
export function request(target: Cluster | string, method: string, p: string, opts: RequestOptions = {}): Promise<Reply> {
  const base = typeof target === 'string' ? target : target.url();
  const u = new URL(base);
  let body: Buffer | undefined;
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.body !== undefined) {
    if (Buffer.isBuffer(opts.body)) body = opts.body;
    else if (typeof opts.body === 'string') body = Buffer.from(opts.body);
    else {
      body = Buffer.from(JSON.stringify(opts.body));
      headers['content-type'] ??= 'application/json';
    }
    headers['content-length'] = String(body.length);
  }
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: u.hostname, port: u.port, method, path: p, headers, agent: opts.agent ?? false,
      localAddress: opts.agent ? undefined : opts.localAddress, timeout: opts.timeoutMs ?? 15000,
    }, res => {
      const chunks: Buffer[] = [];
      res.on('data', c => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = text ? JSON.parse(text) : undefined;
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${p}: no answer within ${opts.timeoutMs ?? 15000} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** The answer of every request that needs the database while it is away. */
export const DB_DOWN = { success: false, message: '数据库服务不可用，请稍后重试', details: { service: 'database' }, code: 'SERVICE_UNAVAILABLE' };

/** A request that needs the database; `body(n)` gets the request's sequence number. */
export interface DatabaseProbe {
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: (n: number) => unknown;
}

/**
 * While the database is away: once a second for `ms`, sends every probe through each
 * source address (each worker), plus a `GET /check` that needs no database. Waits for
 * every answer; resolves with the number of probes sent and what went wrong (a probe
 * not answered 503 DB_DOWN within `clientTimeoutMs`, a `/check` not 200): [] when nothing did.
 */
export async function probeWhileDatabaseAway(c: Cluster, probes: DatabaseProbe[], opts: { ms: number; via: string[]; clientTimeoutMs: number }) {
  const started = Date.now();
  const answers: Array<Promise<string>> = [];
  let sent = 0;
  while (Date.now() - started < opts.ms) {
    for (const localAddress of opts.via) {
      for (const p of probes) {
        sent += 1;
        answers.push(request(c, p.method, p.path, { headers: p.headers, body: p.body?.(sent), localAddress, timeoutMs: opts.clientTimeoutMs })
          .then(res => {
            assert.deepStrictEqual({ status: res.status, body: res.json }, { status: 503, body: DB_DOWN }, `${p.method} ${p.path}: ${res.text}`);
            return 'ok';
          }, err => `${p.method} ${p.path} via ${localAddress}: ${(err as Error).message}`)
          .catch(err => (err as Error).message));
      }
      answers.push(request(c, 'GET', '/check', { localAddress, timeoutMs: opts.clientTimeoutMs })
        .then(res => (res.status === 200 ? 'ok' : `/check ${res.status}`), err => `/check: ${(err as Error).message}`));
    }
    await sleep(1000);
  }
  const failures = (await Promise.all(answers)).filter(r => r !== 'ok');
  return { sent, failures };
}

/** Registers a device and installs one app; returns its token. */
export async function deviceWithToken(c: Cluster, uuid: string, opts: { localAddress?: string; password?: string } = {}) {
  const created = await request(c, 'POST', '/devices', { body: { uuid, deviceName: `Device ${uuid}` }, localAddress: opts.localAddress });
  assert.strictEqual(created.status, 201, created.text);
  if (opts.password) {
    const set = await request(c, 'POST', `/devices/${encodeURIComponent(uuid)}/password`, { body: { newPassword: opts.password }, localAddress: opts.localAddress });
    assert.strictEqual(set.status, 200, set.text);
  }
  return { uuid, id: created.json.device.id as number, ...await installToken(c, uuid, opts) };
}

export async function installToken(c: Cluster, uuid: string, opts: { localAddress?: string; password?: string; appId?: string } = {}) {
  const res = await request(c, 'POST', `/apps/devices/${encodeURIComponent(uuid)}/install/${opts.appId ?? 'fault-app'}`, {
    body: {}, localAddress: opts.localAddress, headers: opts.password ? { 'x-device-password': opts.password } : {},
  });
  assert.strictEqual(res.status, 201, res.text);
  return { token: res.json.token as string, installId: res.json.id as string };
}

/** GET /devices/online as a map uuid → connections. */
export async function online(c: Cluster, via: { localAddress?: string; agent?: http.Agent } = {}): Promise<Record<string, number>> {
  const res = await request(c, 'GET', '/devices/online', { ...via, timeoutMs: 5000 });
  assert.strictEqual(res.status, 200, res.text);
  return Object.fromEntries((res.json.devices as Array<{ uuid: string; connections: number }>).map(d => [ d.uuid, d.connections ]));
}

// ---------------------------------------------------------------- Socket.IO

/**
 * How this suite's Socket.IO clients (test/support/socket.ts) behave unless a test
 * says otherwise: they reconnect, and a connection the sticky master cannot hand to a
 * worker hangs, so they give up on it quickly and retry.
 */
const SOCKET_DEFAULTS: ClientOptions = { reconnection: true, connectTimeoutMs: 3000, waitMs: 10000 };

/** The common environment of a fault cluster on the private services. */
export function clusterEnv(db: MariaDb, redis: RedisServer, database: string, extra: Record<string, string> = {}) {
  return {
    DATABASE_URL: db.url(database),
    REDIS_URL: redis.url(0),
    REDIS_PREFIX: 'fault:',
    ...extra,
  };
}

/**
 * A private MariaDB (with `database` created), a private Redis and a cluster on
 * them. Construct it, `start()` it in a before hook and `stop()` it in an after hook:
 * stop() cleans up whatever part was started, also after a failed start.
 */
export class World {
  readonly db = new MariaDb();
  readonly redis = new RedisServer();
  cluster!: Cluster;
  readonly sockets: TestClient[] = [];

  constructor(readonly database: string, private readonly extra: Record<string, string> = {}, private readonly workers = 2) {}

  async start() {
    await Promise.all([ this.db.start(), this.redis.start() ]);
    await this.db.createDatabase(this.database);
    this.cluster = new Cluster(clusterEnv(this.db, this.redis, this.database, this.extra), this.workers);
    await this.cluster.start();
  }

  /** A socket (not waited for) closed automatically by stop(). */
  socket(opts: ClientOptions) {
    const s = openClient(this.cluster.url(), { ...SOCKET_DEFAULTS, ...opts });
    this.sockets.push(s);
    return s;
  }

  /** A socket that has joined with its handshake token, closed automatically by stop(). */
  async joined(opts: ClientOptions & { token: string }, ms = 15000) {
    const s = await openJoined(this.cluster.url(), { ...SOCKET_DEFAULTS, ...opts }, ms);
    this.sockets.push(s);
    return s;
  }

  async stop() {
    for (const s of this.sockets) s.close();
    await this.cluster?.destroy();
    await Promise.all([ this.redis.destroy(), this.db.destroy() ]);
  }
}
