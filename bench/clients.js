'use strict';

/**
 * Realtime client process (child of bench/run.js): holds many sockets, records
 * when each `kv-key-changed` arrives, and computes latencies against the writer's
 * timestamps at the end. Several of these run side by side.
 *
 * mode "sio": socket.io-client 4 over the websocket transport, joining a device
 *             room with the handshake token (as the seed's examples do); a socket
 *             counts as joined when its `joined` event arrives.
 * mode "ws":  plain `ws` clients of bench/ws-reference.js; joined = open.
 *
 * Messages in (IPC, advanced serialization):
 *   { cmd: 'connect', mode, url, tokens: string[] (one per socket), addresses, concurrency, keyPrefix }
 *       -> { type: 'connected', joined, failed, startAt, endAt, errors }
 *   { cmd: 'collect', writes: [{ key, sentAt, respAt }] }
 *       -> { type: 'collected', fromResp: Float64Array, fromSend: Float64Array, expected, received, missed, disconnects }
 *   { cmd: 'reset' }  forget receipts so far -> { type: 'reset' }
 *   { cmd: 'close' }  disconnect everything and exit
 */
const { io } = require('socket.io-client');
const WebSocket = require('ws');
const { wallNow } = require('./lib/common');

const sockets = []; // { conn, receipts: Map<key, time> }
let keyPrefix = '';
let disconnects = 0;
let closing = false;

function record(entry, payload) {
  if (payload && typeof payload.key === 'string' && payload.key.startsWith(keyPrefix)) {
    if (!entry.receipts.has(payload.key)) entry.receipts.set(payload.key, wallNow());
  }
}

function connectSio(url, token, localAddress) {
  return new Promise(resolve => {
    const entry = { conn: null, receipts: new Map() };
    const socket = io(url, {
      transports: [ 'websocket' ],
      query: { token },
      reconnection: false,
      forceNew: true,
      timeout: 60000,
      localAddress,
    });
    entry.conn = socket;
    let settled = false;
    const done = result => {
      if (settled) return;
      settled = true;
      resolve(result);
    };
    socket.on('kv-key-changed', payload => record(entry, payload));
    socket.on('joined', () => done({ ok: true, entry }));
    socket.on('join-error', e => done({ ok: false, error: `join-error ${JSON.stringify(e)}`, entry }));
    socket.on('connect_error', err => done({ ok: false, error: `connect_error ${err.message}`, entry }));
    socket.on('disconnect', reason => {
      if (!closing) disconnects++;
      done({ ok: false, error: `disconnect ${reason}`, entry });
    });
  });
}

function connectWs(url, localAddress) {
  return new Promise(resolve => {
    const entry = { conn: null, receipts: new Map() };
    const ws = new WebSocket(url, { localAddress, perMessageDeflate: false });
    entry.conn = ws;
    let settled = false;
    const done = result => {
      if (settled) return;
      settled = true;
      resolve(result);
    };
    ws.on('message', data => {
      const text = data.toString();
      if (!text.startsWith('42')) return;
      const [ name, payload ] = JSON.parse(text.slice(2));
      if (name === 'kv-key-changed') record(entry, payload);
    });
    ws.on('open', () => done({ ok: true, entry }));
    ws.on('error', err => done({ ok: false, error: `error ${err.message}`, entry }));
    ws.on('close', () => {
      if (!closing) disconnects++;
      done({ ok: false, error: 'closed', entry });
    });
  });
}

async function connectAll(msg) {
  keyPrefix = msg.keyPrefix;
  const startAt = wallNow();
  let joined = 0;
  let failed = 0;
  const errors = {};
  let next = 0;
  const worker = async () => {
    while (next < msg.tokens.length) {
      const i = next++;
      const localAddress = msg.addresses[i % msg.addresses.length];
      const r = msg.mode === 'ws' ? await connectWs(msg.url, localAddress) : await connectSio(msg.url, msg.tokens[i], localAddress);
      r.entry.localAddress = localAddress;
      sockets.push(r.entry);
      if (r.ok) {
        joined++;
      } else {
        failed++;
        errors[r.error] = (errors[r.error] || 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(msg.concurrency, msg.tokens.length) }, worker));
  return { type: 'connected', joined, failed, startAt, endAt: wallNow(), errors };
}

function collect(writes) {
  const fromResp = [];
  const fromSend = [];
  // From the response, split by the parity of the socket's source address: the sticky
  // master puts odd and even addresses on different workers (bench/README.md).
  const fromRespByParity = { odd: [], even: [] };
  let missed = 0;
  for (const { receipts, localAddress } of sockets) {
    const parity = Number(localAddress.split('.').pop()) % 2 ? 'odd' : 'even';
    for (const w of writes) {
      const t = receipts.get(w.key);
      if (t === undefined) {
        missed++;
        continue;
      }
      fromResp.push(t - w.respAt);
      fromSend.push(t - w.sentAt);
      fromRespByParity[parity].push(t - w.respAt);
    }
  }
  return {
    type: 'collected',
    fromResp: Float64Array.from(fromResp),
    fromSend: Float64Array.from(fromSend),
    fromRespOdd: Float64Array.from(fromRespByParity.odd),
    fromRespEven: Float64Array.from(fromRespByParity.even),
    expected: sockets.length * writes.length,
    received: fromResp.length,
    missed,
    disconnects,
  };
}

process.on('message', async msg => {
  if (msg.cmd === 'connect') {
    process.send(await connectAll(msg));
  } else if (msg.cmd === 'collect') {
    process.send(collect(msg.writes));
  } else if (msg.cmd === 'reset') {
    for (const s of sockets) s.receipts.clear();
    process.send({ type: 'reset' });
  } else if (msg.cmd === 'close') {
    closing = true;
    for (const { conn } of sockets) {
      if (conn instanceof WebSocket) conn.terminate();
      else conn.disconnect();
    }
    setTimeout(() => process.exit(0), 200);
  }
});
process.on('disconnect', () => process.exit(0));
