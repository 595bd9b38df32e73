import { Service } from 'egg';
import { QueryTypes, Transaction, UniqueConstraintError } from 'sequelize';
import { HttpError, notFound } from '../lib/errors';
import type { KvChange } from '../lib/kvEvents';
import type { DeviceLogAttributes } from '../model/deviceLog';

/** The name of KV change records (as delivered). */
export const KV_CHANGED = 'kv-key-changed';

/** A history record: the payload as delivered, plus its name and when it was recorded. */
export type HistoryRecord = Record<string, unknown> & { type: string; recordedAt: string };

type LogRow = Pick<DeviceLogAttributes, 'type' | 'key' | 'action' | 'created' | 'batch' | 'payload'> & {
  revision: number | string;
  seq: number | string;
  recordedAt: Date | string;
};

let lastMs = 0;
let counter = 0;

/**
 * The `seq` of a relayed event: milliseconds × 1000 + a per-process counter, so events are
 * ordered by time (across workers, by their clocks) and strictly within one process. Two
 * workers can collide only in the same millisecond with the same counter; the insert is
 * then retried with the next value.
 */
export function eventSeq(now = Date.now()): number {
  if (now > lastMs) {
    lastMs = now;
    counter = 0;
  } else {
    counter += 1;
    if (counter >= 1000) {
      lastMs += 1;
      counter = 0;
    }
  }
  return lastMs * 1000 + counter + 1;
}

/** The row that records a KV change (written in the change's own transaction). */
export function kvChangeRow(deviceId: number, change: KvChange) {
  return {
    deviceId,
    revision: change.revision,
    seq: 0,
    type: KV_CHANGED,
    key: change.key,
    action: change.action,
    created: change.action === 'upsert' ? change.created : null,
    batch: change.action === 'upsert' && change.batch ? true : null,
    payload: null,
    recordedAt: new Date(change.action === 'upsert' ? change.updatedAt : change.deletedAt),
  };
}

/** A stored KV change as the `kv-key-changed` payload it was delivered as. */
function kvPayload(uuid: string, row: LogRow): KvChange {
  const at = new Date(row.recordedAt).toISOString();
  const revision = Number(row.revision);
  const key = row.key ?? '';
  if (row.action === 'delete') return { uuid, key, action: 'delete', deletedAt: at, revision };
  const change: KvChange = { uuid, key, action: 'upsert', created: !!Number(row.created), updatedAt: at, revision };
  if (row.batch !== null && Number(row.batch)) change.batch = true;
  return change;
}

/**
 * The history of a device, one store (`device_log`) for both kinds of records, ordered by
 * its primary key (deviceId, revision, seq): KV changes (seq 0, consecutive revisions per
 * device; written in the change's own transaction by KvService and app/lib/kvWriter.ts) and
 * relayed events (send-event; the revision they followed, seq > 0).
 * Trimmed in the background (app/lib/logTrimmer.ts) to the last CHANGES_RETENTION changes
 * and the last 1000 relayed events per device.
 */
export default class ChangesService extends Service {
  private get db() {
    return this.ctx.model;
  }

  /**
   * Records KV changes inside the transaction that makes them. The log trimmer hears of them
   * once committed: a round between here and the commit would see neither the records nor
   * the revision, and would not come back to the device before its next write.
   */
  async recordKvChanges(deviceId: number, changes: KvChange[], transaction: Transaction) {
    if (changes.length === 0) return;
    await this.db.DeviceLog.bulkCreate(changes.map(c => kvChangeRow(deviceId, c)), { transaction });
    const revision = changes[changes.length - 1].revision;
    transaction.afterCommit(() => this.app.logTrimmer.touch(deviceId, revision));
  }

  /**
   * Records one relayed event for each device it was delivered to, after the device's latest
   * change (its current revision).
   */
  async recordEvent(deviceIds: number[], type: string, payload: object, at: Date) {
    if (deviceIds.length === 0) return;
    const json = JSON.stringify(payload);
    const devices = await this.db.query(`SELECT id, revision FROM devices WHERE id IN (${deviceIds.map(() => '?').join(', ')})`, {
      replacements: deviceIds, type: QueryTypes.SELECT, raw: true,
    }) as Array<{ id: number; revision: number | string }>;
    for (let attempt = 1; ; attempt++) {
      const seq = eventSeq();
      try {
        await this.db.DeviceLog.bulkCreate(devices.map(d => ({
          deviceId: Number(d.id), revision: Number(d.revision), seq, type, key: null, action: null, created: null, batch: null, payload: json, recordedAt: at,
        })));
        break;
      } catch (err) {
        if (!(err instanceof UniqueConstraintError) || attempt >= 3) throw err;
      }
    }
    for (const d of devices) this.app.logTrimmer.touch(Number(d.id), null);
  }

  /**
   * A device's most recent records: `limit` of them after skipping the `offset` most
   * recent ones, oldest first.
   */
  async history(device: { id: number; uuid: string }, limit: number, offset: number): Promise<HistoryRecord[]> {
    const rows = await this.db.query(
      'SELECT revision, seq, type, `key`, action, created, batch, payload, recordedAt FROM device_log' +
      ' WHERE deviceId = ? ORDER BY revision DESC, seq DESC LIMIT ? OFFSET ?',
      { replacements: [ device.id, limit, offset ], type: QueryTypes.SELECT, raw: true },
    ) as LogRow[];
    return rows.reverse().map(row => {
      const recordedAt = new Date(row.recordedAt).toISOString();
      const payload = Number(row.seq) === 0 ? kvPayload(device.uuid, row) : JSON.parse(row.payload ?? 'null');
      return { ...payload, type: row.type, recordedAt };
    });
  }

