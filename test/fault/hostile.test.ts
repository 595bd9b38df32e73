import assert from 'node:assert';
import { REJOIN_BURST, REJOIN_REFILL_MS } from '../../app/lib/realtime';
import crypto from 'node:crypto';
import net from 'node:net';
import WebSocket from 'ws';
import { withTimeout, type TestClient } from '../support/socket';
import { Cluster, Rand, SEED, World, deviceWithToken, eventually, request, sleep } from './support';

const HTTP_REQUESTS = 10000;
const BODY_LIMIT_BYTES = 64 * 1024;
const RSS_SLACK_KB = 50 * 1024;
/** How long the workers' RSS may take to come back down after the load. */
const SETTLE_MS = 180 * 1000;

interface Generated {
  bytes: Buffer;
  label: string;
  /** The body exceeds BODY_LIMIT: the server may answer 413 and reset the connection before we read the answer. */
  oversized: boolean;
}

interface RawAnswer {
  status: number | null;
  error?: string;
}

/** Sends raw bytes on a fresh connection and reads the status line of the answer. */
function rawRequest(port: number, localAddress: string, bytes: Buffer, timeoutMs = 15000): Promise<RawAnswer> {
  return new Promise(resolve => {
    const s = net.connect({ host: '127.0.0.1', port, localAddress });
    let head = '';
    let done = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = (error?: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(head);
      resolve({ status: m ? Number(m[1]) : null, error: m ? undefined : error ?? `no status line: ${JSON.stringify(head.slice(0, 80))}` });
    };
    timer = setTimeout(() => finish('timeout'), timeoutMs);
    s.on('connect', () => s.write(bytes));
    s.on('data', d => {
      if (head.length < 64) head += d.toString('latin1');
      if (/^HTTP\/1\.[01] \d{3}/.test(head)) finish();
    });
    s.on('error', err => finish((err as NodeJS.ErrnoException).code ?? err.message));
    s.on('close', () => finish('closed'));
  });
}

/** A generator of hostile HTTP requests (methods, paths, headers, bodies), deterministic for a seed. */
class HostileHttp {
  constructor(private readonly r: Rand, private readonly token: string, private readonly uuid: string) {}

  private key(): string {
    const r = this.r;
    return r.pick([
      () => r.string(1 + r.int(20)),
      () => r.pick([ '_info', '_keys', '_batchimport', '__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', '_info/metadata', 'metadata' ]),
      () => r.pick([ '%', '%zz', '%E0%A4', '%C0%AF', '%FF', '%ED%A0%80', '%00', '%2e%2e%2f', 'a%2Fb', '%F0%9F%98%80', '%u0041' ]),
      () => 'k'.repeat(150 + r.int(100)),
      () => encodeURIComponent(r.bytes(1 + r.int(10)).toString('latin1')),
    ])();
  }

  private path(): string {
    const r = this.r;
    const uuid = r.chance(0.5) ? this.uuid : this.key();
    const q = () => r.pick([
      '', '?limit=5', '?limit=-1', '?limit=1e309', '?limit=abc', '?skip=-5', '?skip=99999999999999999999', '?sortBy=__proto__',
      '?sortBy[$ne]=1', '?sortDir=sideways', '?limit[]=1&limit[]=2', '?token[]=a&token[]=b', '?__proto__[x]=1',
      '?constructor[prototype][x]=1', `?token=${this.token}`, '?token=', '?apptoken=%FF', `?uuid=${this.uuid}`, '?device_code=%',
      `?${'a'.repeat(3000)}=1`, '?a=%E0%A4%A',
    ]);
    return r.pick([
      () => `/kv/${this.key()}${q()}`,
      () => `/kv/${this.key()}/metadata`,
      () => `/kv${q()}`,
      () => `/kv/_keys${q()}`,
      () => '/kv/_batchimport',
      () => '/devices',
      () => `/devices/online${q()}`,
      () => `/devices/${uuid}`,
      () => `/devices/${uuid}/${r.pick([ 'name', 'password', 'password-hint' ])}${q()}`,
      () => `/apps/devices/${uuid}/install/${this.key()}`,
      () => `/apps/devices/${uuid}/uninstall/${this.key()}`,
      () => `/apps/devices/${uuid}/apps`,
      () => `/apps/tokens${q()}`,
      () => `/auth/device/${r.pick([ 'code', 'bind', 'token', 'status' ])}${q()}`,
      // ClassworksKV 1.3 routes (CONTRACT.md §6).
      () => `/kv/_token${q()}`,
      () => `/kv/_changes${r.pick([ '', '?since=0', '?since=-1', '?since=99999999999999999999', '?since=0&limit=0', '?since=1e3', '?since[]=1' ])}`,
      () => `/apps/auth/token${q()}`,
      () => `/auto-auth/devices/${uuid}/auth-configs${r.chance(0.5) ? `/${this.key()}` : ''}${q()}`,
      () => `/auto-auth/devices/${uuid}/namespace${q()}`,
      () => `/apps/tokens/${r.chance(0.5) ? this.token : this.key()}/${r.pick([ 'set-student-name', 'set-teacher-name', 'note' ])}${q()}`,
      () => r.pick([ '/metrics', '/ready' ]) + q(),
      () => r.pick([ '/', '/check', '/favicon.ico', '/socket.io/', '/socket.io/?EIO=4&transport=polling&sid=nope', '/socket.io/?EIO=9' ]),
      () => r.pick([ '/nope', '/kv/a/b/c', '/../etc/passwd', '//kv', '/kv//x', '/%2e%2e/', '/devices/online/extra', '/apps', '/auth' ]),
      () => `/${r.string(1 + r.int(4000))}`,
      // Raw bytes that are not UTF-8 (and not percent-encoded) in the path.
      () => `/kv/\u00ff\u00fe${r.bytes(4).toString('latin1')}`,
    ])();
  }

