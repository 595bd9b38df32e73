import crypto from 'node:crypto';
import bcrypt from 'bcryptjs';

/** Bcrypt hashes ($2a$/$2b$/$2y$, any cost): the original server's cost-8 hashes verify. */
export async function hashPassword(plain: string, cost: number): Promise<string> {
  return bcrypt.hash(plain, cost);
}

export async function verifyPassword(plain: string, hash: string): Promise<boolean> {
  if (!/^\$2[aby]\$\d\d\$/.test(hash)) return false;
  // bcryptjs compares the final hashes in constant time.
  return bcrypt.compare(plain, hash.replace(/^\$2y\$/, '$2b$'));
}

/** 64 lowercase hex characters from the OS's cryptographic source. */
export function newToken(): string {
  return crypto.randomBytes(32).toString('hex');
}
