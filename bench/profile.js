#!/usr/bin/env node
'use strict';

/**
 * CPU profile of the server's workers under one HTTP load:
 *
 *   node bench/profile.js <check|get|post|post1|list|keys> [seconds]
 *   node bench/profile.js join [sockets]      (joins, capacity shape, default 2000)
 *   node bench/profile.js fanout [sockets]    (one room, 20 writes/s for 10 s, default 1000)
 *
 * Starts the built server exactly as bench/run.js does, but with
 * bench/lib/cpu-profiler.js preloaded (NODE_OPTIONS=--require): warms the route up,
 * profiles both app workers while loading the route for `seconds` (default 10) at
 * 64 connections over both workers, and prints the heaviest frames
 * (self time) of the two app workers, by function and by package. The
 * .cpuprofile files stay in the printed directory (open them in Chrome DevTools).
 * Uses the bench database and Redis db like bench/run.js (BENCH_DIST, ...).
 */
const fs = require('fs');
const os = require('os');
const path = require('path');
const { fork } = require('child_process');
const server = require('./lib/server');
const { pool } = require('./lib/common');
const { createDeviceWithToken, post, batchImport, sampleValue } = require('./lib/seed');

const scenario = process.argv[2];
const seconds = Number(process.argv[3] || 10);
const dist = path.resolve(process.env.BENCH_DIST || path.join(server.root, 'dist'));
const mysqlDb = process.env.BENCH_MYSQL_DB || 'classworks_bench';
const redisDb = Number(process.env.BENCH_REDIS_DB || 10);

function load(opts) {
  return new Promise((resolve, reject) => {
    const child = fork(path.join(__dirname, 'http-load.js'), [], { serialization: 'advanced' });
    child.once('message', m => (m.error ? reject(new Error(m.error)) : resolve(m.result)));
    child.send(opts);
  });
}

/** Joins sockets as bench/run.js's capacity benchmark does (2 client processes). */
async function joinSockets(base, tokens) {
  const addresses = Array.from({ length: 32 }, (_, i) => `127.0.0.${i + 2}`);
  const procs = [ 0, 1 ].map(() => fork(path.join(__dirname, 'clients.js'), [], { serialization: 'advanced' }));
  const replies = await Promise.all(procs.map((c, p) => new Promise(resolve => {
    c.once('message', resolve);
    c.send({ cmd: 'connect', mode: 'sio', url: base, tokens: tokens.filter((_, i) => i % 2 === p), addresses, concurrency: 100, keyPrefix: 'x' });
  })));
  const startAt = Math.min(...replies.map(r => r.startAt));
  const endAt = Math.max(...replies.map(r => r.endAt));
  return { procs, joined: replies.reduce((a, r) => a + r.joined, 0), seconds: (endAt - startAt) / 1000 };
}

/** Self time per frame and per package of one .cpuprofile. */
function topFrames(file, n = 25) {
  const prof = JSON.parse(fs.readFileSync(file, 'utf8'));
  const self = new Map();
  const dt = new Map();
  for (let i = 0; i < prof.samples.length; i++) dt.set(prof.samples[i], (dt.get(prof.samples[i]) || 0) + (prof.timeDeltas[i] || 0));
  let total = 0;
  const byPkg = new Map();
  for (const node of prof.nodes) {
    const t = (dt.get(node.id) || 0) / 1000;
    if (!t) continue;
    total += t;
    const cf = node.callFrame;
    const where = cf.url ? `${cf.url.replace(/^file:\/\//, '').replace(/.*node_modules\//, '~/')}:${cf.lineNumber + 1}` : '';
    const name = `${cf.functionName || '(anonymous)'} ${where}`.trim();
    self.set(name, (self.get(name) || 0) + t);
    const m = cf.url.match(/node_modules\/((?:@[^/]+\/)?[^/]+)/);
    const pkg = m ? m[1] : (cf.url.startsWith('node:') ? 'node core' : cf.url.includes('/dist/') ? 'app (dist)' : (cf.functionName.startsWith('(') ? cf.functionName : 'other'));
    byPkg.set(pkg, (byPkg.get(pkg) || 0) + t);
  }
  const fmt = ([ k, v ]) => `${(v / total * 100).toFixed(1).padStart(5)}%  ${k}`;
  return {
    totalMs: Math.round(total),
    frames: [ ...self ].sort((a, b) => b[1] - a[1]).slice(0, n).map(fmt),
    packages: [ ...byPkg ].sort((a, b) => b[1] - a[1]).slice(0, 15).map(fmt),
  };
}

