import assert from 'node:assert';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { MockApplication } from 'egg-mock';
import { io as ioV4 } from 'socket.io-client';

/**
 * Real Socket.IO clients (socket.io-client 4.x and 2.x, websocket or polling), for
 * every suite: the egg-mock tests (test/app) against the app running in-process, and
 * the multi-process suites (test/cluster, test/fault) against a real cluster, with
 * every TCP connection bound to a chosen source address (the egg master picks the
 * worker from it).
 *
 * In-process: egg-mock builds one http.Server for the app on the first
 * `app.httpRequest()` and emits the app's `server` event with it, exactly like the
 * cluster worker does; egg-socket.io attaches Socket.IO on that event. We listen on
 * that server (port 0) so `app.httpRequest()` and the socket clients hit the same
 * process and server. Never use `app.listen()`: it builds another server without Socket.IO.
 */

export type ClientVersion = 'v4' | 'v2';
export type TransportName = 'websocket' | 'polling';

export interface Combination {
  client: ClientVersion;
  transport: TransportName;
  title: string;
}

export const COMBINATIONS: Combination[] = [
  { client: 'v4', transport: 'websocket', title: 'socket.io-client 4.x over websocket' },
  { client: 'v4', transport: 'polling', title: 'socket.io-client 4.x over polling' },
  { client: 'v2', transport: 'websocket', title: 'socket.io-client 2.x over websocket' },
  { client: 'v2', transport: 'polling', title: 'socket.io-client 2.x over polling' },
];

/** Default wait for one event or ack; far below the mocha timeout so failures say what was missing. */
export const WAIT_MS = 5000;

/** The part of both client APIs the tests use. */
interface RawSocket {
  id?: string;
  connected: boolean;
  on(event: string, listener: (...args: any[]) => void): unknown;
  once(event: string, listener: (...args: any[]) => void): unknown;
  off(event: string, listener: (...args: any[]) => void): unknown;
  emit(event: string, ...args: unknown[]): unknown;
  close(): unknown;
}

interface RawSocketV2 extends RawSocket {
  onevent(packet: { data?: unknown[]; id?: number }): void;
}

// socket.io-client 2.x ships no typings.
const ioV2: (url: string, opts: Record<string, unknown>) => RawSocketV2 = require('socket.io-client-v2');

export interface ReceivedEvent {
  event: string;
  args: any[];
  /** Date.now() on arrival. */
  at: number;
}

/** Fails with `what` if `promise` does not settle within `ms`. */
export function withTimeout<T>(promise: Promise<T>, what: string, ms = WAIT_MS): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]);
}

/** Re-checks `check` every `interval` ms until it passes (a wait, not a timing assertion); rethrows its last failure. */
export async function eventually<T>(check: () => Promise<T> | T, ms = WAIT_MS, interval = 20): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise(resolve => setTimeout(resolve, interval));
    }
  }
}

// ---------------------------------------------------------------- clients

export interface ClientOptions {
  /** socket.io-client 4.x (default) or 2.x. */
  version?: ClientVersion;
  /** The only transport the client may use (default websocket). */
  transport?: TransportName;
  /** Handshake query. */
  query?: Record<string, string>;
  /** Shorthand for `query.token`. */
  token?: string;
  /** Source address of every TCP connection of the client (websocket and polling). */
  localAddress?: string;
  /** Reconnect after a drop (default false), 200 ms to 1 s apart, no jitter. */
  reconnection?: boolean;
  /** How long a connection attempt may take before it fails (client `timeout`). */
  connectTimeoutMs?: number;
  /** Default wait of this client's next(), waitFor() and request(). */
  waitMs?: number;
  /** User-Agent header of every request (default: what Node clients send, see nodeUserAgent()). */
  userAgent?: string;
}

const open = new Set<TestClient>();

