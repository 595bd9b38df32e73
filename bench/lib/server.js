'use strict';

/**
 * Starts and stops the server under test the way `npm start` does
 * (scripts/start.js: egg-scripts start --sticky --workers=N --port --title <dist>),
 * in daemon mode so that this process can measure it, and reads the workers'
 * resource usage from /proc.
 */
const fs = require('fs');
const net = require('net');
const path = require('path');
const { execFileSync } = require('child_process');
const { request, sleep } = require('./common');

const root = path.join(__dirname, '..', '..');
const eggScripts = require.resolve('egg-scripts/bin/egg-scripts.js', { paths: [ root ] });

/** A TCP port nobody listens on right now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '0.0.0.0', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Drops and recreates the bench database; flushes the bench Redis db. */
function resetWorld({ mysqlDb, redisDb }) {
  execFileSync('mysql', [ '-uroot', '-e',
    `DROP DATABASE IF EXISTS \`${mysqlDb}\`; CREATE DATABASE \`${mysqlDb}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci` ]);
  execFileSync('redis-cli', [ '-n', String(redisDb), 'FLUSHDB' ]);
}

/**
 * The environment every benchmark starts the server with: MySQL database `mysqlDb`, Redis
 * db `redisDb` (under `prefix`), no proxy, and the per-IP and per-token KV limits off (they
 * would answer 429 under any load test); the production settings an operator must give
 * (APP_KEYS, JWT_SECRET with DATABASE_URL). `extra` adds or overrides variables.
 */
function benchEnv({ mysqlDb, redisDb, prefix = process.env.BENCH_REDIS_PREFIX || 'ckvbench:' }, extra = {}) {
  return {
    DATABASE_URL: `mysql://root@127.0.0.1:3306/${mysqlDb}`,
    REDIS_URL: `redis://127.0.0.1:6379/${redisDb}`,
    REDIS_PREFIX: prefix,
    TRUST_PROXY: 'false',
    RATE_LIMIT_IP: '0',
    RATE_LIMIT_KV_READ: '0',
    RATE_LIMIT_KV_WRITE: '0',
    APP_KEYS: 'ckv-bench-keys',
    JWT_SECRET: 'ckv-bench-jwt-secret-0123456789abcdef',
    ...extra,
  };
}

/**
 * Starts the cluster and resolves once egg reports ready. `env` is added to this
 * process's environment (DATABASE_URL, REDIS_URL, rate limits, ...).
 */
async function startServer({ dist, port, title, workers = 2, env = {}, logDir, nodeOptions }) {
  fs.mkdirSync(logDir, { recursive: true });
  const args = [
    eggScripts, 'start', '--daemon',
    '--sticky', `--workers=${workers}`, `--port=${port}`, `--title=${title}`,
    `--stdout=${path.join(logDir, 'master-stdout.log')}`,
    `--stderr=${path.join(logDir, 'master-stderr.log')}`,
    '--ignore-stderr',
    ...(nodeOptions ? [ `--node-options=${nodeOptions}` ] : []),
    dist,
  ];
  execFileSync(process.execPath, args, {
    cwd: root,
    env: { ...process.env, PORT: String(port), EGG_HOME: logDir, ...env },
    stdio: [ 'ignore', 'pipe', 'pipe' ],
    timeout: 180000,
  });
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    try {
      const r = await request(base, 'GET', '/check', { agent: false });
      if (r.status === 200) return base;
    } catch {
      // not yet
    }
    await sleep(100);
  }
  throw new Error(`server on port ${port} did not answer /check`);
}

/** Processes as { pid, ppid, args }. */
function processes() {
  const out = execFileSync('ps', [ '-eo', 'pid=,ppid=,args=' ], { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 });
  return out.split('\n').filter(Boolean).map(line => {
    const m = line.trim().match(/^(\d+)\s+(\d+)\s+(.*)$/);
    return m ? { pid: Number(m[1]), ppid: Number(m[2]), args: m[3] } : null;
  }).filter(Boolean);
}

/** Master, agent and app-worker pids of the cluster started with `title`. */
function clusterPids(title) {
  const ps = processes();
  const master = ps.find(p => p.args.includes(`--title=${title}`) && p.args.includes('start-cluster'));
  if (!master) return { master: null, agent: null, workers: [] };
  const children = ps.filter(p => p.ppid === master.pid);
  return {
    master: master.pid,
    agent: (children.find(p => /agent_worker/.test(p.args)) || {}).pid || null,
    workers: children.filter(p => /app_worker/.test(p.args)).map(p => p.pid).sort((a, b) => a - b),
  };
}

async function stopServer(title, timeoutMs = 30000) {
  const { master, workers, agent } = clusterPids(title);
  if (!master) return;
  try {
    execFileSync(process.execPath, [ eggScripts, 'stop', `--title=${title}` ], { cwd: root, stdio: 'ignore', timeout: timeoutMs });
  } catch {
    // fall through to the pid check below
  }
  const alive = pid => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  const deadline = Date.now() + timeoutMs;
  const all = [ master, agent, ...workers ].filter(Boolean);
  while (all.some(alive) && Date.now() < deadline) await sleep(200);
  for (const pid of all) if (alive(pid)) process.kill(pid, 'SIGKILL');
}

/** VmRSS of a process in KiB (null if gone). */
function rssKb(pid) {
  try {
    const m = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+)\s+kB/m);
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

const CLK_TCK = 100;
/** user + system CPU seconds a process has used so far. */
function cpuSeconds(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return null;
  }
}

/** pids of the MariaDB/MySQL and Redis servers on this machine (for CPU accounting). */
function servicePids() {
  const find = names => {
    for (const name of names) {
      try {
        const out = execFileSync('pgrep', [ '-x', name ], { encoding: 'utf8' }).trim();
        if (out) return Number(out.split('\n')[0]);
      } catch {
        // not running under that name
      }
    }
    return null;
  };
  return { mysql: find([ 'mariadbd', 'mysqld' ]), redis: find([ 'redis-server' ]) };
}

module.exports = { root, servicePids, freePort, resetWorld, benchEnv, startServer, stopServer, clusterPids, rssKb, cpuSeconds };
