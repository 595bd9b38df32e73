import { EventEmitter } from 'node:events';
import type { BusMessage, ConsumeResult, DeviceCodeStatus, PresenceEntry, RateHit, SharedState } from './types';

/** Hashes per revocationsSince() answer. */
const REVOCATION_PAGE = 1000;

interface Expiring<T> { value: T; expiresAt: number }

/** In-process state for the embedded default (a single worker). */
export class MemoryState implements SharedState {
  readonly kind = 'memory' as const;
  private readonly counters = new Map<string, Expiring<number>>();
  private readonly codes = new Map<string, Expiring<{ createdAt: number; token: string | null }>>();
  private readonly rooms = new Map<string, Set<string>>();
  private readonly tickets = new Map<string, Expiring<string>>();
  private readonly revisions = new Map<number, number>();
  /** device → until when its revision is unknown (kvRevisionsDistrust). */
  private readonly distrusted = new Map<number, number>();
  private readonly bus = new EventEmitter();
  /** The revocation record: hashes in order, each with its sequence number and expiry. */
  private readonly revoked: Array<{ seq: number; hash: string; expiresAt: number }> = [];
  private revokedSeq = 0;
  private sweepTimer?: NodeJS.Timeout;

  async start() {
    // Expired counters and codes are dropped lazily; this bounds memory for ids seen once.
    this.sweepTimer = setInterval(() => this.sweep(), 60000);
    this.sweepTimer.unref();
  }

  async close() {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.bus.removeAllListeners();
  }

  private sweep(now = Date.now()) {
    for (const [ k, v ] of this.counters) if (v.expiresAt <= now) this.counters.delete(k);
    for (const [ k, v ] of this.codes) if (v.expiresAt <= now) this.codes.delete(k);
    for (const [ k, v ] of this.tickets) if (v.expiresAt <= now) this.tickets.delete(k);
  }

  async rateHit(bucket: string, id: string, windowMs: number): Promise<RateHit> {
    const key = `${bucket}\n${id}`;
    const now = Date.now();
    let entry = this.counters.get(key);
    if (!entry || entry.expiresAt <= now) {
      entry = { value: 0, expiresAt: now + windowMs };
      this.counters.set(key, entry);
    }
    entry.value += 1;
    return { count: entry.value, resetMs: entry.expiresAt - now };
  }

  async ratePeek(bucket: string, id: string): Promise<RateHit> {
    const entry = this.counters.get(`${bucket}\n${id}`);
    const now = Date.now();
    if (!entry || entry.expiresAt <= now) return { count: 0, resetMs: 0 };
    return { count: entry.value, resetMs: entry.expiresAt - now };
  }

  private liveCode(code: string) {
    const entry = this.codes.get(code);
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      this.codes.delete(code);
      return undefined;
    }
    return entry;
  }

  async deviceCodeCreate(code: string, ttlMs: number, now: number) {
    if (this.liveCode(code)) return false;
    this.codes.set(code, { value: { createdAt: now, token: null }, expiresAt: now + ttlMs });
    return true;
  }

  async deviceCodeBind(code: string, token: string) {
    const entry = this.liveCode(code);
    if (!entry) return false;
    entry.value.token = token;
    return true;
  }

  async deviceCodeConsume(code: string): Promise<ConsumeResult> {
    const entry = this.liveCode(code);
    if (!entry) return { status: 'expired' };
    if (entry.value.token) {
      this.codes.delete(code);
      return { status: 'success', token: entry.value.token };
    }
    return { status: 'pending', ttlMs: entry.expiresAt - Date.now() };
  }

  async deviceCodeStatus(code: string): Promise<DeviceCodeStatus | null> {
    const entry = this.liveCode(code);
    if (!entry) return null;
    return { createdAt: entry.value.createdAt, token: entry.value.token, ttlMs: entry.expiresAt - Date.now() };
  }

  async presenceJoin(uuid: string, socketId: string) {
    let room = this.rooms.get(uuid);
    if (!room) {
      room = new Set();
      this.rooms.set(uuid, room);
    }
    room.add(socketId);
    return room.size;
  }

  async presenceLeave(uuid: string, socketId: string) {
    const room = this.rooms.get(uuid);
    if (!room) return 0;
    room.delete(socketId);
    if (room.size === 0) this.rooms.delete(uuid);
    return room.size;
  }

  async presenceList(): Promise<PresenceEntry[]> {
    return [ ...this.rooms ].map(([ uuid, set ]) => ({ uuid, connections: set.size }));
  }

  async kvRevisions(deviceIds: number[]) {
    const now = Date.now();
    return deviceIds.map(d => {
      const until = this.distrusted.get(d);
      if (until !== undefined && until > now) return null;
      return this.revisions.get(d) ?? null;
    });
  }

  async kvRevisionsRaise(changes: Array<{ deviceId: number; revision: number }>) {
    for (const { deviceId, revision } of changes) {
      if (revision > (this.revisions.get(deviceId) ?? -1)) this.revisions.set(deviceId, revision);
    }
  }

  async kvRevisionsDistrust(deviceIds: number[], forMs: number) {
    for (const d of deviceIds) this.distrusted.set(d, Date.now() + forMs);
  }

  async kvRevisionsForget(deviceIds: number[]) {
    for (const d of deviceIds) this.revisions.delete(d);
    await this.publish({ type: 'kv-dropped', deviceIds });
  }

  async revocationRecord(hash: string, keepMs: number) {
    const now = Date.now();
    while (this.revoked.length > 0 && this.revoked[0].expiresAt <= now) this.revoked.shift();
    this.revokedSeq += 1;
    this.revoked.push({ seq: this.revokedSeq, hash, expiresAt: now + keepMs });
  }

  async revocationsSince(cursor: string | null) {
    const after = cursor === null ? 0 : Number(cursor);
    const page = this.revoked.filter(r => r.seq > after).slice(0, REVOCATION_PAGE);
    return { cursor: page.length > 0 ? String(page[page.length - 1].seq) : cursor, hashes: page.map(r => r.hash) };
  }

  // One worker: nobody else has metrics to share.
  async metricsSave() {}

  async metricsOthers(): Promise<string[]> {
    return [];
  }

  private liveTicket(key: string) {
    const t = this.tickets.get(key);
    if (t && t.expiresAt <= Date.now()) {
      this.tickets.delete(key);
      return undefined;
    }
    return t;
  }

  async ticketPut(kind: string, id: string, value: string, ttlMs: number) {
    const key = `${kind}\n${id}`;
    if (this.liveTicket(key)) return false;
    this.tickets.set(key, { value, expiresAt: Date.now() + ttlMs });
    return true;
  }

  async ticketTake(kind: string, id: string) {
    const key = `${kind}\n${id}`;
    const t = this.liveTicket(key);
    this.tickets.delete(key);
    return t ? t.value : null;
  }

  async ticketExists(kind: string, id: string) {
    return this.liveTicket(`${kind}\n${id}`) !== undefined;
  }

  async probe() {}

  async publish(message: BusMessage) {
    this.bus.emit('message', message);
  }

  onMessage(handler: (message: BusMessage) => void) {
    this.bus.on('message', handler);
  }
}
