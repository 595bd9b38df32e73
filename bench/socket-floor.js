#!/usr/bin/env node
'use strict';

/**
 * The floor under docs/PERFORMANCE.md §10: memory per connected socket of a bare server,
 * no egg, no application state, on this machine's Node.
 *
 *   node --expose-gc bench/socket-floor.js <sio|ws> [sockets]   (default 5000)
 *
 * sio: a plain Socket.IO 4 server (this repository's socket.io and engine.io, the
 *      server's options: allowEIO3, ping 25 s / 20 s, 1 MB buffer); each socket joins
 *      the room of its handshake token (10 sockets per token) and is sent `joined`.
 * ws:  a plain `ws` server (perMessageDeflate off, as engine.io's default).
 * Clients: bench/clients.js in 2 processes (websocket transport), source addresses
 * 127.0.0.2 – .33. Measured in this process: heap used after a forced GC and RSS
 * (after a forced GC too, so that only live memory counts), before connecting and
 * with every socket connected; then the clients close and it is measured again.
 */
const http = require('http');
const path = require('path');
const { fork } = require('child_process');

const mode = process.argv[2] || 'sio';
const sockets = Number(process.argv[3] || 5000);
if (typeof global.gc !== 'function') {
  console.error('run with node --expose-gc');
  process.exit(2);
}

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));
async function measure() {
  global.gc();
  await sleep(50);
  global.gc();
  const m = process.memoryUsage();
  return { heapUsedKb: m.heapUsed / 1024, rssKb: m.rss / 1024 };
}

async function main() {
  const server = http.createServer();
  if (mode === 'sio') {
    const { Server } = require('socket.io');
    const io = new Server(server, { allowEIO3: true, pingInterval: 25000, pingTimeout: 20000, maxHttpBufferSize: 1e6 });
    // FLOOR_DROP_REQUEST=1: Socket.IO's documented memory tip (the engine's reference to the request dropped).
    if (process.env.FLOOR_DROP_REQUEST === '1') io.engine.on('connection', raw => { raw.request = null; });
    io.on('connection', socket => {
      const token = socket.handshake.query.token;
      socket.join(String(token));
      socket.emit('joined', { token });
    });
  } else {
    const WebSocket = require('ws');
    new WebSocket.Server({ server, perMessageDeflate: false });
  }
  await new Promise(resolve => server.listen(0, '0.0.0.0', resolve));
  const { port } = server.address();
  const url = mode === 'sio' ? `http://127.0.0.1:${port}` : `ws://127.0.0.1:${port}`;
  await sleep(500);
  const before = await measure();
  const addresses = Array.from({ length: 32 }, (_, i) => `127.0.0.${i + 2}`);
  const tokens = Array.from({ length: sockets }, (_, i) => `t${Math.floor(i / 10)}`);
  const procs = [ 0, 1 ].map(() => fork(path.join(__dirname, 'clients.js'), [], { serialization: 'advanced' }));
  const replies = await Promise.all(procs.map((c, p) => new Promise(resolve => {
    c.once('message', resolve);
    c.send({ cmd: 'connect', mode, url, tokens: tokens.filter((_, i) => i % 2 === p), addresses, concurrency: 100, keyPrefix: 'x' });
  })));
  const joined = replies.reduce((a, r) => a + r.joined, 0);
  await sleep(3000);
  const held = await measure();
  await Promise.all(procs.map(c => new Promise(resolve => {
    c.once('exit', resolve);
    c.send({ cmd: 'close' });
  })));
  await sleep(3000);
  const after = await measure();
  const per = (a, b) => ((b - a) / joined).toFixed(2);
  console.log(`${mode}: ${joined}/${sockets} connected; per socket: heap ${per(before.heapUsedKb, held.heapUsedKb)} KiB, ` +
    `RSS ${per(before.rssKb, held.rssKb)} KiB (after a forced GC); heap used ${(before.heapUsedKb / 1024).toFixed(1)} → ` +
    `${(held.heapUsedKb / 1024).toFixed(1)} → ${(after.heapUsedKb / 1024).toFixed(1)} MiB after close; RSS ${(before.rssKb / 1024).toFixed(1)} → ` +
    `${(held.rssKb / 1024).toFixed(1)} → ${(after.rssKb / 1024).toFixed(1)} MiB`);
  process.exit(0);
}

main().catch(err => {
  console.error(err);
  process.exit(1);
});
