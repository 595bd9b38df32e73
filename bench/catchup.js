'use strict';

/**
 * Catch-up benchmark (CONTRACT.md §7): a device with 1,000 changes in its log; 100
 * socket.io-client 4 sockets (websocket) join it at once with `since=0` (handshake query),
 * 50 per worker. Per socket: time from the connection attempt to `joined`, and to the last of
 * the 1,000 `kv-key-changed` (every revision checked: in order, no gap, none twice). Reported:
 * the time until every socket had all 1,000 (wall clock), p50/p99/max per socket, and the
 * workers' and MariaDB's CPU seconds.
 *
 *   npm run build && node bench/catchup.js            # 3 runs
 *   BENCH_CATCHUP_SOCKETS=100 BENCH_CATCHUP_CHANGES=1000 BENCH_CATCHUP_RUNS=3 node bench/catchup.js
 *
 * Like bench/run.js it drops and recreates BENCH_MYSQL_DB (default classworks_bench) and flushes
 * Redis db BENCH_REDIS_DB (default 10). Client sockets live in 2 child processes.
 */
const path = require('path');
const os = require('os');
const { fork } = require('child_process');
const { sleep, summarize, wallNow } = require('./lib/common');
const { root, freePort, resetWorld, benchEnv, startServer, stopServer, clusterPids, cpuSeconds, servicePids } = require('./lib/server');
const { createDeviceWithToken, batchImport, sampleValue } = require('./lib/seed');

if (process.argv[2] === 'client') {
  const { io } = require('socket.io-client');
  process.on('message', async msg => {
    if (msg.cmd !== 'go') return;
    const results = await Promise.all(msg.addresses.map(localAddress => new Promise(resolve => {
      const start = wallNow();
      let joinedAt = null;
      let next = 1;
      let bad = 0;
      const socket = io(msg.url, {
        transports: [ 'websocket' ], query: { token: msg.token, since: '0' }, reconnection: false, forceNew: true, timeout: 60000, localAddress,
      });
      const finish = error => {
        socket.disconnect();
        resolve({ start, joined: joinedAt === null ? null : joinedAt - start, done: wallNow() - start, received: next - 1, bad, error });
      };
      socket.on('joined', () => {
        joinedAt = wallNow();
      });
      socket.on('kv-key-changed', p => {
        if (p.revision !== next) bad++;
        next = p.revision + 1;
        if (p.revision === msg.changes) finish(null);
      });
      socket.on('connect_error', err => finish(`connect_error ${err.message}`));
      setTimeout(() => finish('timeout'), 120000);
    })));
    process.send({ results });
    setTimeout(() => process.exit(0), 100);
  });
  return;
}

const env = process.env;
const SOCKETS = Number(env.BENCH_CATCHUP_SOCKETS || 100);
const CHANGES = Number(env.BENCH_CATCHUP_CHANGES || 1000);
const RUNS = Number(env.BENCH_CATCHUP_RUNS || 3);
const mysqlDb = env.BENCH_MYSQL_DB || 'classworks_bench';
const redisDb = Number(env.BENCH_REDIS_DB || 10);
const prefix = env.BENCH_REDIS_PREFIX || 'ckvbench:';
const dist = env.BENCH_DIST || path.join(root, 'dist');

async function main() {
  resetWorld({ mysqlDb, redisDb });
  const port = await freePort();
  const title = `ckvbench-catchup-${port}-${process.pid}`;
  const logDir = path.join(os.tmpdir(), `ckvbench-${process.pid}`);
  const base = await startServer({
    dist, port, title, logDir,
    env: benchEnv({ mysqlDb, redisDb, prefix }, { RATE_LIMIT_KV_BATCH: '0', CHANGES_RETENTION: String(Math.max(1000, CHANGES)) }),
  });
  const out = [];
  try {
    const token = await createDeviceWithToken(base, `catchup-${process.pid}`);
    for (let done = 0; done < CHANGES;) {
      const n = Math.min(1000, CHANGES - done);
      const entries = {};
      for (let i = 0; i < n; i++) entries[`key-${done + i}`] = sampleValue(done + i);
      await batchImport(base, token, entries);
      done += n;
    }
    const { workers } = clusterPids(title);
    const { mysql } = servicePids();
    for (let run = 1; run <= RUNS; run++) {
      // Even addresses → one worker, odd → the other (bench/README.md).
      const addresses = Array.from({ length: SOCKETS }, (_, i) => `127.0.0.${2 + (i % 8)}`);
      const halves = [ addresses.filter((_, i) => i % 2 === 0), addresses.filter((_, i) => i % 2 === 1) ];
      const children = halves.map(() => fork(__filename, [ 'client' ], { cwd: root }));
      await sleep(500); // let the client processes load socket.io-client
      const cpu0 = [ ...workers.map(cpuSeconds), cpuSeconds(mysql) ];
      const t0 = wallNow();
      const replies = await Promise.all(children.map((child, i) => new Promise(resolve => {
        child.once('message', m => resolve(m.results));
        child.send({ cmd: 'go', url: base, token, changes: CHANGES, addresses: halves[i] });
      })));
      const results = replies.flat();
      const wall = Math.max(...results.map(r => r.start + r.done)) - t0;
      const cpu1 = [ ...workers.map(cpuSeconds), cpuSeconds(mysql) ];
      const complete = results.filter(r => !r.error && r.received === CHANGES && r.bad === 0).length;
      const done = summarize(results.filter(r => !r.error).map(r => r.done));
      const joined = summarize(results.filter(r => r.joined !== null).map(r => r.joined));
      const afterJoined = summarize(results.filter(r => !r.error && r.joined !== null).map(r => r.done - r.joined));
      const row = {
        run, sockets: SOCKETS, changes: CHANGES, complete, wallMs: Math.round(wall),
        perSocketMs: { p50: done.p50, p99: done.p99, max: done.max }, joinedMs: { p50: joined.p50, p99: joined.p99 },
        catchUpAfterJoinedMs: { p50: afterJoined.p50, p99: afterJoined.p99, max: afterJoined.max },
        cpuSeconds: { workers: cpu1.slice(0, -1).map((c, i) => +(c - cpu0[i]).toFixed(2)), mysql: +(cpu1[cpu1.length - 1] - cpu0[cpu0.length - 1]).toFixed(2) },
        errors: results.filter(r => r.error).map(r => r.error).slice(0, 5),
      };
      out.push(row);
      console.log(JSON.stringify(row));
      await sleep(1000);
    }
  } finally {
    await stopServer(title);
  }
  return out;
}

main().then(() => process.exit(0), err => {
  console.error(err);
  process.exit(1);
});
