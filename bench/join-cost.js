#!/usr/bin/env node
'use strict';

/**
 * What one join costs, per process (issue 13, target 3):
 *
 *   node bench/join-cost.js [devices=500] [perDevice=10] [clientProcesses=4] [rounds=2]
 *
 * Starts the built server like bench/run.js (BENCH_DIST, BENCH_MYSQL_DB, BENCH_REDIS_DB;
 * the database is dropped and recreated, the Redis db flushed), creates `devices` devices
 * with a token each, reads /kv/_info once per token, then `rounds` times joins
 * devices × perDevice sockets (handshake token, capacity shape, fresh client processes
 * each round; round 0 is the server's first, cold) and prints per round: the join rate,
 * CPU microseconds per join of the workers, the master, Redis, MySQL and the client
 * processes (from /proc), the CPU the rest of the machine used meanwhile ("others"), the
 * Redis commands run (INFO commandstats, the whole Redis server: others' traffic included)
 * and MySQL's Com_select (the whole server too).
 */
const fs = require('fs');
const os = require('os');
const path = require('path');
const { fork, execFileSync } = require('child_process');
const server = require('./lib/server');
const { pool, request, loopbackRange, sleep } = require('./lib/common');
const { createDeviceWithToken } = require('./lib/seed');

const [ devices = 500, perDevice = 10, processes = 4, rounds = 2 ] = process.argv.slice(2).map(Number);
const dist = path.resolve(process.env.BENCH_DIST || path.join(server.root, 'dist'));
const mysqlDb = process.env.BENCH_MYSQL_DB || 'classworks_bench';
const redisDb = Number(process.env.BENCH_REDIS_DB || 10);

function redisCommands() {
  const out = execFileSync('redis-cli', [ 'INFO', 'commandstats' ], { encoding: 'utf8' });
  const calls = {};
  for (const line of out.split('\n')) {
    const m = line.match(/^cmdstat_(\w+):calls=(\d+)/);
    if (m) calls[m[1]] = Number(m[2]);
  }
  return calls;
}
const comSelect = () => Number(execFileSync('mysql', [ '-uroot', '-N', '-e', "SHOW GLOBAL STATUS LIKE 'Com_select'" ], { encoding: 'utf8' }).split('\t')[1]);
function machineBusy() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return (f.reduce((a, x) => a + x, 0) - f[3] - f[4]) / 100;
}
function ask(child, msg) {
  return new Promise(resolve => {
    child.once('message', resolve);
    child.send(msg);
  });
}

async function main() {
  server.resetWorld({ mysqlDb, redisDb });
  const port = await server.freePort();
  const title = `ckvbench-joincost-${port}-${process.pid}`;
  const base = await server.startServer({
    dist, port, title, workers: 2, logDir: path.join(os.tmpdir(), `ckvbench-joincost-${process.pid}`),
    env: server.benchEnv({ mysqlDb, redisDb }),
  });
  try {
    const pids = server.clusterPids(title);
    const tokens = await pool(Array.from({ length: devices }, (_, i) => `bench-joincost-${i}`), 16, u => createDeviceWithToken(base, u));
    await pool(tokens, 16, t => request(base, 'GET', '/kv/_info', { headers: { 'x-app-token': t } }));
    const svc = server.servicePids();
    const named = { master: pids.master, workers: pids.workers, redis: svc.redis, mysql: svc.mysql };
    const addresses = loopbackRange(2, 33);
    const socketTokens = tokens.flatMap(t => Array(perDevice).fill(t));
    for (let r = 0; r < rounds; r++) {
      await sleep(1500);
      const procs = Array.from({ length: processes }, () => fork(path.join(__dirname, 'clients.js'), [], { serialization: 'advanced' }));
      await Promise.all(procs.map(c => ask(c, { cmd: 'reset' })));
      const cpu = () => ({
        master: server.cpuSeconds(named.master),
        workers: named.workers.reduce((a, p) => a + server.cpuSeconds(p), 0),
        redis: server.cpuSeconds(named.redis),
        mysql: server.cpuSeconds(named.mysql),
        clients: procs.reduce((a, c) => a + server.cpuSeconds(c.pid), 0),
        machine: machineBusy(),
      });
      const c0 = cpu();
      const r0 = redisCommands();
      const s0 = comSelect();
      const replies = await Promise.all(procs.map((c, p) => ask(c, {
        cmd: 'connect', mode: 'sio', url: base, tokens: socketTokens.filter((_, i) => i % processes === p),
        addresses: addresses.map((_, i) => addresses[(p + i * processes) % addresses.length]), concurrency: 100, keyPrefix: 'x',
      })));
      const c1 = cpu();
      const r1 = redisCommands();
      const s1 = comSelect();
      const joined = replies.reduce((a, x) => a + x.joined, 0);
      const seconds = (Math.max(...replies.map(x => x.endAt)) - Math.min(...replies.map(x => x.startAt))) / 1000;
      const d = Object.fromEntries(Object.keys(c1).map(k => [ k, c1[k] - c0[k] ]));
      const perJoin = x => Math.round((x * 1e6) / joined);
      const usPerJoin = { workers: perJoin(d.workers), master: perJoin(d.master), redis: perJoin(d.redis), mysql: perJoin(d.mysql), clients: perJoin(d.clients) };
      const others = d.machine - d.workers - d.master - d.redis - d.mysql - d.clients;
      const commands = {};
      for (const [ k, v ] of Object.entries(r1)) if (v - (r0[k] || 0) > 0) commands[k] = v - (r0[k] || 0);
      console.log(JSON.stringify({
        round: r, joined, failed: replies.reduce((a, x) => a + x.failed, 0), seconds: Math.round(seconds * 100) / 100,
        rate: Math.round(joined / seconds), usPerJoin, othersCpuSeconds: Math.round(others * 100) / 100,
        redisCommands: commands, mysqlSelects: s1 - s0,
      }));
      await Promise.all(procs.map(c => new Promise(resolve => {
        c.once('exit', resolve);
        c.send({ cmd: 'close' });
      })));
    }
  } finally {
    await server.stopServer(title);
  }
}

main().catch(err => {
  console.error(err);
  process.exit(1);
});