async function main() {
  const profDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ckvbench-prof-'));
  server.resetWorld({ mysqlDb, redisDb });
  const port = await server.freePort();
  const title = `ckvbench-profile-${port}-${process.pid}`;
  const base = await server.startServer({
    dist, port, title, workers: 2, logDir: path.join(profDir, 'logs'),
    env: server.benchEnv({ mysqlDb, redisDb }, {
      NODE_OPTIONS: `--require=${path.join(__dirname, 'lib', 'cpu-profiler.js')}`,
      CKV_PROFILE_DIR: profDir,
    }),
  });
  const { workers } = server.clusterPids(title);
  try {
    const reader = await createDeviceWithToken(base, 'bench-profile');
    await post(base, reader, 'bench', sampleValue(0));
    const batch = {};
    for (let i = 0; i < 100; i++) batch[`item-${String(i).padStart(3, '0')}`] = sampleValue(i);
    await batchImport(base, reader, batch);
    const writers = await pool(Array.from({ length: 64 }, (_, i) => `bench-profile-w${i}`), 8, u => createDeviceWithToken(base, u));
    const body = JSON.stringify(sampleValue(1));
    const scenarios = {
      check: { method: 'GET', path: '/check', tokens: [ reader ] },
      get: { method: 'GET', path: '/kv/bench', tokens: [ reader ] },
      post: { method: 'POST', path: '/kv/bench-write', body, tokens: writers },
      post1: { method: 'POST', path: '/kv/bench-write', body, tokens: [ reader ] },
      list: { method: 'GET', path: '/kv', tokens: [ reader ] },
      keys: { method: 'GET', path: '/kv/_keys', tokens: [ reader ] },
    };
    if (scenario === 'fanout') {
      // `seconds` is the socket count here (default 1000): one device room, 20 writes/s for 10 s.
      const count = Number(process.argv[3] || 1000);
      const r = await joinSockets(base, Array(count).fill(reader));
      await new Promise(resolve => setTimeout(resolve, Math.max(3000, count * 5)));
      for (const pid of workers) process.kill(pid, 'SIGUSR2');
      for (let i = 0; i < 200; i++) {
        await Promise.all([ post(base, reader, `fan-${i}`, { i, note: 'profile' }), new Promise(resolve => setTimeout(resolve, 50)) ]);
      }
      for (const pid of workers) process.kill(pid, 'SIGUSR2');
      await new Promise(resolve => setTimeout(resolve, 2000));
      console.log(`fanout: ${r.joined} sockets, 200 writes at 20/s`);
      for (const c of r.procs) c.kill();
    } else if (scenario === 'join') {
      // Capacity shape: `seconds` is the socket count here (default 2000), 10 per device.
      const count = Number(process.argv[3] || 2000);
      const tokens = await pool(Array.from({ length: Math.ceil(count / 10) }, (_, i) => `bench-profile-d${i}`), 8, u => createDeviceWithToken(base, u));
      const socketTokens = Array.from({ length: count }, (_, i) => tokens[Math.floor(i / 10)]);
      for (const pid of workers) process.kill(pid, 'SIGUSR2');
      const r = await joinSockets(base, socketTokens);
      for (const pid of workers) process.kill(pid, 'SIGUSR2');
      await new Promise(resolve => setTimeout(resolve, 2000));
      console.log(`join: ${r.joined}/${count} sockets joined in ${r.seconds.toFixed(1)} s (${Math.round(r.joined / r.seconds)}/s) (profiling slows it down)`);
      for (const c of r.procs) c.kill();
    } else {
      if (!scenarios[scenario]) throw new Error(`usage: node bench/profile.js <${Object.keys(scenarios).join('|')}|join|fanout> [seconds|sockets]`);
      const opts = { url: base, connections: 64, addresses: [ '127.0.0.2', '127.0.0.3' ], ...scenarios[scenario] };
      await load({ ...opts, duration: 2 });
      for (const pid of workers) process.kill(pid, 'SIGUSR2');
      const r = await load({ ...opts, duration: seconds });
      for (const pid of workers) process.kill(pid, 'SIGUSR2');
      await new Promise(resolve => setTimeout(resolve, 2000));
      console.log(`${scenario}: ${Math.round(r.reqPerSec)} req/s, p50 ${r.p50} ms, p99 ${r.p99} ms, errors ${r.errors}, non-2xx ${r.non2xx} (profiling slows it down)`);
    }
  } finally {
    await server.stopServer(title);
  }
  for (const pid of workers) {
    const file = fs.readdirSync(profDir).find(f => f === `worker-${pid}.cpuprofile`);
    if (!file) {
      console.log(`worker ${pid}: no profile written`);
      continue;
    }
    const t = topFrames(path.join(profDir, file));
    console.log(`\nworker ${pid} (${path.join(profDir, file)}), ${t.totalMs} ms sampled\n  by package:\n    ${t.packages.join('\n    ')}\n  top frames (self time):\n    ${t.frames.join('\n    ')}`);
  }
}

main().catch(err => {
  console.error(err);
  process.exit(1);
});
