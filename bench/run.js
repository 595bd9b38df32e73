#!/usr/bin/env node
'use strict';

/**
 * `npm run bench` (= npm run build && node bench/run.js [http|fanout|capacity|memory]...).
 *
 * Starts the built server (dist/) the way `npm start` does: egg-scripts start
 * --sticky, 2 workers, a unique title, a free port, MySQL + Redis. Each benchmark
 * gets a freshly started server (`memory` one for all its rounds); load generators and clients are separate
 * processes (bench/http-load.js, bench/clients.js, bench/ws-reference.js).
 * Raw results go to bench/results/<date>.json, a summary to stdout.
 * See bench/README.md for the method and the environment variables.
 */
const fs = require('fs');
const os = require('os');
const path = require('path');
const { fork, spawnSync, execFileSync } = require('child_process');
const { wallNow, sleep, median, summarize, loopbackRange, request, pool } = require('./lib/common');
const server = require('./lib/server');
const { createDeviceWithToken, post, batchImport, sampleValue } = require('./lib/seed');

// ---------------------------------------------------------------------------
// Re-exec under a raised open-files limit (10,000 sockets need it on both ends).
if (!process.env.CKV_BENCH_REEXEC) {
  // Ctrl-C reaches the re-executed process too; it stops the server and its children.
  for (const sig of [ 'SIGINT', 'SIGTERM' ]) process.on(sig, () => undefined);
  const r = spawnSync('bash', [ '-c', 'ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$0" "$@"',
    process.execPath, __filename, ...process.argv.slice(2) ], { stdio: 'inherit', env: { ...process.env, CKV_BENCH_REEXEC: '1' } });
  process.exit(r.status === null ? 1 : r.status);
}

const env = process.env;
const small = env.BENCH_SCALE === 'small';
const int = (name, full, dev) => (env[name] ? Number(env[name]) : (small ? dev : full));

const cfg = {
  dist: path.resolve(env.BENCH_DIST || path.join(server.root, 'dist')),
  mysqlDb: env.BENCH_MYSQL_DB || 'classworks_bench',
  redisDb: Number(env.BENCH_REDIS_DB || 10),
  redisPrefix: env.BENCH_REDIS_PREFIX || 'ckvbench:',
  workers: 2,
  runs: int('BENCH_RUNS', 3, 3),
  http: {
    connections: int('BENCH_HTTP_CONNECTIONS', 64, 64),
    duration: int('BENCH_HTTP_DURATION', 10, 2),
    warmup: int('BENCH_HTTP_WARMUP', 3, 1),
    listItems: 100,
  },
  fanout: {
    sockets: int('BENCH_FANOUT_SOCKETS', 1000, 100),
    processes: int('BENCH_FANOUT_PROCESSES', 2, 2),
    rate: int('BENCH_FANOUT_RATE', 20, 20),
    seconds: int('BENCH_FANOUT_SECONDS', 30, 5),
  },
  capacity: {
    devices: int('BENCH_CAPACITY_DEVICES', 1000, 50),
    perDevice: int('BENCH_CAPACITY_PER_DEVICE', 10, 10),
    processes: int('BENCH_CAPACITY_PROCESSES', 4, 2),
    writes: int('BENCH_CAPACITY_WRITES', 50, 20),
    runs: int('BENCH_CAPACITY_RUNS', 3, 1),
  },
  memory: {
    devices: int('BENCH_MEMORY_DEVICES', 1000, 50),
    perDevice: int('BENCH_MEMORY_PER_DEVICE', 10, 10),
    processes: int('BENCH_MEMORY_PROCESSES', 4, 2),
    rounds: int('BENCH_MEMORY_ROUNDS', 3, 3),
    settleSeconds: int('BENCH_MEMORY_SETTLE', 15, 5),
    // BENCH_MEMORY_SNAPSHOT=1: heap snapshots of both workers after the last round's join and close.
    snapshot: env.BENCH_MEMORY_SNAPSHOT === '1',
  },
};
const logRoot = path.join(os.tmpdir(), `ckvbench-${process.pid}`);

const log = (...args) => console.log(`[bench ${new Date().toISOString().slice(11, 19)}]`, ...args);

// ---------------------------------------------------------------------------
// Child processes

const children = new Set();

