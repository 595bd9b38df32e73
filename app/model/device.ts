import type { Application } from 'egg';
import type { Model } from 'sequelize';

export interface DeviceAttributes {
  id: number;
  uuid: string;
  name: string | null;
  /**
   * Unique, 1..191 characters; the uuid unless set (namespace login, §6.1). NULL: the
   * namespace is the uuid, which was already another device's namespace at registration
   * (DeviceService.create(), findByNamespace()); shown as the uuid everywhere.
   */
  namespace: string | null;
  password: string | null;
  passwordHint: string | null;
  revision: number;
  /** The account the device is bound to (§8); null: unbound. */
  accountId: string | null;
  createdAt: Date;
  updatedAt: Date;
}

/** Maps the `devices` table. */
export default (app: Application) => {
  const { STRING, INTEGER, BIGINT, DATE } = app.Sequelize;
  return app.model.define<Model<DeviceAttributes, Partial<DeviceAttributes>>, DeviceAttributes>('Device', {
    id: { type: INTEGER, primaryKey: true, autoIncrement: true },
    uuid: { type: STRING(191), allowNull: false, unique: true },
    name: { type: STRING(255), allowNull: true },
    namespace: { type: STRING(191), allowNull: true, unique: true },
    password: { type: STRING(255), allowNull: true },
    passwordHint: { type: STRING(255), allowNull: true },
    revision: { type: BIGINT, allowNull: false, defaultValue: 0 },
    accountId: { type: STRING(191), allowNull: true },
    createdAt: { type: DATE(3), allowNull: false },
    updatedAt: { type: DATE(3), allowNull: false },
  }, { tableName: 'devices' });
};
