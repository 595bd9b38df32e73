import crypto from 'node:crypto';

let lastMs = 0;
let seq = 0;

/**
 * The server's row ids (installs, auto-auth configs, accounts, events; the import's
 * configs too): UUID version 7 (RFC 9562), time-ordered. Within a process ids are
 * strictly increasing (a 12-bit counter orders ids minted in the same millisecond),
 * so "newest first" is exact even for installs made in the same millisecond.
 */
export function uuidv7(now = Date.now()): string {
  if (now <= lastMs) {
    seq += 1;
    if (seq > 0xfff) {
      lastMs += 1;
      seq = 0;
    }
  } else {
    lastMs = now;
    seq = 0;
  }
  const time = lastMs.toString(16).padStart(12, '0');
  const rand = crypto.randomBytes(8);
  rand[0] = 0x80 + (rand[0] % 0x40); // RFC 9562 variant bits (10xxxxxx)
  const r = rand.toString('hex');
  return `${time.slice(0, 8)}-${time.slice(8, 12)}-7${seq.toString(16).padStart(3, '0')}-${r.slice(0, 4)}-${r.slice(4, 16)}`;
}