  private body(): { bytes: Buffer; type?: string; label: string } {
    const r = this.r;
    const json = (v: string, label: string) => ({ bytes: Buffer.from(v, 'utf8'), type: 'application/json', label });
    return r.pick([
      () => json(JSON.stringify({ a: r.int(1000), s: r.string(20), arr: [ 1, 'x', null ], token: r.chance(0.3) ? this.token : undefined }), 'json'),
      () => json(JSON.stringify([]), 'empty array'),
      () => json(r.pick([ '{', '{"a":', '{"a":1,}', '[1,2', 'nul', '"str"', '42', 'true', 'null', '', ' ', '{"a":1}{"b":2}', '\u0000', '{"a":"\\x"}' ]), 'malformed json'),
      () => json('{"__proto__":{"polluted":1},"a":1}', '__proto__'),
      () => json('{"a":{"__proto__":{"polluted":1}}}', 'nested __proto__'),
      () => json('{"constructor":{"prototype":{"polluted":1}}}', 'constructor.prototype'),
      () => {
        const depth = r.pick([ 100, 1000, 5000, 20000, 30000 ]);
        return json('['.repeat(depth) + ']'.repeat(depth), `nested ${depth}`);
      },
      () => {
        const depth = r.pick([ 1000, 10000 ]);
        return json('{"a":'.repeat(depth) + '1' + '}'.repeat(depth), `nested objects ${depth}`);
      },
      () => json(JSON.stringify({ big: 'x'.repeat(BODY_LIMIT_BYTES + r.int(4 * BODY_LIMIT_BYTES)) }), 'oversized'),
      () => json(`{"n":${r.pick([ '1e400', '-0', '123456789012345678901234567890', 'NaN', 'Infinity', '0x10' ])}}`, 'numbers'),
      () => json('{"s":"\\ud800","t":"\\u0000","u":"\\uffff"}', 'bad escapes'),
      () => ({ bytes: Buffer.concat([ Buffer.from('{"bad":"'), Buffer.from([ 0xff, 0xfe, 0xc3, 0x28, 0xed, 0xa0, 0x80 ]), Buffer.from('"}') ]), type: 'application/json', label: 'bad utf-8' }),
      () => ({ bytes: r.bytes(r.int(2000)), type: r.pick([ 'application/json', 'application/octet-stream', 'text/plain' ]), label: 'random bytes' }),
      () => ({ bytes: Buffer.from(`token=${this.token}&a[b][c][d][e][f][g]=1&__proto__[x]=1&constructor[prototype][y]=2`), type: 'application/x-www-form-urlencoded', label: 'form' }),
      () => ({ bytes: Buffer.from('{"a":1}'), type: r.pick([ 'application/json; charset=utf-16', 'application/json; charset=nope', 'text/json', 'multipart/form-data; boundary=x', 'application/vnd.api+json' ]), label: 'content types' }),
      () => ({ bytes: Buffer.from('{"a":1}'), type: 'text/plain', label: 'text' }),
      () => ({ bytes: Buffer.alloc(0), type: r.chance(0.5) ? 'application/json' : undefined, label: 'no body' }),
    ])();
  }