  /**
   * The device's KV changes with revision > `since`, oldest first, at most `limit`
   * (`GET /kv/_changes`, CONTRACT.md §7): `more` when later ones exist, `revision` the
   * device's latest. Changes after `since` that are no longer kept: 410 CHANGES_EXPIRED with
   * `details.oldest`, the smallest `since` still answered (the client re-reads its keys).
   */
  async since(device: { deviceId: number; uuid: string }, since: number, limit: number) {
    const [ dev ] = await this.db.query('SELECT revision FROM devices WHERE id = ?', {
      replacements: [ device.deviceId ], type: QueryTypes.SELECT, raw: true,
    }) as Array<{ revision: number | string }>;
    if (!dev) throw notFound('设备不存在');
    const latest = Number(dev.revision);
    if (since >= latest) return { changes: [], revision: latest, more: false };
    const rows = await this.db.query(
      'SELECT revision, seq, type, `key`, action, created, batch, payload, recordedAt FROM device_log' +
      ' WHERE deviceId = ? AND seq = 0 AND revision > ? ORDER BY revision LIMIT ?',
      { replacements: [ device.deviceId, since, limit + 1 ], type: QueryTypes.SELECT, raw: true },
    ) as LogRow[];
    // Revisions are consecutive and every committed change has its record: a page that does not
    // start right after `since` (or none at all) means the changes in between were trimmed.
    if (rows.length === 0 || Number(rows[0].revision) !== since + 1) {
      const [ first ] = await this.db.query(
        'SELECT revision FROM device_log WHERE deviceId = ? AND seq = 0 ORDER BY revision LIMIT 1',
        { replacements: [ device.deviceId ], type: QueryTypes.SELECT, raw: true },
      ) as Array<{ revision: number | string }>;
      const oldest = first ? Number(first.revision) - 1 : latest;
      throw new HttpError(410, '请求的变更已不再保留，请重新读取所有键', { code: 'CHANGES_EXPIRED', details: { oldest, revision: latest } });
    }
    const page = rows.slice(0, limit);
    return { changes: page.map(row => kvPayload(device.uuid, row)), revision: latest, more: rows.length > limit };
  }

  /** The latest revision of each of the devices (absent: no such device); the change feeds' poll (app/lib/changeFeed.ts). */
  async latestRevisions(deviceIds: number[]): Promise<Map<number, number>> {
    const out = new Map<number, number>();
    if (deviceIds.length === 0) return out;
    const rows = await this.db.query(`SELECT id, revision FROM devices WHERE id IN (${deviceIds.map(() => '?').join(', ')})`, {
      replacements: deviceIds, type: QueryTypes.SELECT, raw: true,
    }) as Array<{ id: number | string; revision: number | string }>;
    for (const row of rows) out.set(Number(row.id), Number(row.revision));
    return out;
  }

  /**
   * Drops what is past retention for one device: KV changes up to `latest -
   * CHANGES_RETENTION`, where `latest` is the smaller of `latestRevision` (what a writer
   * touched; null: unknown, not trimmed) and the device's committed revision, read here;
   * relayed events beyond the newest 1000 when `events` is set. Primary-key range deletes,
   * off the write path.
   *
   * The committed revision bounds it because a touched revision can belong to another
   * device than the one now behind the id (ids restart when the tables are emptied, SQLite
   * reuses the highest id of a deleted row): trimming by it would drop the newest changes
   * of a device whose log is younger, and a client still within retention would be told
   * resync-required (CONTRACT.md §7).
   */
  async trim(deviceId: number, latestRevision: number | null, events: boolean) {
    const { changesRetention, eventHistoryMax } = this.app.settings;
    if (latestRevision !== null && latestRevision > changesRetention) {
      const [ dev ] = await this.db.query('SELECT revision FROM devices WHERE id = ?', {
        replacements: [ deviceId ], type: QueryTypes.SELECT, raw: true,
      }) as Array<{ revision: number | string }>;
      const latest = dev ? Math.min(latestRevision, Number(dev.revision)) : 0;
      if (latest > changesRetention) {
        await this.db.query('DELETE FROM device_log WHERE deviceId = ? AND revision <= ? AND seq = 0', {
          replacements: [ deviceId, latest - changesRetention ], type: QueryTypes.DELETE,
        });
      }
    }
    if (events) {
      const rows = await this.db.query(
        'SELECT revision, seq FROM device_log WHERE deviceId = ? AND seq > 0 ORDER BY revision DESC, seq DESC LIMIT 1 OFFSET ?',
        { replacements: [ deviceId, eventHistoryMax ], type: QueryTypes.SELECT, raw: true },
      ) as Array<{ revision: number | string; seq: number | string }>;
      if (rows.length) {
        const { revision, seq } = rows[0];
        await this.db.query('DELETE FROM device_log WHERE deviceId = ? AND seq > 0 AND (revision < ? OR (revision = ? AND seq <= ?))', {
          replacements: [ deviceId, revision, revision, seq ], type: QueryTypes.DELETE,
        });
      }
    }
  }
}