/**
 * One real client. Every application event the server sends is recorded in arrival
 * order: `next()` consumes them one by one (a test asserts the exact sequence a socket
 * saw, and absence by checking which event comes next); `mark()`, `named()` and
 * `waitFor()` look at them by name from a point on. Connections and drops are counted.
 */
export class TestClient {
  readonly events: ReceivedEvent[] = [];
  readonly version: ClientVersion;
  readonly transport: TransportName;
  readonly localAddress?: string;
  readonly waitMs: number;
  readonly raw: RawSocket;
  connects = 0;
  disconnects = 0;
  disconnectReason?: string;
  private readonly agent?: http.Agent;
  private cursor = 0;
  private readonly waiters = new Set<() => void>();

  constructor(url: string, opts: ClientOptions = {}) {
    this.version = opts.version ?? 'v4';
    this.transport = opts.transport ?? 'websocket';
    this.localAddress = opts.localAddress;
    this.waitMs = opts.waitMs ?? WAIT_MS;
    // Polling goes through http requests: an agent bound to the source address.
    if (opts.localAddress) this.agent = new http.Agent({ localAddress: opts.localAddress, keepAlive: false } as http.AgentOptions);
    const query = opts.token === undefined ? opts.query : { ...opts.query, token: opts.token };
    const options = {
      transports: [ this.transport ],
      forceNew: true,
      reconnection: opts.reconnection ?? false,
      reconnectionDelay: 200,
      reconnectionDelayMax: 1000,
      randomizationFactor: 0,
      timeout: opts.connectTimeoutMs ?? WAIT_MS,
      ...(query ? { query } : {}),
      ...(opts.userAgent !== undefined ? { extraHeaders: { 'User-Agent': opts.userAgent } } : {}),
      ...(opts.localAddress ? { localAddress: opts.localAddress, agent: this.agent } : {}),
    };
    if (this.version === 'v4') {
      this.raw = ioV4(url, options as any) as unknown as RawSocket;
      (this.raw as unknown as { onAny(fn: (event: string, ...args: unknown[]) => void): void })
        .onAny((event, ...args) => this.record(event, args));
    } else {
      // 2.x has no onAny: wrap the instance's packet handler (before the ack is appended).
      const v2 = ioV2(url, options);
      const onevent = v2.onevent;
      v2.onevent = packet => {
        const data = packet.data ?? [];
        this.record(String(data[0]), data.slice(1));
        onevent.call(v2, packet);
      };
      this.raw = v2;
    }
    this.raw.on('connect', () => {
      this.connects += 1;
    });
    this.raw.on('disconnect', (reason: string) => {
      this.disconnects += 1;
      this.disconnectReason = reason;
    });
    open.add(this);
  }

  private record(event: string, args: unknown[]) {
    this.events.push({ event, args, at: Date.now() });
    for (const wake of [ ...this.waiters ]) wake();
  }

