import assert from 'node:assert';
import net from 'node:net';
import { coalescePublishes, holdWritesForTick } from '../../../app/lib/tickWrites';

/** A real TCP connection to a local server that records what arrives. */
async function connection() {
  const received: Buffer[] = [];
  const server = net.createServer(s => s.on('data', d => received.push(d)));
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve));
  const socket = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise(resolve => socket.once('connect', resolve));
  // Counts the socket's system-call level writes (one _write or _writev each).
  const calls: string[] = [];
  const s = socket as unknown as Record<'_write' | '_writev', (...args: unknown[]) => unknown>;
  for (const m of [ '_write', '_writev' ] as const) {
    const original = s[m].bind(socket);
    s[m] = (...args: unknown[]) => {
      calls.push(m);
      return original(...args);
    };
  }
  const text = () => Buffer.concat(received).toString();
  const close = async () => {
    socket.destroy();
    await new Promise(resolve => server.close(resolve));
  };
  return { socket, calls, text, close };
}

const tick = () => new Promise(resolve => setImmediate(resolve));

describe('test/app/lib/tickWrites.test.ts', () => {
  it('holdWritesForTick: writes of one tick (continuations included) leave in one write, in order, before the next turn', async () => {
    const c = await connection();
    try {
      holdWritesForTick(c.socket);
      c.socket.write('a');
      holdWritesForTick(c.socket); // a second hold in the same tick shares the first
      await Promise.resolve();
      c.socket.write('b');
      await Promise.resolve().then(() => c.socket.write('c'));
      assert.deepStrictEqual(c.calls, []);
      assert.strictEqual(c.socket.writableCorked, 1);
      await tick();
      assert.deepStrictEqual(c.calls, [ '_writev' ]);
      assert.strictEqual(c.socket.writableCorked, 0);
      // The next tick writes at once again.
      c.socket.write('d');
      assert.deepStrictEqual(c.calls, [ '_writev', '_write' ]);
      await new Promise(resolve => setTimeout(resolve, 50));
      assert.strictEqual(c.text(), 'abcd');
    } finally {
      await c.close();
    }
  });

  it('coalescePublishes: the first publish of a tick leaves at once, the ones after it in that tick share one write; not ready: untouched', async () => {
    const c = await connection();
    try {
      const sent: unknown[][] = [];
      const client = {
        status: 'ready',
        stream: c.socket,
        publish(...args: unknown[]) {
          sent.push(args);
          c.socket.write(`${String(args[0])}:${String(args[1])};`);
          return args.length;
        },
      };
      coalescePublishes(client);
      assert.strictEqual(client.publish('ch', 'm1'), 2);
      assert.deepStrictEqual(c.calls, [ '_write' ]);
      client.publish('ch', 'm2');
      await Promise.resolve();
      client.publish('ch', 'm3');
      assert.deepStrictEqual(c.calls, [ '_write' ]);
      await tick();
      assert.deepStrictEqual(c.calls, [ '_write', '_writev' ]);
      // A new tick: its first publish is sent at once again.
      client.publish('ch', 'm4');
      assert.deepStrictEqual(c.calls, [ '_write', '_writev', '_write' ]);
      await tick();
      client.status = 'reconnecting';
      client.publish('ch', 'm5');
      client.publish('ch', 'm6');
      assert.strictEqual(c.socket.writableCorked, 0);
      assert.deepStrictEqual(c.calls, [ '_write', '_writev', '_write', '_write', '_write' ]);
      assert.deepStrictEqual(sent.map(a => a[1]), [ 'm1', 'm2', 'm3', 'm4', 'm5', 'm6' ]);
      await new Promise(resolve => setTimeout(resolve, 50));
      assert.strictEqual(c.text(), 'ch:m1;ch:m2;ch:m3;ch:m4;ch:m5;ch:m6;');
    } finally {
      await c.close();
    }
  });
});
