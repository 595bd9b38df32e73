import type { Application } from 'egg';
import type { Model } from 'sequelize';

export interface DeviceLogAttributes {
  deviceId: number;
  /** KV changes: the device revision of the change; relayed events: the device's revision when sent. */
  revision: number;
  /** 0 for KV changes; relayed events: > 0, time-ordered (after the change of the same revision). */
  seq: number;
  /** The event name as delivered: `kv-key-changed` or a relayed event's type. */
  type: string;
  key: string | null;
  action: 'upsert' | 'delete' | null;
  created: boolean | null;
  batch: boolean | null;
  /** Relayed events: the delivered payload as JSON text. */
  payload: string | null;
  recordedAt: Date;
}

/**
 * Maps the `device_log` table: one store for a device's history, KV changes (the change
 * log, §7) and relayed events (§6.4), ordered by (revision, seq). See app/service/changes.ts.
 */
export default (app: Application) => {
  const { STRING, INTEGER, BIGINT, DATE, BOOLEAN, TEXT } = app.Sequelize;
  return app.model.define<Model<DeviceLogAttributes, Partial<DeviceLogAttributes>>, DeviceLogAttributes>('DeviceLog', {
    deviceId: { type: INTEGER, allowNull: false, primaryKey: true },
    revision: { type: BIGINT, allowNull: false, primaryKey: true },
    seq: { type: BIGINT, allowNull: false, primaryKey: true, defaultValue: 0 },
    type: { type: STRING(100), allowNull: false },
    key: { type: STRING(191), allowNull: true },
    action: { type: STRING(8), allowNull: true },
    created: { type: BOOLEAN, allowNull: true },
    batch: { type: BOOLEAN, allowNull: true },
    payload: { type: TEXT, allowNull: true },
    recordedAt: { type: DATE(3), allowNull: false },
  }, { tableName: 'device_log', timestamps: false });
};