  /** Requests that always go to real handlers with a valid token (the random ones mostly fail earlier). */
  targeted(): Generated[] {
    const post = (p: string, body: Buffer | string, type = 'application/json') => {
      const b = Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8');
      return {
        bytes: Buffer.concat([ Buffer.from(`POST ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nx-app-token: ${this.token}\r\n` +
          `Content-Type: ${type}\r\nContent-Length: ${b.length}\r\n\r\n`, 'latin1'), b ]),
        label: `targeted POST ${p.slice(0, 40)} ${b.slice(0, 30).toString('latin1')}`,
        oversized: b.length > BODY_LIMIT_BYTES,
      };
    };
    const deep = (n: number) => '['.repeat(n) + ']'.repeat(n);
    const deepObj = (n: number) => '{"a":'.repeat(n) + '1' + '}'.repeat(n);
    return [
      ...[ 100, 1000, 5000, 10000, 20000, 32000 ].map(n => post(`/kv/deep-${n}`, deep(n))),
      ...[ 1000, 5000, 10000 ].map(n => post(`/kv/deepobj-${n}`, deepObj(n))),
      post('/kv/_batchimport', `{"a":${deep(20000)}}`),
      post('/kv/_batchimport', `{"a":${deepObj(8000)}}`),
      post('/kv/_batchimport', '{"__proto__":{"x":1},"b":{}}'),
      post('/kv/_batchimport', '{"constructor":{"prototype":{"x":1}}}'),
      post('/kv/_batchimport', `{${Array.from({ length: 1500 }, (_, i) => `"k${i}":{}`).join(',')}}`),
      post('/kv/_batchimport', `{"${'k'.repeat(300)}":{}}`),
      post('/kv/_batchimport', '[1,2,3]'),
      post('/kv/_batchimport', '{"token":"x"}'),
      post('/kv/proto', '{"__proto__":{"polluted":1},"a":1}'),
      post('/kv/constructor', '{"constructor":{"prototype":{"polluted":1}}}'),
      post('/kv/__proto__', '{"a":1}'),
      post('/kv/big', JSON.stringify({ big: 'x'.repeat(BODY_LIMIT_BYTES * 3) })),
      post('/kv/bad-utf8', Buffer.concat([ Buffer.from('{"bad":"'), Buffer.from([ 0xff, 0xfe, 0xc3, 0x28, 0xed, 0xa0, 0x80, 0xf4, 0x90, 0x80, 0x80 ]), Buffer.from('"}') ])),
      post('/kv/surrogates', '{"s":"\\ud800\\udfff\\ud83d","t":"\\u0000"}'),
      post('/kv/numbers', '{"a":1e400,"b":-0,"c":123456789012345678901234567890}'),
      post('/kv/emoji-%F0%9F%98%80', '{"e":"😀"}'),
      post('/kv/nul-%00', '{}'),
      post('/kv/form', `a[b][c][d][e][f][g][h][i][j][k]=1&${'x[]=1&'.repeat(2000)}__proto__[y]=1`, 'application/x-www-form-urlencoded'),
      post('/kv/text', 'just text', 'text/plain'),
      post('/kv/utf16', Buffer.from('{"a":1}', 'utf16le'), 'application/json; charset=utf-16'),
      post('/kv/latin1', Buffer.from('{"a":"\u00e9"}', 'latin1'), 'application/json; charset=latin1'),
      post(`/kv/${'k'.repeat(192)}`, '{}'),
      post(`/kv/${'%F0%9F%98%80'.repeat(191)}`, '{}'),
      post('/devices', `{"uuid":${deep(10000).slice(0, 5000)}`),
      post('/devices', '{"uuid":{"a":1},"deviceName":["x"]}'),
      post('/devices', `{"uuid":"${'u'.repeat(5000)}","deviceName":"x"}`),
      post('/devices', '{"uuid":"\\ud800","deviceName":"\\u0000"}'),
      post('/auth/device/bind', '{"device_code":{"$gt":""},"token":["a"]}'),
      post(`/devices/${encodeURIComponent(this.uuid)}/password`, '{"newPassword":{"a":1}}'),
      // ClassworksKV 1.3 routes with bodies of the wrong shape.
      post('/devices', `{"uuid":"ns-${this.r.int(1e9)}","deviceName":"x","namespace":${this.r.pick([ '{"a":1}', '["x"]', `"${'n'.repeat(5000)}"`, '"\u0000"', '1e400' ])}}`),
      post('/apps/auth/token', `{"namespace":${JSON.stringify(this.uuid)},"appId":{"$ne":1},"password":["x"]}`),
      post('/apps/auth/token', `{"namespace":"${'n'.repeat(300)}","appId":"a"}`),
      post('/apps/auth/token', `{"namespace":${JSON.stringify(this.uuid)},"appId":"a","password":"${'p'.repeat(100000)}"}`),
      post(`/auto-auth/devices/${encodeURIComponent(this.uuid)}/auth-configs`, '{"password":{"a":1},"deviceType":["teacher"],"isReadOnly":"yes"}'),
      post(`/auto-auth/devices/${encodeURIComponent(this.uuid)}/auth-configs`, `{"password":"${'p'.repeat(100000)}","deviceType":"__proto__"}`),
      post(`/apps/tokens/${this.token}/set-student-name`, '{"name":{"toString":1}}'),
      post(`/apps/tokens/${this.token}/set-teacher-name`, `{"name":"${'n'.repeat(100000)}"}`),
      post('/kv/classworks-list-main', `[${'{"name":{"a":1}},1,null,'.repeat(500)}"x"]`),
      post(`/apps/tokens/${this.token}/set-student-name`, '{"name":"x"}'),
    ];
  }

