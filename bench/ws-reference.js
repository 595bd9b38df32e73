'use strict';

/**
 * The physical-limit reference for the fan-out benchmark (child of bench/run.js):
 * one Node process, a plain `ws` server and an HTTP endpoint. `POST /kv/:key`
 * reads the body, sends every connected client the same text frame Socket.IO
 * would send for that write (`42["kv-key-changed",{...}]`) and answers 200.
 * No database, no Redis, no Socket.IO, no egg: what is left is the kernel, the
 * loopback and the websocket framing the real server cannot avoid either.
 *
 * Reports { port } over IPC once listening; exits when the parent disconnects.
 */
const http = require('http');
const WebSocket = require('ws');

let revision = 0;
let wss = null;
const server = http.createServer((req, res) => {
  const m = req.method === 'POST' && req.url.match(/^\/kv\/([^/?]+)/);
  if (!m) {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  req.on('data', c => chunks.push(c));
  req.on('end', () => {
    JSON.parse(Buffer.concat(chunks).toString('utf8'));
    const key = decodeURIComponent(m[1]);
    const updatedAt = new Date().toISOString();
    revision++;
    const frame = '42' + JSON.stringify([ 'kv-key-changed', {
      uuid: 'bench-fanout-device', key, action: 'upsert', created: true, updatedAt, revision,
    }]);
    for (const client of wss.clients) {
      if (client.readyState === WebSocket.OPEN) client.send(frame);
    }
    const body = JSON.stringify({ deviceId: 1, key, created: true, updatedAt });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
  });
});
wss = new WebSocket.Server({ server, perMessageDeflate: false });

server.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }));
process.on('disconnect', () => process.exit(0));