function spawnChild(file) {
  const child = fork(path.join(__dirname, file), [], { serialization: 'advanced', stdio: [ 'ignore', 'inherit', 'inherit', 'ipc' ] });
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

/** Sends `msg` and resolves with the child's next message (rejects if it exits first). */
function ask(child, msg) {
  return new Promise((resolve, reject) => {
    const onExit = code => reject(new Error(`child exited (${code}) before answering ${JSON.stringify(msg).slice(0, 80)}`));
    child.once('exit', onExit);
    child.once('message', m => {
      child.off('exit', onExit);
      resolve(m);
    });
    if (msg !== undefined) child.send(msg);
  });
}

function killChildren() {
  for (const c of children) c.kill('SIGKILL');
}

// ---------------------------------------------------------------------------
// Server lifecycle

let current = null; // { title, base }

async function boot(label, extraEnv = {}) {
  const port = await server.freePort();
  const title = `ckvbench-${label}-${port}-${process.pid}`;
  const logDir = path.join(logRoot, label);
  const base = await server.startServer({
    dist: cfg.dist,
    port,
    title,
    workers: cfg.workers,
    logDir,
    // The benchmarks measure throughput, not the limiter: every limit that would
    // answer 429 under this load is switched off (benchEnv).
    env: server.benchEnv({ mysqlDb: cfg.mysqlDb, redisDb: cfg.redisDb, prefix: cfg.redisPrefix }, extraEnv),
  });
  current = { title, base, port };
  const pids = server.clusterPids(title);
  if (pids.workers.length !== cfg.workers) throw new Error(`expected ${cfg.workers} workers, found ${JSON.stringify(pids)}`);
  log(`server ${title} on ${base}, workers ${pids.workers.join(', ')}`);
  return { title, base, pids };
}

async function shutdown() {
  if (!current) return;
  const { title } = current;
  current = null;
  await server.stopServer(title);
}

// ---------------------------------------------------------------------------
// 1. HTTP

async function httpLoad(opts) {
  const child = spawnChild('http-load.js');
  const m = await ask(child, opts);
  if (m.error) throw new Error(m.error);
  return m.result;
}

async function benchHttp() {
  const { base, pids } = await boot('http');
  const reader = await createDeviceWithToken(base, 'bench-http-reader');
  await post(base, reader, 'bench', sampleValue(0));
  const batch = {};
  for (let i = 0; i < cfg.http.listItems; i++) batch[`item-${String(i).padStart(3, '0')}`] = sampleValue(i);
  await batchImport(base, reader, batch);
  // Writers: one device per connection (64 classrooms writing), and one shared device (worst case).
  const writers = await pool(Array.from({ length: cfg.http.connections }, (_, i) => `bench-http-writer-${i}`), 8,
    uuid => createDeviceWithToken(base, uuid));

  const listCheck = await request(base, 'GET', '/kv', { headers: { 'x-app-token': reader } });
  if (listCheck.status !== 200 || listCheck.body.items.length !== cfg.http.listItems) {
    throw new Error(`GET /kv returned ${listCheck.status} with ${listCheck.body && listCheck.body.items && listCheck.body.items.length} items`);
  }

  const body = JSON.stringify(sampleValue(1));
  const all = [
    { id: 'check', name: 'GET /check', method: 'GET', path: '/check', tokens: [ reader ] },
    { id: 'get', name: 'GET /kv/:key', method: 'GET', path: '/kv/bench', tokens: [ reader ] },
    { id: 'post', name: 'POST /kv/:key', method: 'POST', path: '/kv/bench-write', body, tokens: writers },
    { id: 'post1', name: 'POST /kv/:key (1 device)', method: 'POST', path: '/kv/bench-write', body, tokens: [ reader ] },
    { id: 'list', name: 'GET /kv (100 items)', method: 'GET', path: '/kv', tokens: [ reader ] },
    { id: 'keys', name: 'GET /kv/_keys (100 keys)', method: 'GET', path: '/kv/_keys', tokens: [ reader ] },
  ];
  // BENCH_HTTP_ROUTES=get,post keeps those routes (and always the /check ceiling).
  const only = env.BENCH_HTTP_ROUTES ? env.BENCH_HTTP_ROUTES.split(',').concat('check') : null;
  const scenarios = all.filter(s => !only || only.includes(s.id));
  const addresses = [ '127.0.0.2', '127.0.0.3' ];
  const common = { url: base, connections: cfg.http.connections, addresses };

  log(`http: warm-up ${cfg.http.warmup}s per route`);
  const warmup = {};
  for (const s of scenarios) {
    const w = await httpLoad({ ...common, ...s, duration: cfg.http.warmup });
    warmup[s.name] = { reqPerSec: w.reqPerSec, errors: w.errors, timeouts: w.timeouts, non2xx: w.non2xx, statusCodeStats: w.statusCodeStats };
    // The warm-up makes the first write of each key: failures there are real failures too.
    if (w.errors || w.non2xx) log(`http warm-up ${s.name}: errors ${w.errors}, status codes ${JSON.stringify(w.statusCodeStats)}`);
  }

  const runs = [];
  const services = server.servicePids();
  const cpuOf = pid => (pid ? server.cpuSeconds(pid) : null);
  const delta = (a, b) => (a === null || b === null ? null : Math.round((b - a) * 100) / 100);
  for (let r = 0; r < cfg.runs; r++) {
    const round = {};
    for (const s of scenarios) {
      const cpu0 = pids.workers.map(server.cpuSeconds);
      const svc0 = [ cpuOf(services.mysql), cpuOf(services.redis), cpuOf(pids.master) ];
      const result = await httpLoad({ ...common, ...s, duration: cfg.http.duration });
      const cpu1 = pids.workers.map(server.cpuSeconds);
      const svc1 = [ cpuOf(services.mysql), cpuOf(services.redis), cpuOf(pids.master) ];
      result.workerCpuSeconds = cpu1.map((c, i) => delta(cpu0[i], c));
      // Everything else that shares the machine's cores during the run.
      result.mysqlCpuSeconds = delta(svc0[0], svc1[0]);
      result.redisCpuSeconds = delta(svc0[1], svc1[1]);
      result.masterCpuSeconds = delta(svc0[2], svc1[2]);
      round[s.name] = result;
      log(`http run ${r + 1}/${cfg.runs} ${s.name}: ${Math.round(result.reqPerSec)} req/s, p50 ${result.p50} ms, p99 ${result.p99} ms, ` +
        `errors ${result.errors}, non-2xx ${result.non2xx}; CPU s: workers ${result.workerCpuSeconds.join(' / ')}, ` +
        `mysql ${result.mysqlCpuSeconds}, redis ${result.redisCpuSeconds}, load generator ${result.loadGeneratorCpuSeconds}`);
    }
    runs.push(round);
  }
  await shutdown();

  const summary = {};
  for (const s of scenarios) {
    const rs = runs.map(r => r[s.name]);
    summary[s.name] = {
      reqPerSec: Math.round(median(rs.map(x => x.reqPerSec))),
      p50: median(rs.map(x => x.p50)),
      p99: median(rs.map(x => x.p99)),
      errors: rs.reduce((a, x) => a + x.errors + x.timeouts, 0),
      non2xx: rs.reduce((a, x) => a + x.non2xx, 0),
    };
  }
  const ceiling = summary['GET /check'].reqPerSec;
  for (const s of scenarios) summary[s.name].ofCheck = Math.round((summary[s.name].reqPerSec / ceiling) * 1000) / 1000;
  const targets = { 'zero errors and non-2xx': scenarios.every(s => summary[s.name].errors === 0 && summary[s.name].non2xx === 0) };
  if (summary['GET /kv/:key']) targets['GET /kv/:key >= 50% of /check'] = summary['GET /kv/:key'].ofCheck >= 0.5;
  if (summary['POST /kv/:key']) targets['POST /kv/:key >= 25% of /check'] = summary['POST /kv/:key'].ofCheck >= 0.25;
  if (summary['GET /kv (100 items)']) targets['GET /kv >= 25% of /check'] = summary['GET /kv (100 items)'].ofCheck >= 0.25;
  if (summary['GET /kv/_keys (100 keys)']) targets['GET /kv/_keys >= 25% of /check'] = summary['GET /kv/_keys (100 keys)'].ofCheck >= 0.25;
  targets['zero errors and non-2xx (warm-up included)'] = Object.values(warmup).every(w => !w.errors && !w.timeouts && !w.non2xx);
  return { warmup, config: { ...cfg.http, runs: cfg.runs, addresses, rateLimits: 'RATE_LIMIT_IP=0 RATE_LIMIT_KV_READ=0 RATE_LIMIT_KV_WRITE=0' }, runs, summary, targets };
}

// ---------------------------------------------------------------------------
// Realtime helpers

/** Starts `processes` client processes holding `tokens` (one per socket) between them. */
async function connectClients({ mode, url, tokens, processes, addresses, keyPrefix, concurrency, cpuOf }) {
  const procs = Array.from({ length: processes }, () => spawnChild('clients.js'));
  const shares = procs.map((_, p) => tokens.filter((__, i) => i % processes === p));
  // cpuOf { name: pid }: CPU seconds each used while the sockets joined (the client
  // processes are counted once loaded: they answer a reset first).
  let cpu0 = null;
  if (cpuOf) {
    await Promise.all(procs.map(c => ask(c, { cmd: 'reset' })));
    cpu0 = cpuSample(cpuOf, procs);
  }
  // Socket i of process p gets addresses[(p + i * processes) % n]: over all processes
  // that is address (global index) mod n, so every address carries the same count.
  const replies = await Promise.all(procs.map((c, p) => {
    const rotated = addresses.map((_, i) => addresses[(p + i * processes) % addresses.length]);
    return ask(c, { cmd: 'connect', mode, url, tokens: shares[p], addresses: rotated, concurrency, keyPrefix });
  }));
  const joined = replies.reduce((a, r) => a + r.joined, 0);
  const failed = replies.reduce((a, r) => a + r.failed, 0);
  const errors = {};
  for (const r of replies) for (const [ k, v ] of Object.entries(r.errors)) errors[k] = (errors[k] || 0) + v;
  const startAt = Math.min(...replies.map(r => r.startAt));
  const endAt = Math.max(...replies.map(r => r.endAt));
  const cpu = cpu0 && cpuDelta(cpu0, cpuSample(cpuOf, procs));
  return { procs, joined, failed, errors, seconds: (endAt - startAt) / 1000, cpu };
}

/** CPU seconds so far of the named pids, the client processes and the whole machine (/proc/stat). */
function cpuSample(named, procs) {
  const out = { at: wallNow() };
  for (const [ name, pid ] of Object.entries(named)) out[name] = pid ? server.cpuSeconds(pid) : null;
  out.clients = procs.reduce((a, c) => a + (server.cpuSeconds(c.pid) || 0), 0);
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  out.machineBusy = (f.reduce((a, x) => a + x, 0) - f[3] - f[4]) / 100; // all but idle and iowait
  return out;
}
function cpuDelta(a, b) {
  const out = { wallSeconds: Math.round(b.at - a.at) / 1000 };
  for (const k of Object.keys(b)) if (k !== 'at') out[k] = a[k] === null || b[k] === null ? null : Math.round((b[k] - a[k]) * 100) / 100;
  const known = Object.keys(b).filter(k => k !== 'at' && k !== 'machineBusy').reduce((s, k) => s + (out[k] || 0), 0);
  out.others = Math.round((out.machineBusy - known) * 100) / 100; // everything else on the machine
  return out;
}

async function collectReceipts(procs, writes) {
  const replies = await Promise.all(procs.map(c => ask(c, { cmd: 'collect', writes })));
  const total = replies.reduce((a, r) => a + r.fromResp.length, 0);
  const fromResp = new Float64Array(total);
  const fromSend = new Float64Array(total);
  let off = 0;
  for (const r of replies) {
    fromResp.set(r.fromResp, off);
    fromSend.set(r.fromSend, off);
    off += r.fromResp.length;
  }
  const concat = field => {
    const out = new Float64Array(replies.reduce((a, r) => a + r[field].length, 0));
    let at = 0;
    for (const r of replies) {
      out.set(r[field], at);
      at += r[field].length;
    }
    return out;
  };
  // The writer connects from 127.0.0.1 (odd): odd source addresses share its worker.
  const writersWorker = concat('fromRespOdd');
  const otherWorker = concat('fromRespEven');
  return {
    fromResponse: summarize(fromResp),
    fromSend: summarize(fromSend),
    writersWorker: writersWorker.length ? summarize(writersWorker) : null,
    otherWorker: otherWorker.length ? summarize(otherWorker) : null,
    expected: replies.reduce((a, r) => a + r.expected, 0),
    received: total,
    missed: replies.reduce((a, r) => a + r.missed, 0),
    disconnects: replies.reduce((a, r) => a + r.disconnects, 0),
  };
}

async function closeClients(procs) {
  await Promise.all(procs.map(c => new Promise(resolve => {
    c.once('exit', resolve);
    c.send({ cmd: 'close' });
  })));
}

/**
 * `count` writes, `rate` per second on a fixed schedule (a slow answer does not
 * delay the next write). tokenFor(i) picks the token (device) of write i.
 */
async function writeSeries(base, { count, rate, keyPrefix, tokenFor }) {
  const writes = [];
  const pending = [];
  const t0 = wallNow() + 20;
  for (let i = 0; i < count; i++) {
    const wait = t0 + (i * 1000) / rate - wallNow();
    if (wait > 0) await sleep(wait);
    const key = `${keyPrefix}${String(i).padStart(5, '0')}`;
    pending.push(request(base, 'POST', `/kv/${key}`, {
      body: { sentAt: wallNow(), note: 'fan-out benchmark write', i },
      headers: { 'x-app-token': tokenFor(i) },
    }).then(r => writes.push({ key, sentAt: r.sentAt, respAt: r.respAt, status: r.status })));
  }
  await Promise.all(pending);
  return writes;
}

/** socket ids of a device's room per presence instance (hostname:pid:random). */
function presenceByInstance(uuid) {
  const out = execFileSync('redis-cli', [ '-n', String(cfg.redisDb), 'HVALS', `${cfg.redisPrefix}presence:dev:${uuid}` ], { encoding: 'utf8' });
  const counts = {};
  for (const inst of out.split('\n').filter(Boolean)) {
    const pid = inst.split(':')[1];
    counts[pid] = (counts[pid] || 0) + 1;
  }
  return counts;
}

async function onlineTotal(base) {
  const r = await request(base, 'GET', '/devices/online');
  return r.body.devices.reduce((a, d) => a + d.connections, 0);
}

// ---------------------------------------------------------------------------
// 2. Fan-out

async function fanoutRuns(label, base, procs, tokenFor) {
  const runs = [];
  const count = cfg.fanout.rate * cfg.fanout.seconds;
  for (let r = 0; r < cfg.runs; r++) {
    await Promise.all(procs.map(c => ask(c, { cmd: 'reset' })));
    const keyPrefix = `fan-${r}-`;
    const writes = await writeSeries(base, { count, rate: cfg.fanout.rate, keyPrefix, tokenFor });
    await sleep(2000);
    const res = await collectReceipts(procs, writes);
    res.writeErrors = writes.filter(w => w.status !== 200).length;
    res.writes = writes.length;
    runs.push(res);
    log(`fanout ${label} run ${r + 1}/${cfg.runs}: from response p50 ${res.fromResponse.p50} p99 ${res.fromResponse.p99} max ${res.fromResponse.max} ms; ` +
      `from send p50 ${res.fromSend.p50} p99 ${res.fromSend.p99}; missed ${res.missed}/${res.expected}, write errors ${res.writeErrors}, disconnects ${res.disconnects}`);
    if (label === 'socket.io' && res.writersWorker && res.otherWorker) {
      log(`fanout ${label} run ${r + 1}/${cfg.runs} by source address: odd (the writer's worker) p50 ${res.writersWorker.p50} p99 ${res.writersWorker.p99}; ` +
        `even (the other worker) p50 ${res.otherWorker.p50} p99 ${res.otherWorker.p99}`);
    }
  }
  return runs;
}

const medianOf = (runs, pick) => median(runs.map(pick));
function fanoutSummary(runs) {
  return {
    fromResponse: { p50: medianOf(runs, r => r.fromResponse.p50), p99: medianOf(runs, r => r.fromResponse.p99), max: medianOf(runs, r => r.fromResponse.max) },
    fromSend: { p50: medianOf(runs, r => r.fromSend.p50), p99: medianOf(runs, r => r.fromSend.p99), max: medianOf(runs, r => r.fromSend.max) },
    writersWorker: runs[0].writersWorker && { p50: medianOf(runs, r => r.writersWorker.p50), p99: medianOf(runs, r => r.writersWorker.p99) },
    otherWorker: runs[0].otherWorker && { p50: medianOf(runs, r => r.otherWorker.p50), p99: medianOf(runs, r => r.otherWorker.p99) },
    missed: runs.reduce((a, r) => a + r.missed, 0),
    expected: runs.reduce((a, r) => a + r.expected, 0),
    writeErrors: runs.reduce((a, r) => a + r.writeErrors, 0),
    disconnects: Math.max(...runs.map(r => r.disconnects)),
  };
}

async function benchFanout() {
  const { sockets, processes } = cfg.fanout;
  const addresses = loopbackRange(2, 9);
  const concurrency = 25;

  // Socket.IO through the real server.
  const { base, pids } = await boot('fanout');
  const uuid = 'bench-fanout-device';
  const token = await createDeviceWithToken(base, uuid);
  const sio = await connectClients({ mode: 'sio', url: base, tokens: Array(sockets).fill(token), processes, addresses, keyPrefix: 'fan-', concurrency });
  log(`fanout: ${sio.joined}/${sockets} socket.io clients joined in ${sio.seconds.toFixed(1)} s (failed ${sio.failed} ${JSON.stringify(sio.errors)})`);
  // Let the device-joined storm (each join is announced to the whole room) drain.
  await sleep(Math.max(3000, sockets * 5));
  const online = await onlineTotal(base);
  const perWorker = presenceByInstance(uuid);
  log(`fanout: /devices/online counts ${online}; sockets per worker pid ${JSON.stringify(perWorker)}`);
  const sioRuns = await fanoutRuns('socket.io', base, sio.procs, () => token);
  await closeClients(sio.procs);
  const rss = pids.workers.map(server.rssKb);
  await shutdown();

  // Raw ws reference, same clients, same writer.
  const ref = spawnChild('ws-reference.js');
  const { port } = await ask(ref);
  const refBase = `http://127.0.0.1:${port}`;
  const raw = await connectClients({ mode: 'ws', url: `ws://127.0.0.1:${port}`, tokens: Array(sockets).fill(''), processes, addresses, keyPrefix: 'fan-', concurrency });
  log(`fanout: ${raw.joined}/${sockets} raw ws clients connected in ${raw.seconds.toFixed(1)} s`);
  await sleep(1000);
  const rawRuns = await fanoutRuns('raw ws', refBase, raw.procs, () => 'none');
  await closeClients(raw.procs);
  ref.kill();

  const summary = { socketio: fanoutSummary(sioRuns), rawWs: fanoutSummary(rawRuns) };
  summary.p99Ratio = Math.round((summary.socketio.fromResponse.p99 / Math.max(summary.rawWs.fromResponse.p99, 0.01)) * 100) / 100;
  summary.p99RatioFromSend = Math.round((summary.socketio.fromSend.p99 / Math.max(summary.rawWs.fromSend.p99, 0.01)) * 100) / 100;
  const targets = {
    'p99 < 50 ms': summary.socketio.fromResponse.p99 < 50,
    'p99 <= 3x raw ws p99': summary.socketio.fromResponse.p99 <= 3 * summary.rawWs.fromResponse.p99,
    'p99 from send <= 1.5x raw ws p99 from send (issue 13)': summary.socketio.fromSend.p99 <= 1.5 * summary.rawWs.fromSend.p99,
    'no missed deliveries': summary.socketio.missed === 0,
  };
  return {
    config: { ...cfg.fanout, runs: cfg.runs, addresses, joinConcurrencyPerProcess: concurrency },
    join: { joined: sio.joined, failed: sio.failed, errors: sio.errors, seconds: sio.seconds, online, socketsPerWorkerPid: perWorker },
    workerRssKbAfter: rss,
    runs: { socketio: sioRuns, rawWs: rawRuns },
    summary,
    targets,
  };
}

// ---------------------------------------------------------------------------
// 3. Capacity

async function benchCapacity() {
  const { devices, perDevice, processes, writes, runs: nRuns } = cfg.capacity;
  const addresses = loopbackRange(2, 33);
  const concurrency = 100;
  const sockets = devices * perDevice;
  let tokens = null;
  const runs = [];
  for (let r = 0; r < nRuns; r++) {
    const { base, pids } = await boot(`capacity${r}`);
    if (!tokens) {
      log(`capacity: creating ${devices} devices with a token each`);
      tokens = await pool(Array.from({ length: devices }, (_, i) => `bench-cap-${String(i).padStart(5, '0')}`), 16,
        uuid => createDeviceWithToken(base, uuid));
    } else {
      // Same traffic shape as the first run before measuring: each device resolves its token once.
      await pool(tokens, 16, t => request(base, 'GET', '/kv/_info', { headers: { 'x-app-token': t } }));
    }
    await sleep(3000);
    const rssBefore = pids.workers.map(server.rssKb);
    const socketTokens = [];
    for (let d = 0; d < devices; d++) for (let k = 0; k < perDevice; k++) socketTokens.push(tokens[d]);
    const svc = server.servicePids();
    const cpuOf = { master: pids.master, agent: pids.agent, workerA: pids.workers[0], workerB: pids.workers[1], redis: svc.redis, mysql: svc.mysql };
    const conn = await connectClients({ mode: 'sio', url: base, tokens: socketTokens, processes, addresses, keyPrefix: 'cap-', concurrency, cpuOf });
    const joinRate = Math.round(conn.joined / conn.seconds);
    log(`capacity run ${r + 1}/${nRuns}: ${conn.joined}/${sockets} joined in ${conn.seconds.toFixed(1)} s (${joinRate}/s), failed ${conn.failed} ${JSON.stringify(conn.errors)}`);
    log(`capacity run ${r + 1}/${nRuns}: CPU s while joining (${processes} client processes): ${JSON.stringify(conn.cpu)}`);
    await sleep(5000);
    const online = await onlineTotal(base);
    const rssAfter = pids.workers.map(server.rssKb);
    const perSocketKb = (rssAfter.reduce((a, x) => a + x, 0) - rssBefore.reduce((a, x) => a + x, 0)) / conn.joined;
    log(`capacity: online ${online}; RSS before ${rssBefore.join(' / ')} KiB, after ${rssAfter.join(' / ')} KiB: ${perSocketKb.toFixed(1)} KiB per socket`);
    // Fan-out at that load: writes to different devices, 10 per second.
    const deviceTokens = tokens;
    const w = await writeSeries(base, { count: writes, rate: 10, keyPrefix: 'cap-', tokenFor: i => deviceTokens[(i * 7) % devices] });
    await sleep(2000);
    const lat = await collectCapacity(conn.procs, w);
    log(`capacity: fan-out of ${w.length} writes at ${conn.joined} sockets: p50 ${lat.fromResponse.p50} p99 ${lat.fromResponse.p99} max ${lat.fromResponse.max} ms, missed ${lat.missed}/${lat.expected}`);
    await closeClients(conn.procs);
    runs.push({
      sockets, joined: conn.joined, failed: conn.failed, errors: conn.errors, joinSeconds: conn.seconds, joinRate, joinCpuSeconds: conn.cpu, online,
      workerPids: pids.workers, rssBeforeKb: rssBefore, rssAfterKb: rssAfter, perSocketKb: Math.round(perSocketKb * 100) / 100,
      fanout: lat, writeErrors: w.filter(x => x.status !== 200).length,
    });
    await shutdown();
  }
  const summary = {
    sockets,
    joinRate: median(runs.map(x => x.joinRate)),
    joinSeconds: median(runs.map(x => x.joinSeconds)),
    perSocketKb: median(runs.map(x => x.perSocketKb)),
    rssBeforeKb: runs[0].rssBeforeKb,
    rssAfterKb: runs[0].rssAfterKb,
    fanout: {
      p50: median(runs.map(x => x.fanout.fromResponse.p50)),
      p99: median(runs.map(x => x.fanout.fromResponse.p99)),
      max: median(runs.map(x => x.fanout.fromResponse.max)),
    },
    missed: runs.reduce((a, x) => a + x.fanout.missed, 0),
    failedJoins: runs.reduce((a, x) => a + x.failed, 0),
  };
  const targets = {
    '< 30 KB per socket': summary.perSocketKb * 1024 < 30 * 1000,
    'all sockets joined': summary.failedJoins === 0,
    'no missed deliveries': summary.missed === 0,
  };
  return { config: { ...cfg.capacity, addresses: `${addresses[0]}..${addresses[addresses.length - 1]}`, joinConcurrencyPerProcess: concurrency }, runs, summary, targets };
}

/**
 * Latency of the capacity writes. A write to device d is expected by the
 * `perDevice` sockets of d only, so expected and missed are counted here (the
 * clients' own count assumes every socket expects every write). A receipt by a
 * socket of another device would be a bug and shows as `misrouted`.
 */
async function collectCapacity(procs, writes) {
  const res = await collectReceipts(procs, writes);
  const expected = writes.length * cfg.capacity.perDevice;
  return { ...res, expected, missed: Math.max(0, expected - res.received), misrouted: Math.max(0, res.received - expected) };
}

// ---------------------------------------------------------------------------
// 4. Memory per joined socket (issue 13, target 2)

/** RSS in KiB of every process of the cluster: master, agent, each app worker. */
function clusterRss(pids) {
  const out = { master: server.rssKb(pids.master), agent: server.rssKb(pids.agent), workers: pids.workers.map(server.rssKb) };
  out.total = out.master + out.agent + out.workers.reduce((a, x) => a + x, 0);
  return out;
}

/**
 * Asks every app worker's bench/lib/heap-probe.js for a forced full GC and its heap
 * figures afterwards (and a heap snapshot if `snapshot`); resolves with one entry per worker.
 */
async function probeHeap(heapDir, workers, label, snapshot) {
  fs.writeFileSync(path.join(heapDir, 'request.json'), JSON.stringify({ label, snapshot }));
  for (const pid of workers) process.kill(pid, 'SIGUSR2');
  const deadline = Date.now() + (snapshot ? 300000 : 60000);
  const out = [];
  for (const pid of workers) {
    const file = path.join(heapDir, `${label}-${pid}.json`);
    while (!fs.existsSync(file)) {
      const err = path.join(heapDir, `error-${pid}.txt`);
      if (fs.existsSync(err)) throw new Error(`heap probe of ${pid}: ${fs.readFileSync(err, 'utf8')}`);
      if (Date.now() > deadline) throw new Error(`heap probe of ${pid} did not answer (${label})`);
      await sleep(100);
    }
    const r = JSON.parse(fs.readFileSync(file, 'utf8'));
    out.push({
      pid,
      heapUsedKb: Math.round(r.memoryUsage.heapUsed / 1024),
      heapTotalKb: Math.round(r.memoryUsage.heapTotal / 1024),
      externalKb: Math.round(r.memoryUsage.external / 1024),
      arrayBuffersKb: Math.round(r.memoryUsage.arrayBuffers / 1024),
      rssAfterGcKb: Math.round(r.memoryUsage.rss / 1024),
      snapshot: snapshot ? `${file.slice(0, -5)}.heapsnapshot` : undefined,
    });
  }
  return out;
}

/**
 * RSS of all processes as the server holds it, then the workers' heap after a forced GC,
 * then RSS of all processes again (`rssGc`: the forced GC gives pages back to the system).
 */
async function memoryPoint(heapDir, pids, label, snapshot = false) {
  const rss = clusterRss(pids);
  const heap = await probeHeap(heapDir, pids.workers, label, snapshot);
  const rssGc = clusterRss(pids);
  const heapUsedKb = heap.reduce((a, h) => a + h.heapUsedKb, 0);
  log(`memory ${label}: RSS total ${mib(rss.total)} MiB (master ${mib(rss.master)}, agent ${mib(rss.agent)}, ` +
    `workers ${rss.workers.map(mib).join(' / ')}); after a forced GC: RSS total ${mib(rssGc.total)} MiB ` +
    `(workers ${rssGc.workers.map(mib).join(' / ')}), heap used ${heap.map(h => mib(h.heapUsedKb)).join(' / ')} MiB, ` +
    `external ${heap.map(h => mib(h.externalKb)).join(' / ')} MiB`);
  return { at: new Date().toISOString(), rss, rssGc, heap, heapUsedKb };
}

const mib = kb => (kb / 1024).toFixed(1);
const signed = x => (Number(x) >= 0 ? `+${x}` : String(x));
const sumOf = xs => xs.reduce((a, x) => a + x, 0);
const perSocket = (a, b, n) => Math.round(((b - a) / n) * 100) / 100;

async function benchMemory() {
  const { devices, perDevice, processes, rounds, settleSeconds, snapshot } = cfg.memory;
  const addresses = loopbackRange(2, 33);
  const concurrency = 100;
  const sockets = devices * perDevice;
  const heapDir = path.join(logRoot, 'heap');
  fs.mkdirSync(heapDir, { recursive: true });
  const { base, pids } = await boot('memory', {
    // BENCH_NODE_OPTIONS: more options for the server's processes (e.g. --max-semi-space-size=4).
    NODE_OPTIONS: `${env.BENCH_NODE_OPTIONS ? `${env.BENCH_NODE_OPTIONS} ` : ''}--require=${path.join(__dirname, 'lib', 'heap-probe.js')}`,
    CKV_HEAP_DIR: heapDir,
  });
  log(`memory: creating ${devices} devices with a token each`);
  const tokens = await pool(Array.from({ length: devices }, (_, i) => `bench-mem-${String(i).padStart(5, '0')}`), 16,
    uuid => createDeviceWithToken(base, uuid));
  const socketTokens = [];
  for (let d = 0; d < devices; d++) for (let k = 0; k < perDevice; k++) socketTokens.push(tokens[d]);
  await sleep(3000);
  const start = await memoryPoint(heapDir, pids, 'start');
  const runs = [];
  let before = start;
  for (let r = 1; r <= rounds; r++) {
    const last = r === rounds;
    const conn = await connectClients({ mode: 'sio', url: base, tokens: socketTokens, processes, addresses, keyPrefix: 'mem-', concurrency });
    const joinRate = Math.round(conn.joined / conn.seconds);
    log(`memory round ${r}/${rounds}: ${conn.joined}/${sockets} joined in ${conn.seconds.toFixed(1)} s (${joinRate}/s), failed ${conn.failed} ${JSON.stringify(conn.errors)}`);
    await sleep(5000);
    const online = await onlineTotal(base);
    const joined = await memoryPoint(heapDir, pids, `round${r}-joined`, snapshot && last);
    await closeClients(conn.procs);
    await sleep(settleSeconds * 1000);
    const onlineAfterClose = await onlineTotal(base);
    const closed = await memoryPoint(heapDir, pids, `round${r}-closed`, snapshot && last);
    const run = {
      round: r, sockets, joined: conn.joined, failed: conn.failed, errors: conn.errors, joinSeconds: conn.seconds, joinRate, online, onlineAfterClose,
      before, afterJoin: joined, afterClose: closed,
      // The round starts right after the previous point's forced GC: its RSS then is the base.
      rssPerSocketKb: perSocket(before.rssGc.total, joined.rss.total, conn.joined),
      workersRssPerSocketKb: perSocket(sumOf(before.rssGc.workers), sumOf(joined.rss.workers), conn.joined),
      // Live memory only: both ends after a forced GC (what young-generation garbage does not explain).
      rssGcPerSocketKb: perSocket(before.rssGc.total, joined.rssGc.total, conn.joined),
      heapPerSocketKb: perSocket(before.heapUsedKb, joined.heapUsedKb, conn.joined),
      rssRetainedKb: closed.rssGc.total - before.rssGc.total,
    };
    log(`memory round ${r}: RSS ${signed(run.rssPerSocketKb)} KiB per socket (all processes; workers alone ${signed(run.workersRssPerSocketKb)}; ` +
      `both ends after a forced GC ${signed(run.rssGcPerSocketKb)}), ` +
      `heap after GC ${signed(run.heapPerSocketKb)} KiB per socket; online ${online}, after close ${onlineAfterClose}; ` +
      `RSS after close ${mib(closed.rss.total)} MiB, after a forced GC ${mib(closed.rssGc.total)} MiB (${signed(mib(run.rssRetainedKb))} MiB over the round's start)`);
    runs.push(run);
    before = closed;
  }
  await shutdown();
  const second = runs[Math.min(1, runs.length - 1)];
  const summary = {
    sockets,
    startRssKb: start.rssGc.total,
    rounds: runs.map(x => ({
      round: x.round, joinRate: x.joinRate, rssBeforeKb: x.before.rssGc.total, rssJoinedKb: x.afterJoin.rss.total,
      rssClosedKb: x.afterClose.rss.total, rssClosedGcKb: x.afterClose.rssGc.total, rssPerSocketKb: x.rssPerSocketKb, rssGcPerSocketKb: x.rssGcPerSocketKb, heapPerSocketKb: x.heapPerSocketKb, failed: x.failed,
    })),
    steadyRssPerSocketKb: second.rssPerSocketKb,
  };
  const targets = {
    'all sockets joined': runs.every(x => x.failed === 0 && x.joined === sockets),
    'steady state (round 2) <= 12 KiB per socket': second.rssPerSocketKb <= 12,
  };
  if (runs.length >= 3) {
    // No ratchet: the third round holds and ends where the second did (within 2 MiB per worker:
    // allocator noise). Compared after the forced GC: the readings before it move by tens of MiB
    // with the time of the workers' last collection (docs/PERFORMANCE.md §10).
    const slack = 2048 * pids.workers.length;
    targets['round 3 RSS after GC (joined, closed) not above round 2'] =
      runs[2].afterJoin.rssGc.total <= runs[1].afterJoin.rssGc.total + slack && runs[2].afterClose.rssGc.total <= runs[1].afterClose.rssGc.total + slack;
  }
  return {
    config: { ...cfg.memory, nodeOptions: env.BENCH_NODE_OPTIONS || null, addresses: `${addresses[0]}..${addresses[addresses.length - 1]}`, joinConcurrencyPerProcess: concurrency, heapDir },
    pids, start, runs, summary, targets,
  };
}

// ---------------------------------------------------------------------------
// Environment and main

function machine() {
  const cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8');
  const model = (cpuinfo.match(/^model name\s*:\s*(.*)$/m) || [])[1] || os.cpus()[0].model;
  const version = pkg => {
    try {
      return require(require.resolve(`${pkg}/package.json`, { paths: [ server.root ] })).version;
    } catch {
      return null;
    }
  };
  const sh = (cmd, args) => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8' }).trim();
    } catch {
      return null;
    }
  };
  return {
    nproc: os.cpus().length,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    cpuModel: model,
    kernel: os.release(),
    openFilesLimit: Number(sh('bash', [ '-c', 'ulimit -n' ])),
    node: process.version,
    egg: version('egg'),
    'egg-scripts': version('egg-scripts'),
    'socket.io': version('socket.io'),
    'socket.io-client': version('socket.io-client'),
    '@socket.io/redis-adapter': version('@socket.io/redis-adapter'),
    ws: version('ws'),
    autocannon: version('autocannon'),
    mariadb: sh('mysql', [ '-uroot', '-N', '-e', 'SELECT VERSION()' ]),
    redis: (sh('redis-cli', [ 'INFO', 'server' ]) || '').match(/redis_version:(\S+)/)?.[1] || null,
  };
}

