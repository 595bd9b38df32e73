import assert from 'node:assert';
import type { IncomingMessage } from 'node:http';
import { ConnectionsPerIp, PacketBucket, requestIp } from '../../../app/lib/socketLimits';
import { TokenCache, TokenInfo } from '../../../app/lib/tokenCache';

describe('test/app/lib/socketLimits.test.ts', () => {
  describe('PacketBucket', () => {
    it('takes a burst at once, then refills at its rate, never above the burst', () => {
      const b = new PacketBucket(2, 3, 0);
      assert.deepStrictEqual([ b.take(0), b.take(0), b.take(0), b.take(0) ], [ true, true, true, false ]);
      assert.strictEqual(b.take(499), false); // 0.998 packets refilled
      assert.strictEqual(b.take(501), true);
      assert.deepStrictEqual([ b.take(60000), b.take(60000), b.take(60000), b.take(60000) ], [ true, true, true, false ]);
    });
  });

  describe('ConnectionsPerIp', () => {
    it('allows up to max per address; a close frees a slot; 0 means no limit', () => {
      const c = new ConnectionsPerIp();
      c.opened('a');
      c.opened('a');
      assert.strictEqual(c.allows('a', 2), false);
      assert.strictEqual(c.allows('b', 2), true);
      assert.strictEqual(c.allows('a', 0), true);
      c.closed('a');
      assert.strictEqual(c.allows('a', 2), true);
      c.closed('a');
      assert.strictEqual(c.count('a'), 0);
    });
  });

  describe('requestIp()', () => {
    const req = (remoteAddress: string, xff?: string) =>
      ({ headers: xff === undefined ? {} : { 'x-forwarded-for': xff }, socket: { remoteAddress } }) as unknown as IncomingMessage;
    it('is the TCP peer, or the last X-Forwarded-For hop when the proxy is trusted', () => {
      assert.strictEqual(requestIp(req('::ffff:10.0.0.1', '1.2.3.4'), false), '10.0.0.1');
      assert.strictEqual(requestIp(req('10.0.0.1', '1.2.3.4, 5.6.7.8'), true), '5.6.7.8');
      assert.strictEqual(requestIp(req('10.0.0.1'), true), '10.0.0.1');
    });
  });

  describe('TokenCache negative entries', () => {
    const info = (token: string) => ({ token, uuid: 'u', deviceId: 1, installId: 'i', appId: 'a', deviceType: null, isReadOnly: false, note: null }) as TokenInfo;
    it('remembers unknown tokens for its TTL; delete() and clear() forget them; a stale generation is ignored', async () => {
      const c = new TokenCache(60000, 2, 50);
      c.setUnknown('x', c.generation);
      assert.strictEqual(c.isUnknown('x'), true);
      c.delete('x');
      assert.strictEqual(c.isUnknown('x'), false);
      const g = c.generation;
      c.delete('other');
      c.setUnknown('x', g); // read before an invalidation: not remembered
      assert.strictEqual(c.isUnknown('x'), false);
      c.setUnknown('y', c.generation);
      await new Promise(resolve => setTimeout(resolve, 60));
      assert.strictEqual(c.isUnknown('y'), false);
      // Bounded like the positive entries.
      for (const t of [ 'p', 'q', 'r' ]) c.setUnknown(t, c.generation);
      assert.deepStrictEqual([ c.isUnknown('p'), c.isUnknown('q'), c.isUnknown('r') ], [ false, true, true ]);
      c.set(info('q'), c.generation);
      c.clear();
      assert.deepStrictEqual([ c.isUnknown('q'), c.get('q') ], [ false, undefined ]);
      assert.strictEqual(new TokenCache(60000, 2, 0).isUnknown('z'), false);
    });
  });
});
