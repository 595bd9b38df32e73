/**
 * The production nginx config (deploy/nginx/classworks-kv.conf) in front of a real
 * 2-worker sticky cluster started with TRUST_PROXY=true. Requires the `nginx`
 * binary (Debian package `nginx`): without it this file fails, it never skips.
 *
 * Needs `npm run build` first (npm run test:cluster does it).
 */
import assert from 'node:assert';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync, ChildProcess } from 'node:child_process';
import { closeAllClients, COMBINATIONS, TestClient } from '../support/socket';
import {
  ROOT, Cluster,
  closeRedis, deviceWithToken, eventually, freePort, joinedClient,
  pidOfInstance, presence, request, startCluster, truncateTables,
} from './support';

/** Client source addresses (nginx hashes them to its proxy_bind addresses). */
const CLIENT_ADDRS = [ '127.0.1.1', '127.0.1.2', '127.0.1.3', '127.0.1.4', '127.0.1.5', '127.0.1.6', '127.0.1.7', '127.0.1.8' ];

function findNginx(): string {
  for (const candidate of [ process.env.NGINX_BIN, '/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/bin/nginx' ]) {
    if (candidate && fs.existsSync(candidate)) return candidate;
  }
  const r = spawnSync('sh', [ '-c', 'command -v nginx' ], { encoding: 'utf8' });
  if (r.status === 0 && r.stdout.trim()) return r.stdout.trim();
  throw new Error('nginx binary not found: install the Debian package `nginx` (apt-get install nginx) or set NGINX_BIN; the nginx tests cannot run without it');
}

/** Replaces exactly one occurrence of `from` (so a changed deploy config fails loudly here). */
function replaceOnce(text: string, from: string, to: string): string {
  const n = text.split(from).length - 1;
  assert.strictEqual(n, 1, `deploy/nginx/classworks-kv.conf: expected exactly one "${from}", found ${n}`);
  return text.replace(from, to);
}

interface Nginx {
  url: string;
  dir: string;
  stop(): Promise<void>;
  log(): string;
}

