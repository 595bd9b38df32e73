import { Service } from 'egg';
import { QueryTypes, Transaction } from 'sequelize';
import type { KvChange } from '../lib/kvEvents';
import type { DeviceLogAttributes } from '../model/deviceLog';

/** The name of KV change records (as delivered). */
export const KV_CHANGED = 'kv-key-changed';

/** A history record: the payload as delivered, plus its name and when it was recorded. */
export type HistoryRecord = Record<string, unknown> & { type: string; recordedAt: string };

type LogRow = Pick<DeviceLogAttributes, 'revision' | 'type' | 'key' | 'action' | 'created' | 'batch' | 'payload'> & {
  id: number | string;
  recordedAt: Date | string;
};

/** The row that records a KV change (written in the change's own transaction). */
export function kvChangeRow(deviceId: number, change: KvChange) {
  return {
    deviceId,
    revision: change.revision,
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
 * The history of a device, one store (`device_log`) for both kinds of records:
 * KV changes (consecutive revisions per device; written in the change's own transaction
 * by KvService and app/lib/kvWriter.ts) and relayed events (send-event, revision null).
 * Trimmed in the background (app/lib/logTrimmer.ts) to the last CHANGES_RETENTION changes
 * and the last 1000 relayed events per device.
 */
export default class ChangesService extends Service {
  private get db() {
    return this.ctx.model;
  }

  /** Records KV changes inside the transaction that makes them. */
  async recordKvChanges(deviceId: number, changes: KvChange[], transaction: Transaction) {
    if (changes.length === 0) return;
    await this.db.DeviceLog.bulkCreate(changes.map(c => kvChangeRow(deviceId, c)), { transaction });
    this.app.logTrimmer.touch(deviceId, changes[changes.length - 1].revision);
  }

  /** Records one relayed event for each device it was delivered to. */
  async recordEvent(deviceIds: number[], type: string, payload: object, at: Date) {
    if (deviceIds.length === 0) return;
    const json = JSON.stringify(payload);
    await this.db.DeviceLog.bulkCreate(deviceIds.map(deviceId => ({
      deviceId, revision: null, type, key: null, action: null, created: null, batch: null, payload: json, recordedAt: at,
    })));
    for (const id of deviceIds) this.app.logTrimmer.touch(id, null);
  }

  /**
   * A device's most recent records: `limit` of them after skipping the `offset` most
   * recent ones, oldest first.
   */
  async history(device: { id: number; uuid: string }, limit: number, offset: number): Promise<HistoryRecord[]> {
    const rows = await this.db.query(
      'SELECT id, revision, type, `key`, action, created, batch, payload, recordedAt FROM device_log' +
      ' WHERE deviceId = ? ORDER BY id DESC LIMIT ? OFFSET ?',
      { replacements: [ device.id, limit, offset ], type: QueryTypes.SELECT, raw: true },
    ) as LogRow[];
    return rows.reverse().map(row => {
      const recordedAt = new Date(row.recordedAt).toISOString();
      const payload = row.revision !== null ? kvPayload(device.uuid, row) : JSON.parse(row.payload ?? 'null');
      return { ...payload, type: row.type, recordedAt };
    });
  }

  /**
   * Drops what is past retention for one device: KV changes up to `latestRevision -
   * CHANGES_RETENTION` (null: unknown, not trimmed), relayed events beyond the newest
   * 1000 when `events` is set. Never blocks a write: single index-range deletes.
   */
  async trim(deviceId: number, latestRevision: number | null, events: boolean) {
    const { changesRetention, eventHistoryMax } = this.app.settings;
    if (latestRevision !== null && latestRevision > changesRetention) {
      await this.db.query('DELETE FROM device_log WHERE deviceId = ? AND revision IS NOT NULL AND revision <= ?', {
        replacements: [ deviceId, latestRevision - changesRetention ], type: QueryTypes.DELETE,
      });
    }
    if (events) {
      const rows = await this.db.query(
        'SELECT id FROM device_log WHERE deviceId = ? AND revision IS NULL ORDER BY id DESC LIMIT 1 OFFSET ?',
        { replacements: [ deviceId, eventHistoryMax ], type: QueryTypes.SELECT, raw: true },
      ) as Array<{ id: number | string }>;
      if (rows.length) {
        await this.db.query('DELETE FROM device_log WHERE deviceId = ? AND revision IS NULL AND id <= ?', {
          replacements: [ deviceId, rows[0].id ], type: QueryTypes.DELETE,
        });
      }
    }
  }
}
