import assert from 'node:assert';
import bcrypt from 'bcryptjs';
import { hashPassword, newToken, verifyPassword } from '../../../app/lib/password';

describe('test/app/lib/password.test.ts', () => {
  describe('hashPassword()', () => {
    it('makes a bcrypt hash of the given cost that verifies', async () => {
      const hash = await hashPassword('s3cret', 10);
      assert.match(hash, /^\$2[aby]\$10\$[./A-Za-z0-9]{53}$/);
      assert.strictEqual(await verifyPassword('s3cret', hash), true);
      assert.strictEqual(await verifyPassword('s3cret ', hash), false);
    });

    it('salts: the same password gives different hashes', async () => {
      assert.notStrictEqual(await hashPassword('same', 10), await hashPassword('same', 10));
    });
  });

  describe('verifyPassword()', () => {
    it('verifies cost-8 bcryptjs hashes as the original server made them', async () => {
      const legacy = bcrypt.hashSync('密码-legacy', 8);
      assert.strictEqual(await verifyPassword('密码-legacy', legacy), true);
      assert.strictEqual(await verifyPassword('密码-Legacy', legacy), false);
    });

    it('verifies $2b$ and $2y$ forms of the same hash', async () => {
      const hash = bcrypt.hashSync('pw', 8);
      for (const prefix of [ '$2a$', '$2b$', '$2y$' ]) {
        assert.strictEqual(await verifyPassword('pw', hash.replace(/^\$2[aby]\$/, prefix)), true, prefix);
      }
    });

    it('is false (never throws) for values that are not bcrypt hashes', async () => {
      for (const stored of [ '', 'pw', '$2a$', '$1$abc$def', 'x'.repeat(60) ]) {
        assert.strictEqual(await verifyPassword('pw', stored), false, stored);
      }
    });
  });

  describe('newToken()', () => {
    it('gives 64 lowercase hex characters, different every time', () => {
      const seen = new Set<string>();
      for (let i = 0; i < 100; i++) {
        const t = newToken();
        assert.match(t, /^[0-9a-f]{64}$/);
        seen.add(t);
      }
      assert.strictEqual(seen.size, 100);
    });
  });
});
