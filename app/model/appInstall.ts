import type { Application } from 'egg';
import type { Model } from 'sequelize';

export interface AppInstallAttributes {
  id: string;
  deviceId: number;
  appId: string;
  token: string;
  note: string | null;
  /** teacher | student | classroom | parent, or null (§6.2). */
  deviceType: string | null;
  isReadOnly: boolean;
  installedAt: Date;
  updatedAt: Date;
}

/** Maps the `app_installs` table: one row per KV token. */
export default (app: Application) => {
  const { STRING, INTEGER, CHAR, TEXT, DATE, BOOLEAN } = app.Sequelize;
  return app.model.define<Model<AppInstallAttributes, Partial<AppInstallAttributes>>, AppInstallAttributes>('AppInstall', {
    id: { type: STRING(36), primaryKey: true },
    deviceId: { type: INTEGER, allowNull: false },
    appId: { type: STRING(191), allowNull: false },
    token: { type: CHAR(64), allowNull: false, unique: true },
    note: { type: TEXT, allowNull: true },
    deviceType: { type: STRING(16), allowNull: true },
    isReadOnly: { type: BOOLEAN, allowNull: false, defaultValue: false },
    installedAt: { type: DATE(3), allowNull: false },
    updatedAt: { type: DATE(3), allowNull: false },
  }, { tableName: 'app_installs', createdAt: 'installedAt' });
};
