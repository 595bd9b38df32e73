import type { Application } from 'egg';
import type { Model } from 'sequelize';

export interface AccountAttributes {
  id: string;
  provider: string;
  providerId: string;
  email: string | null;
  name: string | null;
  avatarUrl: string | null;
  /** The provider's user info as JSON text. */
  providerData: string | null;
  /** SHA-256 (hex) of the account's current refresh token; null: none. */
  refreshTokenHash: string | null;
  refreshTokenExpiry: Date | null;
  /** Raised by logout-all: access tokens carrying an older version are refused. */
  tokenVersion: number;
  createdAt: Date;
  updatedAt: Date;
}

/** Maps the `accounts` table (§8). */
export default (app: Application) => {
  const { STRING, INTEGER, DATE, TEXT } = app.Sequelize;
  return app.model.define<Model<AccountAttributes, Partial<AccountAttributes>>, AccountAttributes>('Account', {
    id: { type: STRING(191), primaryKey: true },
    provider: { type: STRING(64), allowNull: false },
    providerId: { type: STRING(191), allowNull: false },
    email: { type: STRING(191), allowNull: true },
    name: { type: STRING(191), allowNull: true },
    avatarUrl: { type: STRING(1024), allowNull: true },
    providerData: { type: TEXT, allowNull: true },
    refreshTokenHash: { type: STRING(64), allowNull: true },
    refreshTokenExpiry: { type: DATE(3), allowNull: true },
    tokenVersion: { type: INTEGER, allowNull: false, defaultValue: 1 },
    createdAt: { type: DATE(3), allowNull: false },
    updatedAt: { type: DATE(3), allowNull: false },
  }, { tableName: 'accounts' });
};