/** nginx with the deploy config in front of the instances listening on `upstreamPorts` (one `server` line each). */
async function startNginx(...upstreamPorts: number[]): Promise<Nginx> {
  const bin = findNginx();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ckv-nginx-'));
  fs.chmodSync(dir, 0o755);
  const port = await freePort();
  let site = fs.readFileSync(path.join(ROOT, 'deploy/nginx/classworks-kv.conf'), 'utf8');
  site = replaceOnce(site, 'listen 80;', `listen 127.0.0.1:${port};`);
  site = replaceOnce(site, 'server 127.0.0.1:3000;', upstreamPorts.map(p => `server 127.0.0.1:${p};`).join('\n    '));
  fs.writeFileSync(path.join(dir, 'classworks-kv.conf'), site);
  fs.writeFileSync(path.join(dir, 'nginx.conf'), [
    'worker_processes 1;',
    `error_log ${dir}/error.log info;`,
    'events { worker_connections 1024; }',
    'http {',
    `  access_log ${dir}/access.log;`,
    ...[ 'client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi' ].map(t => `  ${t}_temp_path ${dir}/${t}_temp;`),
    `  include ${dir}/classworks-kv.conf;`,
    '}',
    '',
  ].join('\n'));

  const test = spawnSync(bin, [ '-t', '-p', dir, '-c', `${dir}/nginx.conf`, '-g', `pid ${dir}/nginx.pid;` ], { encoding: 'utf8' });
  assert.strictEqual(test.status, 0, `nginx -t refused the generated config:\n${test.stderr}`);

  const child: ChildProcess = spawn(bin, [ '-p', dir, '-c', `${dir}/nginx.conf`, '-g', `daemon off; pid ${dir}/nginx.pid;` ], { stdio: [ 'ignore', 'pipe', 'pipe' ] });
  let out = '';
  child.stdout!.on('data', d => { out += d; });
  child.stderr!.on('data', d => { out += d; });
  let exited = false;
  const exitedP = new Promise<void>(resolve => child.on('exit', () => { exited = true; resolve(); }));
  const log = () => {
    let err = '';
    try {
      err = fs.readFileSync(path.join(dir, 'error.log'), 'utf8');
    } catch {
      // not written yet
    }
    return `${out}\n${err}`;
  };
  const nginx: Nginx = {
    url: `http://127.0.0.1:${port}`,
    dir,
    log,
    stop: async () => {
      if (!exited) {
        child.kill('SIGTERM');
        await Promise.race([ exitedP, new Promise(r => setTimeout(r, 5000)) ]);
        if (!exited) child.kill('SIGKILL');
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await eventually('nginx to proxy GET /check', async () => {
      if (exited) throw new Error(`nginx exited: ${log()}`);
      const res = await request(nginx.url, 'GET', '/check');
      return res.status === 200;
    }, 15000);
  } catch (err) {
    await nginx.stop();
    throw err;
  }
  return nginx;
}

describe('test/cluster/nginx.test.ts', function() {
  let cluster: Cluster | undefined;
  let nginx: Nginx | undefined;

  before(async function() {
    findNginx(); // fails the whole file with a clear message when nginx is missing
    cluster = await startCluster({ workers: 2, env: { TRUST_PROXY: 'true' } });
    nginx = await startNginx(cluster.port);
  });

  beforeEach(async () => {
    await truncateTables();
  });

  afterEach(async function() {
    closeAllClients();
    if (this.currentTest?.state === 'failed') {
      if (nginx) console.error(`--- nginx log ---\n${nginx.log().slice(-4000)}`);
      if (cluster) console.error(`--- cluster output (tail) ---\n${cluster.output().slice(-4000)}`);
    }
    if (cluster) {
      const c = cluster;
      await eventually('GET /devices/online to be empty after the test', async () => {
        const res = await request(c.url, 'GET', '/devices/online');
        return res.status === 200 && res.body.devices.length === 0;
      }).catch(() => undefined);
    }
  });

  after(async () => {
    closeAllClients();
    await nginx?.stop();
    await cluster?.stop();
    await closeRedis();
  });

  async function instanceOf(uuid: string, client: TestClient) {
    const map = await eventually(`presence of socket ${client.id} in ${uuid}`, async () => {
      const m = await presence(cluster!.prefix, uuid);
      return m[client.id] ? m : undefined;
    });
    return map[client.id];
  }

  describe('[Socket.IO through nginx] spreading over workers', () => {
    COMBINATIONS.forEach(({ client: gen, transport }) => {
      it(`puts ${gen} ${transport} clients from ${CLIENT_ADDRS.length} source addresses on both workers, each address always on the same worker, and every write reaches all of them`, async () => {
        const d = await deviceWithToken(nginx!.url);
        const clients: TestClient[] = [];
        for (const localAddress of CLIENT_ADDRS) {
          clients.push(await joinedClient(nginx!.url, { version: gen, transport, localAddress, token: d.token }));
        }
        // A second client from the first address: same nginx bind address, same worker.
        const twin = await joinedClient(nginx!.url, { version: gen, transport, localAddress: CLIENT_ADDRS[0], token: d.token });

        const instances = await Promise.all(clients.map(c => instanceOf(d.uuid, c)));
        const distinct = new Set(instances);
        assert(distinct.size >= 2, `all ${clients.length} clients landed on one worker: ${[ ...distinct ]}`);
        const workers = cluster!.workerPids();
        for (const inst of distinct) assert(workers.includes(pidOfInstance(inst)), `${inst} is not a worker of this cluster (${workers})`);
        assert.strictEqual(await instanceOf(d.uuid, twin), instances[0]);

        const online = await request(nginx!.url, 'GET', '/devices/online', { localAddress: CLIENT_ADDRS[1] });
        assert.deepStrictEqual(online.body, { success: true, devices: [{ uuid: d.uuid, connections: clients.length + 1, name: d.name }] });

        const res = await request(nginx!.url, 'POST', '/kv/through-nginx', { body: { gen, transport }, headers: { 'x-app-token': d.token }, localAddress: CLIENT_ADDRS[2] });
        assert.strictEqual(res.status, 200, res.text);
        for (const c of [ ...clients, twin ]) {
          const msg = await c.waitFor('kv-key-changed', m => m.key === 'through-nginx');
          assert.strictEqual(msg.uuid, d.uuid);
          assert.strictEqual(msg.action, 'upsert');
          assert.strictEqual(msg.updatedAt, res.body.updatedAt);
        }
      });
    });
  });

  describe('[GET /kv/:key/metadata] metadata() behind nginx (TRUST_PROXY=true)', () => {
    it('200 with creatorIp = the client\'s source address, not nginx\'s, whichever worker served the write', async () => {
      const d = await deviceWithToken(nginx!.url);
      for (const addr of CLIENT_ADDRS.slice(0, 4)) {
        const key = `ip-${addr}`;
        const w = await request(nginx!.url, 'POST', `/kv/${key}`, { body: { addr }, headers: { 'x-app-token': d.token }, localAddress: addr });
        assert.strictEqual(w.status, 200, w.text);
        const meta = await request(nginx!.url, 'GET', `/kv/${key}/metadata`, { headers: { 'x-app-token': d.token }, localAddress: addr });
        assert.strictEqual(meta.status, 200, meta.text);
        assert.strictEqual(meta.body.metadata.creatorIp, addr);
      }
    });

    it('200 with creatorIp = the client\'s source address even when the client sends its own X-Forwarded-For', async () => {
      const d = await deviceWithToken(nginx!.url);
      const addr = CLIENT_ADDRS[5];
      const w = await request(nginx!.url, 'POST', '/kv/spoofed', {
        body: { v: 1 }, headers: { 'x-app-token': d.token, 'x-forwarded-for': '203.0.113.9' }, localAddress: addr,
      });
      assert.strictEqual(w.status, 200, w.text);
      const meta = await request(nginx!.url, 'GET', '/kv/spoofed/metadata', { headers: { 'x-app-token': d.token }, localAddress: addr });
      assert.strictEqual(meta.status, 200, meta.text);
      assert.strictEqual(meta.body.metadata.creatorIp, addr);
    });
  });

  describe('[two instances] two `npm start` clusters on one MySQL and one Redis behind one nginx upstream', () => {
    /** Client source addresses: nginx's upstream hash puts each on one instance. */
    const ADDRS = Array.from({ length: 16 }, (_, i) => `127.0.2.${i + 1}`);
    let second: Cluster | undefined;
    let both: Nginx | undefined;

    before(async () => {
      // Another port and title, the same database and Redis prefix: one deployment.
      second = await startCluster({ workers: 2, env: { TRUST_PROXY: 'true', REDIS_PREFIX: cluster!.prefix } });
      both = await startNginx(cluster!.port, second.port);
    });
    after(async () => {
      closeAllClients();
      await both?.stop();
      await second?.stop();
    });

    it('sockets land on both instances; writes made on either instance reach every socket, each once, in revision order', async () => {
      const d = await deviceWithToken(both!.url);
      const clients: TestClient[] = [];
      for (const [ i, localAddress ] of ADDRS.entries()) {
        const [ gen, transport ] = [[ 'v4', 'websocket' ], [ 'v4', 'polling' ], [ 'v2', 'websocket' ], [ 'v2', 'polling' ]][i % 4] as [ 'v4' | 'v2', 'websocket' | 'polling' ];
        clients.push(await joinedClient(both!.url, { version: gen, transport, localAddress, token: d.token }));
      }
      const pids = await Promise.all(clients.map(async c => pidOfInstance(await instanceOf(d.uuid, c))));
      const first = cluster!.workerPids();
      const other = second!.workerPids();
      assert(pids.every(p => first.includes(p) || other.includes(p)), `sockets on unknown processes: ${pids}`);
      assert(pids.some(p => first.includes(p)) && pids.some(p => other.includes(p)), `all sockets on one instance: ${pids}`);

      const writes: Array<Promise<unknown>> = [];
      for (let i = 0; i < 40; i++) {
        const target = i % 2 ? second!.url : cluster!.url;
        writes.push(request(target, 'POST', `/kv/k${i % 5}`, { body: { i }, headers: { 'x-app-token': d.token }, localAddress: i % 4 < 2 ? '127.0.0.2' : '127.0.0.3' })
          .then(res => assert.strictEqual(res.status, 200, res.text)));
      }
      await Promise.all(writes);
      const log = await request(cluster!.url, 'GET', '/kv/_changes?since=0&limit=1000', { headers: { 'x-app-token': d.token } });
      assert.deepStrictEqual(log.body.changes.map((c: { revision: number }) => c.revision), Array.from({ length: 40 }, (_, i) => i + 1));
      for (const c of clients) {
        await eventually(`40 changes on ${c.id}`, async () => c.payloads('kv-key-changed').length >= 40);
        assert.deepStrictEqual(c.payloads('kv-key-changed'), log.body.changes);
      }
    });
  });
});