async function main() {
  const known = [ 'http', 'fanout', 'capacity', 'memory' ];
  const wanted = process.argv.slice(2).filter(a => known.includes(a));
  // `memory` (about 4 minutes at full scale) runs only when named.
  const which = wanted.length ? wanted : known.filter(k => k !== 'memory');
  if (!fs.existsSync(path.join(cfg.dist, 'package.json'))) throw new Error(`${cfg.dist} is not built: run npm run build (or npm run bench)`);
  const results = { date: new Date().toISOString(), scale: small ? 'small' : 'full', machine: machine(), config: cfg, benchmarks: {} };
  log(`benchmarks: ${which.join(', ')} (${results.scale} scale), dist ${cfg.dist}, MySQL ${cfg.mysqlDb}, Redis db ${cfg.redisDb}`);
  server.resetWorld({ mysqlDb: cfg.mysqlDb, redisDb: cfg.redisDb });

  const outDir = path.join(__dirname, 'results');
  fs.mkdirSync(outDir, { recursive: true });
  const outFile = path.join(outDir, `${results.date.replace(/[:.]/g, '-')}.json`);
  const save = () => fs.writeFileSync(outFile, JSON.stringify(results, (k, v) => (v instanceof Float64Array ? undefined : v), 2) + '\n');

  const fns = { http: benchHttp, fanout: benchFanout, capacity: benchCapacity, memory: benchMemory };
  for (const name of which) {
    log(`== ${name}`);
    results.benchmarks[name] = await fns[name]();
    save();
  }
  printSummary(results);
  log(`raw results: ${path.relative(process.cwd(), outFile)}`);
}

