#!/usr/bin/env node
'use strict';

/**
 * Relay latency of `send-event` (CONTRACT.md §6.4) within a worker and across workers:
 *
 *   node bench/relay.js            (BENCH_RELAY_RECEIVERS=200, BENCH_RELAY_RATE=20, BENCH_RELAY_SECONDS=15, BENCH_RUNS=3)
 *
 * Starts the built server as bench/run.js does (2 workers, sticky, MySQL + Redis,
 * the bench database), joins one device room with `receivers` socket.io-client 4
 * sockets spread over both workers by source address, and one sender socket on
 * worker 0 (127.0.0.2). The sender emits `send-event` `{type: 'bench-relay',
 * content: {n}}` at `rate` per second; every receiver records when event n
 * arrives. Latency = arrival − the moment the sender emitted it (one clock: all
 * sockets live in this process). Reported per worker of the receiver (the
 * sender's worker relays locally; the other worker gets each event through the
 * Socket.IO Redis adapter), p50/p99/max and missed. Per-token event limits are
 * off (RATE_LIMIT_EVENTS=0).
 */
const path = require('path');
const { io } = require('socket.io-client');
const server = require('./lib/server');
const { wallNow, sleep, summarize, median, stickyIndex } = require('./lib/common');
const { createDeviceWithToken } = require('./lib/seed');

const env = process.env;
const cfg = {
  dist: path.resolve(env.BENCH_DIST || path.join(server.root, 'dist')),
  mysqlDb: env.BENCH_MYSQL_DB || 'classworks_bench',
  redisDb: Number(env.BENCH_REDIS_DB || 10),
  receivers: Number(env.BENCH_RELAY_RECEIVERS || 200),
  rate: Number(env.BENCH_RELAY_RATE || 20),
  seconds: Number(env.BENCH_RELAY_SECONDS || 15),
  runs: Number(env.BENCH_RUNS || 3),
};
const log = (...args) => console.log(`[relay ${new Date().toISOString().slice(11, 19)}]`, ...args);

function connect(base, token, localAddress, onEvent) {
  return new Promise((resolve, reject) => {
    const socket = io(base, { transports: [ 'websocket' ], query: { token }, reconnection: false, forceNew: true, localAddress, timeout: 60000 });
    socket.on('bench-relay', onEvent);
    socket.once('joined', () => resolve(socket));
    socket.once('join-error', e => reject(new Error(`join-error ${JSON.stringify(e)}`)));
    socket.once('connect_error', e => reject(e));
  });
}

async function main() {
  server.resetWorld(cfg);
  const port = await server.freePort();
  const title = `ckvbench-relay-${port}-${process.pid}`;
  const base = await server.startServer({
    dist: cfg.dist, port, title, workers: 2, logDir: path.join(require('os').tmpdir(), title),
    env: server.benchEnv(cfg, { RATE_LIMIT_EVENTS: '0' }),
  });
  const sockets = [];
  try {
    const token = await createDeviceWithToken(base, 'bench-relay-device');
    const sentAt = new Map();
    // receipts[worker] = latencies of this run
    let receipts = [[], []];
    let received = 0;
    const addresses = Array.from({ length: 8 }, (_, i) => `127.0.0.${i + 2}`);
    for (let i = 0; i < cfg.receivers; i++) {
      const address = addresses[i % addresses.length];
      const worker = stickyIndex(address, 2);
      sockets.push(await connect(base, token, address, payload => {
        const at = wallNow();
        const t = sentAt.get(payload && payload.content && payload.content.n);
        if (t !== undefined) {
          receipts[worker].push(at - t);
          received++;
        }
      }));
    }
    const sender = await connect(base, token, '127.0.0.2', () => undefined);
    sockets.push(sender);
    log(`${cfg.receivers} receivers and 1 sender joined (sender on worker ${stickyIndex('127.0.0.2', 2)})`);
    await sleep(3000);
    const runs = [];
    let n = 0;
    for (let r = 0; r < cfg.runs; r++) {
      receipts = [[], []];
      received = 0;
      const count = cfg.rate * cfg.seconds;
      const acks = [];
      const start = wallNow();
      for (let i = 0; i < count; i++) {
        const due = start + (i * 1000) / cfg.rate;
        const wait = due - wallNow();
        if (wait > 0) await sleep(wait);
        const id = ++n;
        sentAt.set(id, wallNow());
        acks.push(new Promise(resolve => sender.emit('send-event', { type: 'bench-relay', content: { n: id } }, a => resolve(a && a.ok === true))));
      }
      const okAcks = (await Promise.all(acks)).filter(Boolean).length;
      await sleep(2000);
      const expected = count * cfg.receivers;
      const byWorker = receipts.map(summarize);
      const all = summarize(receipts[0].concat(receipts[1]));
      runs.push({ all, byWorker, expected, received, missed: expected - received, acks: okAcks });
      log(`run ${r + 1}/${cfg.runs}: ${count} events x ${cfg.receivers} receivers, acks ok ${okAcks}; ` +
        `all p50 ${all.p50} p99 ${all.p99} max ${all.max} ms; sender's worker p50 ${byWorker[0].p50} p99 ${byWorker[0].p99}; ` +
        `other worker p50 ${byWorker[1].p50} p99 ${byWorker[1].p99}; missed ${expected - received}`);
    }
    const summary = {
      p50: median(runs.map(x => x.all.p50)), p99: median(runs.map(x => x.all.p99)),
      sameWorkerP99: median(runs.map(x => x.byWorker[0].p99)), otherWorkerP99: median(runs.map(x => x.byWorker[1].p99)),
      missed: runs.reduce((a, x) => a + x.missed, 0),
    };
    log(`summary (medians of ${cfg.runs}): p50 ${summary.p50} p99 ${summary.p99} ms; p99 on the sender's worker ${summary.sameWorkerP99}, ` +
      `across workers ${summary.otherWorkerP99} ms; missed ${summary.missed}`);
    console.log(JSON.stringify({ config: cfg, runs, summary }));
  } finally {
    for (const s of sockets) s.close();
    await server.stopServer(title);
  }
}

main().catch(err => {
  console.error(err);
  process.exit(1);
});