  /** Resolves once `found()` gives a value (re-checked on every event); fails with `what` after `ms`. */
  private until<T>(found: () => T | undefined, what: () => string, ms: number): Promise<T> {
    const hit = found();
    if (hit !== undefined) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const check = () => {
        const h = found();
        if (h === undefined) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(h);
      };
      timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`${this.version}/${this.transport} client${this.localAddress ? ` from ${this.localAddress}` : ''}: timed out after ${ms} ms waiting for ${what()}`));
      }, ms);
      this.waiters.add(check);
    });
  }

  get id(): string {
    assert.ok(this.raw.id, 'socket has no id (not connected)');
    return this.raw.id;
  }

  get connected() {
    return this.raw.connected;
  }

  /** Index to pass as `since` to only look at events received from now on. */
  mark() {
    return this.events.length;
  }

  /** Events named `event` received since index `since`. */
  named(event: string, since = 0): ReceivedEvent[] {
    return this.events.slice(since).filter(e => e.event === event);
  }

  /** First payloads of the events named `event` received since index `since`. */
  payloads(event: string, since = 0): any[] {
    return this.named(event, since).map(e => e.args[0]);
  }

  /** Resolves with the payload of the first `event` (since `opts.since`) whose payload matches `match`. */
  async waitFor(event: string, match: (payload: any) => boolean = () => true, opts: { since?: number; timeoutMs?: number } = {}): Promise<any> {
    const since = opts.since ?? 0;
    const hit = await this.until(
      () => this.events.slice(since).find(e => e.event === event && match(e.args[0])),
      () => `'${event}' matching (received since ${since}: ${JSON.stringify(this.events.slice(since)).slice(0, 2000)})`,
      opts.timeoutMs ?? this.waitMs);
    return hit.args[0];
  }

  /** Events received but not consumed by next() yet. */
  pending(): ReceivedEvent[] {
    return this.events.slice(this.cursor);
  }

  /** The next event not consumed yet (waits for it). */
  async next(what = 'the next event', ms = this.waitMs): Promise<ReceivedEvent> {
    const got = await this.until(
      () => this.events[this.cursor],
      () => `${what} (received so far: ${JSON.stringify(this.events.map(({ event, args }) => ({ event, args })))})`,
      ms);
    this.cursor += 1;
    return got;
  }

  /** Asserts that the next event is `event` with exactly one argument; returns that argument. */
  async expectNext(event: string, ms = this.waitMs): Promise<any> {
    const got = await this.next(`'${event}'`, ms);
    assert.strictEqual(got.event, event, `expected '${event}' next, got ${JSON.stringify(got)}`);
    assert.strictEqual(got.args.length, 1, `'${event}' should carry exactly one payload, got ${JSON.stringify(got.args)}`);
    return got.args[0];
  }

  /** Resolves once connected (now or before); rejects on a connection error. */
  waitConnected(ms = this.waitMs): Promise<void> {
    if (this.raw.connected) return Promise.resolve();
    let settle: (err?: unknown) => void = () => undefined;
    const done = new Promise<void>((resolve, reject) => {
      settle = err => (err === undefined ? resolve() : reject(err instanceof Error ? err : new Error(String(err))));
    });
    const onConnect = () => settle();
    const onError = (err: unknown) => settle(err ?? 'connect_error');
    this.raw.once('connect', onConnect);
    this.raw.once('connect_error', onError);
    return withTimeout(done, `${this.version}/${this.transport} client to connect`, ms).finally(() => {
      this.raw.off('connect', onConnect);
      this.raw.off('connect_error', onError);
    });
  }

  /** Emits without an acknowledgement callback. */
  send(event: string, ...args: unknown[]) {
    this.raw.emit(event, ...args);
  }

  /** Emits with an acknowledgement callback; resolves with the ack's first argument. */
  request(event: string, ...args: unknown[]): Promise<any> {
    return this.requestWithin(this.waitMs, event, ...args);
  }

  /** request() with its own wait for the ack. */
  requestWithin(ms: number, event: string, ...args: unknown[]): Promise<any> {
    return withTimeout(new Promise(resolve => {
      this.raw.emit(event, ...args, (result: unknown) => resolve(result));
    }), `the ack of '${event}'`, ms);
  }

  /** Closes the client (and its connections) and forgets it. */
  close() {
    open.delete(this);
    this.raw.close();
    this.agent?.destroy();
  }
}

/**
 * The User-Agent a Node client sends unless told otherwise: none over websocket (ws sets
 * none), xmlhttprequest-ssl's default over polling (both client generations).
 */
export function nodeUserAgent(transport: TransportName): string {
  return transport === 'polling' ? 'node-XMLHttpRequest' : '';
}

/**
 * The `joined` payload (CONTRACT.md §6.3) for a token of the test factories (no deviceType,
 * not read-only, no note unless given) and a client with the default User-Agent, whose
 * deviceName is "Unknown Device" (test/app/io/event.test.ts pins other User-Agents).
 */