  next(): Generated {
    const r = this.r;
    const method = r.pick([ 'GET', 'GET', 'POST', 'POST', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS', 'TRACE', 'PROPFIND', 'get' ]);
    const headers: string[] = [ 'Host: 127.0.0.1', 'Connection: close' ];
    const tokenHeader = r.pick([
      () => `x-app-token: ${this.token}`,
      () => `Authorization: Bearer ${this.token}`,
      () => `x-app-token: ${r.string(64, '0123456789abcdef')}`,
      () => `x-app-token: ${'t'.repeat(r.pick([ 255, 256, 5000 ]))}`,
      () => `Authorization: ${r.pick([ 'Bearer', 'Bearer ', 'Basic Zm9vOmJhcg==', 'Bearer a b c' ])}`,
      () => 'x-app-token: \u00ff\u00fe',
      () => '',
    ])();
    if (tokenHeader) headers.push(tokenHeader);
    if (r.chance(0.2)) headers.push(`x-device-uuid: ${r.pick([ this.uuid, 'other', '' ])}`);
    if (r.chance(0.2)) headers.push(`x-device-password: ${r.pick([ 'wrong', '', 'x'.repeat(2000) ])}`);
    if (r.chance(0.1)) headers.push(`Origin: ${r.pick([ 'https://evil.example', 'null', '*' ])}`);
    if (r.chance(0.05)) headers.push('Content-Encoding: gzip');
    if (r.chance(0.03)) headers.push(`X-Big: ${'h'.repeat(20000)}`);
    let body: Buffer = Buffer.alloc(0);
    let label = 'no body';
    if (method !== 'GET' || r.chance(0.1)) {
      const b = this.body();
      body = b.bytes;
      label = b.label;
      if (b.type) headers.push(`Content-Type: ${b.type}`);
    }
    const chunked = body.length > 0 && r.chance(0.1);
    if (chunked) headers.push('Transfer-Encoding: chunked');
    else if (body.length > 0 || r.chance(0.5)) headers.push(`Content-Length: ${body.length}`);
    const p = this.path();
    const head = Buffer.from(`${method} ${p} HTTP/1.1\r\n${headers.join('\r\n')}\r\n\r\n`, 'latin1');
    const payload = chunked ? Buffer.concat([ Buffer.from(`${body.length.toString(16)}\r\n`), body, Buffer.from('\r\n0\r\n\r\n') ]) : body;
    return {
      bytes: Buffer.concat([ head, payload ]),
      label: `${method} ${p.slice(0, 60)} [${label}]`,
      oversized: body.length > BODY_LIMIT_BYTES,
    };
  }
}

describe('test/fault/hostile.test.ts', () => {
  const world = new World('fault_hostile', {
    BODY_LIMIT: '64kb',
    // Hostile input must reach the handlers instead of being stopped by the quotas.
    RATE_LIMIT_IP: '0', RATE_LIMIT_KV_READ: '0', RATE_LIMIT_KV_WRITE: '0', RATE_LIMIT_KV_DELETE: '0', RATE_LIMIT_KV_BATCH: '0', RATE_LIMIT_PASSWORD: '0',
    RATE_LIMIT_EVENTS: '0', RATE_LIMIT_HISTORY: '0',
  });
  let c: Cluster;
  let device: { uuid: string; token: string };
  let pids: number[];
  let master: number;
  const baseline = new Map<number, number>();

  before(async () => {
    await world.start();
    c = world.cluster;
    device = await deviceWithToken(c, 'hostile-dev');
    pids = c.workerPids();
    master = c.masterPid;
    // Warm both workers up (code paths, pools) before taking their starting RSS.
    for (let i = 0; i < 100; i++) {
      const localAddress = i % 2 ? '127.0.0.3' : '127.0.0.2';
      await request(c, 'POST', `/kv/warm-${i % 10}`, { body: { i }, headers: { 'x-app-token': device.token }, localAddress });
      await request(c, 'GET', `/kv/warm-${i % 10}`, { headers: { 'x-app-token': device.token }, localAddress });
    }
    for (const pid of pids) baseline.set(pid, Cluster.rssKb(pid));
  });

  after(async () => {
    await world.stop();
  });

  it(`${HTTP_REQUESTS} generated hostile HTTP requests (seed ${SEED}): zero 5xx, every request answered, no worker dies`, async () => {
    const gen = new HostileHttp(new Rand(SEED), device.token, device.uuid);
    const requests: Generated[] = gen.targeted();
    while (requests.length < HTTP_REQUESTS) requests.push(gen.next());
    const statuses: Record<string, number> = {};
    const serverErrors: string[] = [];
    const unanswered: string[] = [];
    let next = 0;
    await Promise.all(Array.from({ length: 24 }, async (_, w) => {
      while (next < requests.length) {
        const i = next++;
        const g = requests[i];
        const a = await rawRequest(c.port, w % 2 ? '127.0.0.3' : '127.0.0.2', g.bytes);
        const k = a.status === null ? `no answer (${a.error})` : String(a.status);
        if (process.env.FAULT_DEBUG && g.label.startsWith('targeted')) console.log(`      ${k} ${g.label.replace(/[\r\n]/g, ' ')}`);
        statuses[k] = (statuses[k] ?? 0) + 1;
        if (a.status !== null && a.status >= 500) serverErrors.push(`#${i} ${a.status} ${g.label}`);
        // An oversized body may be refused (413) and the connection reset before the answer is read.
        if (a.status === null && !(g.oversized && /ECONNRESET|EPIPE|closed/.test(a.error ?? ''))) unanswered.push(`#${i} ${a.error} ${g.label}`);
      }
    }));
    console.log(`      answers: ${JSON.stringify(statuses)}`);
    assert.deepStrictEqual(serverErrors.slice(0, 20), [], `${serverErrors.length} answers were 5xx`);
    assert.deepStrictEqual(unanswered.slice(0, 20), [], `${unanswered.length} requests were not answered`);
    assert.strictEqual(c.masterPid, master);
    assert.deepStrictEqual(c.workerPids(), pids);
    assert.deepStrictEqual(c.grepLogs(/AppWorkerDiedError|AgentWorkerDiedError/), []);
  });

  it(`hostile Socket.IO payloads (seed ${SEED}): wrong types, huge payloads, thousands of join-token emits, junk send-event ` +
    'and get-event-history, unknown events and garbage frames; no worker dies and the channel still works', async () => {
    const r = new Rand(SEED + 1);
    const sockets: TestClient[] = [];
    for (let i = 0; i < 6; i++) {
      sockets.push(world.socket({ localAddress: i % 2 ? '127.0.0.3' : '127.0.0.2', transport: i % 3 === 2 ? 'polling' : 'websocket' }));
    }
    await eventually(() => assert.ok(sockets.every(s => s.connected)), 15000);
    const junk = (): unknown => r.pick([
      () => r.int(1000), () => null, () => undefined, () => true, () => r.string(10), () => [ device.token ],
      () => ({ token: r.int(5) }), () => ({ token: [ device.token ] }), () => ({ token: { $ne: null } }), () => ({ token: '' }),
      () => ({ apptoken: null, token: null }), () => ({ token: 'x'.repeat(r.pick([ 256, 10000, 200000 ])) }),
      () => ({ token: device.token }), () => ({ apptoken: device.token }), () => ({ token: r.string(64, '0123456789abcdef') }),
      () => ({ __proto__: { token: device.token } }), () => JSON.parse('{"__proto__":{"token":"x"}}'),
      () => Buffer.from(r.bytes(100)), () => ({ nested: JSON.parse('['.repeat(500) + ']'.repeat(500)) }),
      // send-event / get-event-history shapes
      () => ({ type: r.pick([ 'chat', ' kv-key-changed ', 'joined', '', 'x'.repeat(101), '\u0000', '\ud800', r.string(20) ]),
        content: r.pick([ null, {}, [], 'text', 1, { s: 'z'.repeat(r.pick([ 10, 10233, 50000 ])) }, JSON.parse('{"__proto__":{"p":1}}') ]) }),
      () => ({ type: { $ne: null }, content: { a: 1 } }), () => JSON.parse('{"type":"__proto__","content":{"__proto__":{"polluted":1}}}'),
      () => ({ limit: r.pick([ 0, 1, 50, 1000, 1001, -1, 1.5, '10', null, 1e300, { $gt: 0 }]), offset: r.pick([ 0, -1, 2 ** 53, 'x', null, 5 ]) }),
    ])();
    const events = [ 'join-token', 'leave-token', 'leave-all', 'kv-key-changed', 'device-joined', 'unknown', 'joined', 'x'.repeat(1000), '__proto__', 'constructor',
      'send-event', 'send-event', 'get-event-history', 'get-event-history' ];
    let emitted = 0;
    for (let round = 0; round < 3000; round++) {
      const s = sockets[round % sockets.length];
      const ev = round % 3 === 0 ? 'join-token' : r.pick(events);
      const args = Array.from({ length: r.int(3) }, junk);
      if (r.chance(0.5)) s.raw.emit(ev, ...args, () => undefined);
      else s.raw.emit(ev, ...args);
      emitted += 1;
      if (round % 200 === 0) await sleep(10);
    }
    // Valid joins in bulk: thousands of acknowledged join-token emits. A socket holds at most
    // 64 pending operations (app/lib/realtime.ts): beyond, a join is answered too_many_requests
    // at once; past its packet budget (SOCKET_PACKET_BURST, app/io/middleware/packetLimit.ts)
    // a packet is refused the same way, and a burst of refusals in a row disconnects the socket.
    const validJoin = { token: device.token };
    const bulk = await Promise.all(sockets.slice(0, 2).map(async s => {
      const answers: any[] = [];
      const ended = new Promise<void>(resolve => {
        if (!s.connected) return resolve();
        s.raw.once('disconnect', () => resolve());
        const onAck = (a: any) => (answers.push(a) === 1000 ? resolve() : undefined);
        for (let i = 0; i < 1000; i++) s.raw.emit('join-token', validJoin, onAck);
      });
      await withTimeout(ended, 'the bulk joins to be answered or the socket disconnected', 60000);
      return answers;
    }));
    const acceptable = (a: any) => (a.ok === true && a.uuid === device.uuid) || (a.ok === false && a.reason === 'too_many_requests');
    assert.deepStrictEqual(bulk.flat().filter(a => !acceptable(a)), []);
    // Payloads above maxHttpBufferSize (1e6): the server drops that connection, nothing else.
    sockets[4].raw.emit('join-token', { token: 'y'.repeat(2e6) });
    sockets[5].raw.emit('unknown', Buffer.alloc(3e6));

    // Garbage engine.io / socket.io frames on raw websockets.
    const garbage = [ '4', '42', '42[', '42["join-token"', '42[1,2,3]', '42{"a":1}', '451-["join-token",{"_placeholder":true,"num":9}]',
      '41', '40/nope,', '43', '44', '46', '2probe', '9', '', '\u0000', '42["join-token",{"token":' + '['.repeat(5000) + ']'.repeat(5000) + '}]' ];
    for (let i = 0; i < 10; i++) {
      const ws = new WebSocket(`${c.url().replace('http', 'ws')}/socket.io/?EIO=4&transport=websocket`, { localAddress: i % 2 ? '127.0.0.3' : '127.0.0.2' } as any);
      await new Promise<void>(resolve => {
        ws.on('open', () => {
          ws.send('40');
          for (let j = 0; j < 60; j++) ws.send(r.chance(0.2) ? r.bytes(r.int(200)) : r.pick(garbage));
          setTimeout(() => {
            ws.terminate();
            resolve();
          }, 200);
        });
        ws.on('error', () => resolve());
      });
      emitted += 61;
    }
    console.log(`      ${emitted + 2000} hostile socket messages sent`);
    for (const s of sockets) s.close();

    // Still one healthy cluster: fresh clients on both workers join and receive changes. From
    // other addresses: .2 and .3 sprayed random tokens, past RATE_LIMIT_TOKEN_FAILURES an
    // uncached token is refused from them for the rest of the minute (.4 and .5 land on the
    // same workers as .2 and .3: egg's sticky master takes the address digits modulo 2).
    assert.strictEqual(c.masterPid, master);
    assert.deepStrictEqual(c.workerPids(), pids);
    const a = await world.joined({ token: device.token, localAddress: '127.0.0.4' });
    const b = await world.joined({ token: device.token, localAddress: '127.0.0.5' });
    const res = await request(c, 'POST', '/kv/after-hostile', { body: { ok: true }, headers: { 'x-app-token': device.token } });
    assert.strictEqual(res.status, 200, res.text);
    for (const s of [ a, b ]) await s.waitFor('kv-key-changed', p => p.key === 'after-hostile');
    // Relayed events and the history still work across the workers.
    const relayed = await a.request('send-event', { type: 'after-hostile', content: { ok: true } });
    assert.strictEqual(relayed.ok, true, JSON.stringify(relayed));
    assert.deepStrictEqual((await b.waitFor('after-hostile', p => p.eventId === relayed.eventId)).content, { ok: true });
    const mark = b.mark();
    assert.deepStrictEqual(await b.request('get-event-history', { limit: 1 }), { ok: true });
    const history = await b.waitFor('event-history', undefined, { since: mark });
    assert.strictEqual(history.devices[device.uuid][0].eventId, relayed.eventId);
    // Presence counts only what is really connected.
    await eventually(async () => {
      const online = await request(c, 'GET', '/devices/online');
      assert.deepStrictEqual(online.json.devices, [{ uuid: device.uuid, connections: 2, name: `Device ${device.uuid}` }]);
    }, 15000);
    a.close();
    b.close();
    assert.deepStrictEqual(c.grepLogs(/AppWorkerDiedError|AgentWorkerDiedError/), []);
  });

  it('worker RSS settles back near its starting level (< +50 MB)', async () => {
    const now = () => pids.map(pid => `${pid}: ${Math.round(baseline.get(pid)! / 1024)} MB -> ${Math.round(Cluster.rssKb(pid) / 1024)} MB`).join(', ');
    console.log(`      right after the load: ${now()}`);
    // V8 gives the grown heap back lazily: on this 2-core box the drop came 40-60 s after
    // the load ended (a 60 s wait once missed it by a little in CI), so allow 3 minutes.
    const started = Date.now();
    await eventually(() => {
      for (const pid of pids) assert.ok(Cluster.rssKb(pid) < baseline.get(pid)! + RSS_SLACK_KB, `RSS ${now()}`);
    }, SETTLE_MS, 1000);
    console.log(`      settled after ${Math.round((Date.now() - started) / 1000)} s: ${now()}`);
  });
});

/**
 * The floods of issue 10 against a real cluster with the default limits
 * (SOCKET_PACKET_RATE/BURST, RATE_LIMIT_TOKEN_FAILURES, the per-socket queue): one client
 * must not exhaust a worker. Latency is reported, not asserted (bench/flood.js and
 * docs/PERFORMANCE.md hold the numbers).
 */
describe('test/fault/hostile.test.ts floods (issue 10)', () => {
  // The default limits, but 200 packets/s per socket: (7) must get 2,001 joins through in seconds.
  const world = new World('fault_floods', { RATE_LIMIT_IP: '0', SOCKET_PACKET_RATE: '200' });
  let c: Cluster;
  let device: { uuid: string; token: string };
  const randomToken = () => crypto.randomBytes(32).toString('hex');
  const p99 = (values: number[]) => [ ...values ].sort((a, b) => a - b)[Math.max(0, Math.ceil(values.length * 0.99) - 1)] ?? 0;

  /** A source address whose connections the sticky master hands to `pid` (other than `not`). */
  async function addressOn(pid: number, not: string[]): Promise<string> {
    for (let i = 10; i < 60; i++) {
      const a = `127.0.0.${i}`;
      if (!not.includes(a) && await c.workerFor(a) === pid) return a;
    }
    throw new Error(`no address maps to worker ${pid}`);
  }

  before(async () => {
    await world.start();
    c = world.cluster;
    device = await deviceWithToken(c, 'flood-dev');
  });

  after(async () => {
    await world.stop();
  });

  it('(1) 50,000 join-token with random tokens on one websocket: the worker\'s RSS grows < 50 MB, the flooder is disconnected, a concurrent client on the same worker is served throughout', async () => {
    const FLOOD = 50000;
    const flooderAddress = '127.0.0.9';
    const pid = await c.workerFor(flooderAddress);
    const clientAddress = await addressOn(pid, [ flooderAddress ]);
    const member = await world.joined({ token: device.token, localAddress: clientAddress, transport: 'websocket', reconnection: false });
    // Warm the worker up (code paths, pools, a first small flood) before its starting RSS.
    const warm = world.socket({ localAddress: flooderAddress, transport: 'websocket', reconnection: false });
    await warm.waitConnected();
    for (let i = 0; i < 5; i++) await Promise.all(Array.from({ length: 50 }, () => warm.requestWithin(30000, 'join-token', { token: randomToken() })));
    warm.close();
    for (let i = 0; i < 50; i++) {
      const res = await request(c, 'GET', '/kv/_info', { headers: { 'x-app-token': device.token }, localAddress: clientAddress });
      assert.strictEqual(res.status, 200, res.text);
    }
    await sleep(2000);
    const baseline = Cluster.rssKb(pid);
    let peak = baseline;
    const sampler = setInterval(() => {
      peak = Math.max(peak, Cluster.rssKb(pid));
    }, 100);

    const flooder = world.socket({ localAddress: flooderAddress, transport: 'websocket', reconnection: false });
    await flooder.waitConnected();
    const answers: Record<string, number> = {};
    const latencies: number[] = [];
    const failures: string[] = [];
    try {
      // Answered until the server disconnects it (a burst of refusals in a row).
      const disconnected = new Promise<void>(resolve => flooder.raw.once('disconnect', () => resolve()));
      const onAck = (a: { ok: boolean; reason?: string }) => {
        const k = a.ok ? 'ok' : String(a.reason);
        answers[k] = (answers[k] ?? 0) + 1;
      };
      for (let i = 0; i < FLOOD; i++) flooder.raw.emit('join-token', { token: randomToken() }, onAck);
      let flooding = true;
      const concurrent = (async () => {
        let n = 0;
        while (flooding || n < 20) {
          const t0 = Date.now();
          try {
            const read = await request(c, 'GET', '/kv/_info', { headers: { 'x-app-token': device.token }, localAddress: clientAddress });
            if (read.status !== 200) failures.push(`GET ${read.status} ${read.text}`);
            const write = await request(c, 'POST', '/kv/during-flood', { body: { n }, headers: { 'x-app-token': device.token }, localAddress: clientAddress });
            if (write.status !== 200) failures.push(`POST ${write.status} ${write.text}`);
            const ack = await member.requestWithin(15000, 'send-event', { type: 'during-flood', content: { n } });
            if (!ack.ok) failures.push(`send-event ${JSON.stringify(ack)}`);
          } catch (err) {
            failures.push((err as Error).message);
          }
          latencies.push(Date.now() - t0);
          n += 1;
        }
      })();
      await withTimeout(disconnected, 'the flooder to be disconnected', 240000);
      flooding = false;
      await concurrent;
    } finally {
      clearInterval(sampler);
    }
    peak = Math.max(peak, Cluster.rssKb(pid));
    console.log(`      worker ${pid} RSS ${Math.round(baseline / 1024)} MB -> peak ${Math.round(peak / 1024)} MB (+${Math.round((peak - baseline) / 1024)} MB); ` +
      `answers ${JSON.stringify(answers)}; concurrent client (same worker): ${latencies.length} rounds of GET + POST + send-event, p99 ${p99(latencies)} ms ` +
      '(measured from this process, which also sends the flood: bench/flood.js measures from a process of its own)');
    const disconnectReason = flooder.disconnectReason;
    flooder.close();
    member.close();
    assert.deepStrictEqual(failures, []);
    assert.strictEqual(disconnectReason, 'io server disconnect');
    // A burst handled (plus what SOCKET_PACKET_RATE refilled meanwhile), then SOCKET_PACKET_BURST
    // refused in a row and the socket disconnected: the rest of the 50,000 was never read.
    assert.ok(Object.values(answers).reduce((a, b) => a + b, 0) < FLOOD / 10, JSON.stringify(answers));
    assert.deepStrictEqual(Object.keys(answers).filter(k => k !== 'invalid_token' && k !== 'too_many_requests'), []);
    assert.ok(peak - baseline < 50 * 1024, `RSS grew by ${Math.round((peak - baseline) / 1024)} MB`);
    assert.deepStrictEqual(c.grepLogs(/AppWorkerDiedError|AgentWorkerDiedError/), []);
  });

  it('(2) random tokens sprayed over HTTP from one address: 401 up to RATE_LIMIT_TOKEN_FAILURES (30), then 429, cluster-wide; a valid token from other addresses is served on every worker', async () => {
    const statuses: Record<number, number> = {};
    for (let i = 0; i < 300; i++) {
      const res = await request(c, 'GET', i % 2 ? '/kv/_info' : '/kv/k', { headers: { 'x-app-token': randomToken() }, localAddress: '127.0.0.8' });
      statuses[res.status] = (statuses[res.status] ?? 0) + 1;
      if (i >= 30) {
        assert.strictEqual(res.status, 429, res.text);
        assert.deepStrictEqual({ ...res.json, details: { ...res.json.details, retryAfter: 0 } },
          { success: false, message: '请求过于频繁，请稍后再试', details: { limit: 30, windowSeconds: 60, retryAfter: 0 }, code: 'RATE_LIMITED' });
      }
    }
    assert.deepStrictEqual(statuses, { 401: 30, 429: 270 });
    for (const localAddress of [ '127.0.0.2', '127.0.0.3' ]) {
      const res = await request(c, 'GET', '/kv/_info', { headers: { 'x-app-token': device.token }, localAddress });
      assert.strictEqual(res.status, 200, res.text);
    }
  });

  it('(7) 2,001 join-token of one token on one socket: a member of the room on the other worker receives one device-joined per join announced (REJOIN_BURST, then one per REJOIN_REFILL_MS)', async () => {
    const joinerAddress = '127.0.0.2';
    const joinerPid = await c.workerFor(joinerAddress);
    const memberAddress = await addressOn(c.workerPids().find(p => p !== joinerPid)!, [ joinerAddress ]);
    const member = await world.joined({ token: device.token, localAddress: memberAddress, transport: 'websocket', reconnection: false });
    const from = member.mark();
    const joiner = world.socket({ localAddress: joinerAddress, transport: 'websocket', reconnection: false });
    await joiner.waitConnected();
    // In batches of 50, 100 ms apart: the socket's packet budget (SOCKET_PACKET_RATE 200/s here,
    // bursts of 100) refuses some (too_many_requests), never a whole burst in a row (which would disconnect it).
    const acks: any[] = [];
    const join = { token: device.token };
    const started = Date.now();
    for (let sent = 0; sent < 2001; sent += 50) {
      acks.push(...await Promise.all(Array.from({ length: Math.min(50, 2001 - sent) }, () => joiner.requestWithin(60000, 'join-token', join))));
      await sleep(100);
    }
    const served = acks.filter(a => a.ok === true && a.uuid === device.uuid).length;
    assert.strictEqual(served + acks.filter(a => a.ok === false && a.reason === 'too_many_requests').length, 2001);
    assert.ok(served >= 100, `${served} served`);
    assert.strictEqual(joiner.connected, true);
    const res = await request(c, 'POST', '/kv/after-rejoins', { body: {}, headers: { 'x-app-token': device.token }, localAddress: joinerAddress });
    assert.strictEqual(res.status, 200, res.text);
    await member.waitFor('kv-key-changed', p => p.key === 'after-rejoins', { since: from });
    console.log(`      ${served} of 2001 joins served; the member received ${member.named('device-joined', from).length} device-joined`);
    // The first join, then the contract's rejoin announcement (§4) while the socket's budget lasts.
    const announced = 1 + REJOIN_BURST + Math.floor((Date.now() - started) / REJOIN_REFILL_MS);
    const seen = member.payloads('device-joined', from);
    assert.ok(seen.length >= 1 + REJOIN_BURST && seen.length <= announced, `${seen.length} device-joined, at most ${announced}`);
    for (const p of seen) assert.deepStrictEqual(p, { uuid: device.uuid, connections: 2 });
    joiner.close();
    member.close();
  });
});
