import assert from 'node:assert';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { app } from 'egg-mock/bootstrap';
import { io as ioV4 } from 'socket.io-client';

/**
 * Real Socket.IO clients against the app running in-process.
 *
 * egg-mock builds one http.Server for the app on the first `app.httpRequest()` and
 * emits the app's `server` event with it, exactly like the cluster worker does;
 * egg-socket.io attaches Socket.IO on that event. We listen on that server (port 0)
 * so `app.httpRequest()` and the socket clients hit the same process and server.
 * Never use `app.listen()`: it builds another server without Socket.IO.
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
  emit(event: string, ...args: unknown[]): unknown;
  close(): unknown;
}

interface RawSocketV2 extends RawSocket {
  onevent(packet: { data?: unknown[]; id?: number }): void;
}

const ioV2: (url: string, opts: Record<string, unknown>) => RawSocketV2 = require('socket.io-client-v2');

export interface ReceivedEvent {
  event: string;
  args: unknown[];
}

let server: Server | undefined;
let baseUrl = '';
const open = new Set<TestClient>();

/** The app's own http.Server (Socket.IO attached), created like egg-mock does for httpRequest(). */
function appServer(): Server {
  const mocked = app as unknown as { server: Server | null; io: { engine?: unknown } };
  // egg sets app.server on the `server` event, which egg-mock emits on its first httpRequest().
  if (!mocked.server) app.httpRequest();
  assert.ok(mocked.server, 'egg-mock did not expose app.server');
  assert.ok(mocked.io.engine, 'Socket.IO is not attached to app.server');
  return mocked.server;
}

/** Starts listening on an ephemeral port; returns the base URL. */
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

/** Closes every client still open, then the server (dropping keep-alive and polling connections). */
export async function stopServer() {
  await closeAllClients();
  const s = server;
  server = undefined;
  if (!s?.listening) return;
  s.closeAllConnections();
  await new Promise<void>(resolve => s.close(() => resolve()));
}

export async function closeAllClients() {
  await Promise.all([ ...open ].map(c => c.close()));
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

/** Re-checks `check` until it passes (a wait, not a timing assertion); rethrows its last failure. */
export async function eventually<T>(check: () => Promise<T>, ms = WAIT_MS): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise(resolve => setTimeout(resolve, 20));
    }
  }
}

/**
 * One real client. Every application event the server sends is recorded in arrival
 * order; `next()` consumes them one by one, so a test asserts the exact sequence a
 * socket saw, and absence is asserted by checking which event comes next.
 */
export class TestClient {
  readonly received: ReceivedEvent[] = [];
  private cursor = 0;
  private wake?: () => void;
  disconnectReason?: string;

  constructor(readonly raw: RawSocket, readonly version: ClientVersion) {
    if (version === 'v4') {
      (raw as unknown as { onAny(fn: (event: string, ...args: unknown[]) => void): void })
        .onAny((event, ...args) => this.record(event, args));
    } else {
      // 2.x has no onAny: wrap the instance's packet handler (before the ack is appended).
      const v2 = raw as RawSocketV2;
      const onevent = v2.onevent;
      v2.onevent = packet => {
        const data = packet.data ?? [];
        this.record(String(data[0]), data.slice(1));
        onevent.call(v2, packet);
      };
    }
    raw.on('disconnect', (reason: string) => {
      this.disconnectReason = reason;
    });
    open.add(this);
  }

  private record(event: string, args: unknown[]) {
    this.received.push({ event, args });
    this.wake?.();
  }

  get id() {
    return this.raw.id;
  }

  get connected() {
    return this.raw.connected;
  }

  /** Events received but not consumed yet. */
  pending(): ReceivedEvent[] {
    return this.received.slice(this.cursor);
  }

  /** The next event not consumed yet (waits for it). */
  async next(what = 'the next event', ms = WAIT_MS): Promise<ReceivedEvent> {
    const deadline = Date.now() + ms;
    while (this.cursor >= this.received.length) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${ms} ms waiting for ${what} (received so far: ${JSON.stringify(this.received)})`);
      await new Promise<void>(resolve => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
    return this.received[this.cursor++];
  }

  /** Asserts that the next event is `event` with exactly one argument; returns that argument. */
  async expectNext(event: string, ms = WAIT_MS): Promise<any> {
    const got = await this.next(`'${event}'`, ms);
    assert.strictEqual(got.event, event, `expected '${event}' next, got ${JSON.stringify(got)}`);
    assert.strictEqual(got.args.length, 1, `'${event}' should carry exactly one payload, got ${JSON.stringify(got.args)}`);
    return got.args[0];
  }

  /** Emits without an acknowledgement callback. */
  send(event: string, ...args: unknown[]) {
    this.raw.emit(event, ...args);
  }

  /** Emits with an acknowledgement callback; resolves with the ack's first argument. */
  request(event: string, ...args: unknown[]): Promise<any> {
    return withTimeout(new Promise(resolve => {
      this.raw.emit(event, ...args, (result: unknown) => resolve(result));
    }), `the ack of '${event}'`);
  }

  /** Closes the client and forgets it. */
  async close() {
    open.delete(this);
    this.raw.close();
  }
}

export interface ConnectOptions {
  query?: Record<string, string>;
}

function rawClient(combo: Combination, opts: ConnectOptions): RawSocket {
  const options = {
    transports: [ combo.transport ],
    reconnection: false,
    forceNew: true,
    timeout: WAIT_MS,
    ...(opts.query ? { query: opts.query } : {}),
  };
  return combo.client === 'v4' ? ioV4(baseUrl, options) as unknown as RawSocket : ioV2(baseUrl, options);
}

/** Connects a client (v4 or v2, websocket or polling) and waits until it is connected. */
export async function connect(combo: Combination, opts: ConnectOptions = {}): Promise<TestClient> {
  assert.ok(server, 'startServer() first');
  const client = new TestClient(rawClient(combo, opts), combo.client);
  await withTimeout(new Promise<void>((resolve, reject) => {
    client.raw.once('connect', () => resolve());
    client.raw.once('connect_error', (err: unknown) => reject(err instanceof Error ? err : new Error(String(err))));
  }), `${combo.title} to connect`);
  return client;
}

/** Connects and joins with `token` through the handshake query; consumes device-joined and joined. */
export async function connectJoined(combo: Combination, token: string, uuid: string, connections: number): Promise<TestClient> {
  const client = await connect(combo, { query: { token } });
  assert.deepStrictEqual(await client.expectNext('device-joined'), { uuid, connections });
  assert.deepStrictEqual(await client.expectNext('joined'), { by: 'token', uuid });
  return client;
}
