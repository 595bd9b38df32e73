import type { Application } from 'egg';
import type { Model } from 'sequelize';

export interface KvEntryAttributes {
  deviceId: number;
  key: string;
  value: string;
  creatorIp: string | null;
  revision: number;
  createdAt: Date;
  updatedAt: Date;
}

/** Maps the `kv_entries` table; `value` holds the JSON text exactly as served. */
export default (app: Application) => {
  const { STRING, INTEGER, BIGINT, TEXT, DATE } = app.Sequelize;
  return app.model.define<Model<KvEntryAttributes, Partial<KvEntryAttributes>>, KvEntryAttributes>('KvEntry', {
    deviceId: { type: INTEGER, allowNull: false, primaryKey: true },
    key: { type: STRING(191), allowNull: false, primaryKey: true },
    value: { type: app.model.getDialect() === 'mysql' ? TEXT('long') : TEXT, allowNull: false },
    creatorIp: { type: STRING(64), allowNull: true },
    revision: { type: BIGINT, allowNull: false, defaultValue: 0 },
    createdAt: { type: DATE(3), allowNull: false },
    updatedAt: { type: DATE(3), allowNull: false },
  }, { tableName: 'kv_entries' });
};
