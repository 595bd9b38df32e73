import type { Application } from 'egg';
import type { Model } from 'sequelize';

export interface AppInstallAttributes {
  id: string;
  deviceId: number;
  appId: string;
  token: string;
  note: string | null;
  installedAt: Date;
  updatedAt: Date;
}

/** Maps the `app_installs` table: one row per KV token. */
export default (app: Application) => {
  const { STRING, INTEGER, CHAR, TEXT, DATE } = app.Sequelize;
  return app.model.define<Model<AppInstallAttributes, Partial<AppInstallAttributes>>, AppInstallAttributes>('AppInstall', {
    id: { type: STRING(36), primaryKey: true },
    deviceId: { type: INTEGER, allowNull: false },
    appId: { type: STRING(191), allowNull: false },
    token: { type: CHAR(64), allowNull: false, unique: true },
    note: { type: TEXT, allowNull: true },
    installedAt: { type: DATE(3), allowNull: false },
    updatedAt: { type: DATE(3), allowNull: false },
  }, { tableName: 'app_installs', createdAt: 'installedAt' });
};