function printSummary(results) {
  const b = results.benchmarks;
  const lines = [ '', `Summary (${results.scale} scale; medians of ${cfg.runs} runs, capacity: of ${cfg.capacity.runs})` ];
  if (b.http) {
    lines.push('HTTP, 64 connections over 2 workers:');
    for (const [ name, s ] of Object.entries(b.http.summary)) {
      lines.push(`  ${name.padEnd(26)} ${String(s.reqPerSec).padStart(7)} req/s  p50 ${s.p50} ms  p99 ${s.p99} ms  ${Math.round(s.ofCheck * 100)}% of /check  errors ${s.errors} non-2xx ${s.non2xx}`);
    }
  }
  if (b.fanout) {
    const { socketio: s, rawWs: w, p99Ratio } = b.fanout.summary;
    lines.push(`Fan-out, ${cfg.fanout.sockets} sockets, ${cfg.fanout.rate} writes/s for ${cfg.fanout.seconds} s (ms after the POST's response):`);
    lines.push(`  socket.io  p50 ${s.fromResponse.p50}  p99 ${s.fromResponse.p99}  max ${s.fromResponse.max}  missed ${s.missed}/${s.expected}`);
    if (s.writersWorker && s.otherWorker) {
      lines.push(`    by worker: the writer's p50 ${s.writersWorker.p50} p99 ${s.writersWorker.p99}; the other p50 ${s.otherWorker.p50} p99 ${s.otherWorker.p99}`);
    }
    lines.push(`  raw ws     p50 ${w.fromResponse.p50}  p99 ${w.fromResponse.p99}  max ${w.fromResponse.max}  missed ${w.missed}/${w.expected}`);
    lines.push(`  p99 ratio socket.io / raw ws: ${p99Ratio}; from the send: ${b.fanout.summary.p99RatioFromSend} (p99 ${s.fromSend.p99} / ${w.fromSend.p99} ms)`);
  }
  if (b.capacity) {
    const s = b.capacity.summary;
    lines.push(`Capacity, ${s.sockets} sockets: join ${s.joinRate}/s, ${s.perSocketKb} KiB per socket, fan-out p50 ${s.fanout.p50} p99 ${s.fanout.p99} max ${s.fanout.max} ms, missed ${s.missed}`);
  }
  if (b.memory) {
    const s = b.memory.summary;
    lines.push(`Memory, ${s.sockets} sockets joined and closed ${s.rounds.length} times on one server (RSS of all processes; heap after a forced GC):`);
    lines.push(`  start: RSS ${mib(s.startRssKb)} MiB (after a forced GC; each round starts right after one)`);
    for (const x of s.rounds) {
      lines.push(`  round ${x.round}: join ${x.joinRate}/s; RSS before ${mib(x.rssBeforeKb)}, joined ${mib(x.rssJoinedKb)}, ` +
        `closed ${mib(x.rssClosedKb)} (after a forced GC ${mib(x.rssClosedGcKb)}) MiB; per socket ${signed(x.rssPerSocketKb)} KiB RSS ` +
        `(${signed(x.rssGcPerSocketKb)} after a forced GC), ${signed(x.heapPerSocketKb)} KiB heap`);
    }
  }
  for (const [ name, r ] of Object.entries(b)) {
    for (const [ t, ok ] of Object.entries(r.targets)) lines.push(`  [${ok ? 'met' : 'MISSED'}] ${name}: ${t}`);
  }
  console.log(lines.join('\n'));
}

let stopping = false;
async function cleanup() {
  if (stopping) return;
  stopping = true;
  killChildren();
  await shutdown().catch(() => undefined);
}
for (const sig of [ 'SIGINT', 'SIGTERM' ]) {
  process.on(sig, () => cleanup().finally(() => process.exit(130)));
}
main().then(() => cleanup()).then(() => process.exit(0), async err => {
  console.error(err);
  await cleanup();
  process.exit(1);
});
