import type { Application } from 'egg';
import type { Model } from 'sequelize';

export interface AutoAuthConfigAttributes {
  id: string;
  deviceId: number;
  /** bcrypt hash of the class password; null = a config without password. */
  password: string | null;
  deviceType: string | null;
  isReadOnly: boolean;
  createdAt: Date;
  updatedAt: Date;
}

/** Maps the `auto_auth_configs` table: namespace-login configs of a device (§6.1). */
export default (app: Application) => {
  const { STRING, INTEGER, DATE, BOOLEAN } = app.Sequelize;
  return app.model.define<Model<AutoAuthConfigAttributes, Partial<AutoAuthConfigAttributes>>, AutoAuthConfigAttributes>('AutoAuthConfig', {
    id: { type: STRING(36), primaryKey: true },
    deviceId: { type: INTEGER, allowNull: false },
    password: { type: STRING(255), allowNull: true },
    deviceType: { type: STRING(16), allowNull: true },
    isReadOnly: { type: BOOLEAN, allowNull: false, defaultValue: false },
    createdAt: { type: DATE(3), allowNull: false },
    updatedAt: { type: DATE(3), allowNull: false },
  }, { tableName: 'auto_auth_configs' });
};