export function joinedPayload(uuid: string, token: string, transport: TransportName,
  tokenInfo: Partial<{ isReadOnly: boolean; deviceType: string | null; deviceName: string; userAgent: string }> = {}) {
  return {
    by: 'token',
    uuid,
    token,
    tokenInfo: { isReadOnly: false, deviceType: null, deviceName: 'Unknown Device', userAgent: nodeUserAgent(transport), ...tokenInfo },
  };
}

/** Opens a client on `url` without waiting for anything. */
export function openClient(url: string, opts: ClientOptions = {}): TestClient {
  return new TestClient(url, opts);
}

/** Opens a client with a handshake token and waits until it has joined (closed again if it does not). */
export async function openJoined(url: string, opts: ClientOptions & { token: string }, ms?: number): Promise<TestClient> {
  const client = openClient(url, opts);
  try {
    await client.waitFor('joined', () => true, { timeoutMs: ms });
  } catch (err) {
    client.close();
    throw err;
  }
  return client;
}

/** Closes every client still open (after hooks). */
export function closeAllClients() {
  for (const c of [ ...open ]) c.close();
}

// ---------------------------------------------------------------- in-process server (egg-mock)

let server: http.Server | undefined;
let baseUrl = '';

/** The app's own http.Server (Socket.IO attached), created like egg-mock does for httpRequest(). */
function appServer(): http.Server {
  // Required here, not on import: the cluster and fault suites use this module without egg-mock.
  // In the egg-mock suites test/.setup.ts has loaded it already.
  const { app } = require('egg-mock/bootstrap') as { app: MockApplication };
  const mocked = app as unknown as { server: http.Server | null; io: { engine?: unknown } };
  // egg sets app.server on the `server` event, which egg-mock emits on its first httpRequest().
  if (!mocked.server) app.httpRequest();
  assert.ok(mocked.server, 'egg-mock did not expose app.server');
  assert.ok(mocked.io.engine, 'Socket.IO is not attached to app.server');
  return mocked.server;
}

/** Starts the in-process app listening on an ephemeral port; returns the base URL. */
export async function startServer(): Promise<string> {
  const s = appServer();
  if (!s.listening) {
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen(0, '127.0.0.1', () => {
        s.off('error', reject);
        resolve();
      });
    });
  }
  server = s;
  baseUrl = `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
  return baseUrl;
}

/**
 * Closes every client still open and drops the server's connections (keep-alive, polling).
 * The server itself keeps listening until the test process exits: supertest (app.httpRequest())
 * listens on a server that is not listening and closes it after each request, so concurrent
 * requests on a closed shared server would reset each other (ECONNRESET).
 */
export async function stopServer() {
  closeAllClients();
  const s = server;
  server = undefined;
  if (!s?.listening) return;
  s.closeAllConnections();
}

export interface ConnectOptions {
  query?: Record<string, string>;
}

/** Connects a client (v4 or v2, websocket or polling) to the in-process app and waits until it is connected. */
export async function connect(combo: Combination, opts: ConnectOptions = {}): Promise<TestClient> {
  assert.ok(server, 'startServer() first');
  const client = openClient(baseUrl, { version: combo.client, transport: combo.transport, query: opts.query });
  await client.waitConnected();
  return client;
}

/**
 * Connects and joins with `token` through the handshake query; consumes device-joined and joined
 * (`tokenInfo`: what differs from a default token's, e.g. a read-only one).
 */
export async function connectJoined(combo: Combination, token: string, uuid: string, connections: number,
  tokenInfo: Parameters<typeof joinedPayload>[3] = {}): Promise<TestClient> {
  const client = await connect(combo, { query: { token } });
  assert.deepStrictEqual(await client.expectNext('device-joined'), { uuid, connections });
  assert.deepStrictEqual(await client.expectNext('joined'), joinedPayload(uuid, token, combo.transport, tokenInfo));
  return client;
}
