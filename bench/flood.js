#!/usr/bin/env node
'use strict';

/**
 * `npm run build && node bench/flood.js` (issue 10, item 1): one websocket sends
 * 50,000 `join-token` with random tokens (`BENCH_FLOOD_PACKETS`) to a worker, as fast as
 * its client can, while another client, in its own process and on the same worker,
 * keeps making requests: `GET /kv/_info`, `POST /kv/probe` and an acknowledged
 * `send-event`, one after the other with 10 ms between them.
 *
 * Reports the probe's latency (p50/p99/max over every request) for 10 s without the
 * flood and during the flood, the flood's answers and duration, and both workers' RSS
 * (before, peak sampled every 100 ms, 10 s after).
 *
 * Like bench/run.js it starts its own cluster from dist/ (`BENCH_DIST`), 2 workers,
 * `RATE_LIMIT_IP=0 RATE_LIMIT_KV_READ=0 RATE_LIMIT_KV_WRITE=0 RATE_LIMIT_EVENTS=0` (the probe's own
 * quotas) and otherwise the default limits; **it drops and recreates the
 * database `BENCH_MYSQL_DB` (default classworks_bench) and flushes Redis db
 * `BENCH_REDIS_DB` (default 10)**. The flooder binds 127.0.0.2 and the probe 127.0.0.4:
 * both on the same worker of egg's sticky master (even digit sums).
 *
 * Child modes (forked by this script): `--probe <base> <token>`, `--flood <base> <n>`.
 */
const crypto = require('crypto');
const os = require('os');
const path = require('path');
const { fork } = require('child_process');
const { io } = require('socket.io-client');
const { sleep, summarize, request } = require('./lib/common');
const server = require('./lib/server');
const { createDeviceWithToken } = require('./lib/seed');

const FLOODER = '127.0.0.2';
const PROBE = '127.0.0.4';

function connect(base, opts) {
  const socket = io(base, { transports: [ 'websocket' ], forceNew: true, reconnection: false, ...opts });
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', reject);
  });
}

/** Probe child: requests until told to stop; reports the latencies of each phase. */
async function probe(base, token) {
  const agent = new (require('http').Agent)({ keepAlive: true, maxSockets: 1, localAddress: PROBE });
  const socket = await connect(base, { query: { token }, localAddress: PROBE });
  await new Promise(resolve => socket.once('joined', resolve));
  let phase = null;
  let samples = [];
  let failures = 0;
  process.on('message', m => {
    if (m.phase !== undefined) {
      if (phase !== null) process.send({ phase, samples, failures });
      phase = m.phase;
      samples = [];
      failures = 0;
    }
    if (m.stop) {
      socket.close();
      agent.destroy();
      process.exit(0);
    }
  });
  for (let n = 0; ; n++) {
    if (phase === null) {
      await sleep(10);
      continue;
    }
    const ops = [
      () => request(base, 'GET', '/kv/_info', { headers: { 'x-app-token': token }, agent }).then(r => r.status === 200),
      () => request(base, 'POST', '/kv/probe', { body: { n }, headers: { 'x-app-token': token }, agent }).then(r => r.status === 200),
      () => new Promise(resolve => socket.emit('send-event', { type: 'probe', content: { n } }, a => resolve(a && a.ok === true))),
    ];
    for (const op of ops) {
      const t0 = process.hrtime.bigint();
      const ok = await op().catch(() => false);
      samples.push(Number(process.hrtime.bigint() - t0) / 1e6);
      if (!ok) failures += 1;
      await sleep(10);
    }
  }
}

/** Flood child: one websocket, `n` join-token with random tokens, every ack awaited. */
async function flood(base, n) {
  const socket = await connect(base, { localAddress: FLOODER });
  const answers = {};
  const started = Date.now();
  await new Promise(resolve => {
    let answered = 0;
    const onAck = a => {
      const k = a && a.ok ? 'ok' : String(a && a.reason);
      answers[k] = (answers[k] || 0) + 1;
      if (++answered === n) resolve();
    };
    // The server disconnects a socket that keeps sending past its budget: the rest is never answered.
    socket.once('disconnect', reason => {
      answers[`disconnected (${reason})`] = 1;
      resolve();
    });
    for (let i = 0; i < n; i++) socket.emit('join-token', { token: crypto.randomBytes(32).toString('hex') }, onAck);
    setTimeout(resolve, 180000);
  });
  process.send({ answers, ms: Date.now() - started });
  socket.close();
  process.exit(0);
}

function child(args) {
  const c = fork(__filename, args, { stdio: 'inherit' });
  const messages = [];
  const waiters = [];
  c.on('message', m => {
    messages.push(m);
    while (waiters.length && messages.length) waiters.shift()(messages.shift());
  });
  const next = () => (messages.length ? Promise.resolve(messages.shift()) : new Promise(resolve => waiters.push(resolve)));
  return { c, next };
}

async function main() {
  const env = process.env;
  const packets = Number(env.BENCH_FLOOD_PACKETS || 50000);
  const mysqlDb = env.BENCH_MYSQL_DB || 'classworks_bench';
  const redisDb = Number(env.BENCH_REDIS_DB || 10);
  const dist = path.resolve(env.BENCH_DIST || path.join(server.root, 'dist'));
  server.resetWorld({ mysqlDb, redisDb });
  const port = await server.freePort();
  const title = `ckvbench-flood-${port}-${process.pid}`;
  const logDir = path.join(os.tmpdir(), `ckvbench-${process.pid}`);
  const base = await server.startServer({
    dist, port, title, logDir,
    // The probe's own requests must not hit its token's quotas; the flood meets the default
    // SOCKET_PACKET_RATE/BURST and RATE_LIMIT_TOKEN_FAILURES.
    env: server.benchEnv({ mysqlDb, redisDb }, { RATE_LIMIT_EVENTS: '0' }),
  });
  const rss = () => Object.fromEntries(server.clusterPids(title).workers.map(pid => [ pid, Math.round(server.rssKb(pid) / 1024) ]));
  try {
    const token = await createDeviceWithToken(base, `flood-${process.pid}`);
    // Warm-up: both workers serve the routes once.
    for (let i = 0; i < 200; i++) await request(base, 'GET', '/kv/_info', { headers: { 'x-app-token': token }, localAddress: i % 2 ? '127.0.0.3' : FLOODER });
    const p = child([ '--probe', base, token ]);
    p.c.send({ phase: 'idle' });
    await sleep(10000);
    const before = rss();
    const peak = { ...before };
    const sampler = setInterval(() => {
      for (const [ pid, mb ] of Object.entries(rss())) peak[pid] = Math.max(peak[pid] || 0, mb);
    }, 100);
    p.c.send({ phase: 'flood' });
    const idle = await p.next();
    const f = child([ '--flood', base, String(packets) ]);
    const flooded = await f.next();
    await sleep(500);
    p.c.send({ phase: 'after' });
    const during = await p.next();
    clearInterval(sampler);
    await sleep(10000);
    const after = rss();
    p.c.send({ stop: true });
    const result = {
      packets,
      flood: flooded,
      probe: {
        idle: { ...summarize(idle.samples), failures: idle.failures },
        flood: { ...summarize(during.samples), failures: during.failures },
      },
      rssMb: { before, peak, after10s: after },
    };
    console.log(JSON.stringify(result, null, 2));
  } finally {
    await server.stopServer(title);
  }
}

if (process.argv[2] === '--probe') probe(process.argv[3], process.argv[4]);
else if (process.argv[2] === '--flood') flood(process.argv[3], Number(process.argv[4]));
else main().catch(err => {
  console.error(err);
  process.exit(1);
});
