'use strict';

/**
 * Accounts (CONTRACT.md §8) and device binding; also the target of the import's accounts (§9).
 *
 * - accounts: one row per (provider, providerId); ids are kept as imported (the original's
 *   cuids) or generated (UUIDv7). `tokenVersion` is raised by logout-all (every access token
 *   issued before is refused); `refreshTokenHash` is the SHA-256 of the one refresh token the
 *   account holds (rotated on every refresh; a new login replaces it), never the token itself.
 * - devices.accountId: the account a device is bound to (NULL: unbound). No foreign key, as in
 *   the original's PostgreSQL schema; there is no route that deletes an account.
 */
const { schemaHelpers } = require('../collation');

module.exports = {
  async up(queryInterface, Sequelize) {
    const { tableOptions, exact } = await schemaHelpers(queryInterface, Sequelize);
    const mysql = queryInterface.sequelize.getDialect() === 'mysql';
    await queryInterface.createTable('accounts', {
      id: { type: exact(191), primaryKey: true },
      provider: { type: exact(64), allowNull: false },
      providerId: { type: exact(191), allowNull: false },
      email: { type: Sequelize.STRING(191), allowNull: true },
      name: { type: Sequelize.STRING(191), allowNull: true },
      avatarUrl: { type: Sequelize.STRING(1024), allowNull: true },
      providerData: { type: mysql ? Sequelize.TEXT('medium') : Sequelize.TEXT, allowNull: true },
      refreshTokenHash: { type: Sequelize.STRING(64), allowNull: true },
      refreshTokenExpiry: { type: Sequelize.DATE(3), allowNull: true },
      tokenVersion: { type: Sequelize.INTEGER, allowNull: false, defaultValue: 1 },
      createdAt: { type: Sequelize.DATE(3), allowNull: false },
      updatedAt: { type: Sequelize.DATE(3), allowNull: false },
    }, tableOptions);
    await queryInterface.addIndex('accounts', [ 'provider', 'providerId' ], { name: 'accounts_provider_unique', unique: true });
    await queryInterface.addColumn('devices', 'accountId', { type: exact(191), allowNull: true });
    await queryInterface.addIndex('devices', [ 'accountId' ], { name: 'devices_account' });
  },

  async down(queryInterface) {
    const sqlite = queryInterface.sequelize.getDialect() === 'sqlite';
    await queryInterface.removeIndex('devices', 'devices_account');
    if (sqlite) await queryInterface.sequelize.query('ALTER TABLE `devices` DROP COLUMN `accountId`');
    else await queryInterface.removeColumn('devices', 'accountId');
    await queryInterface.dropTable('accounts');
  },
};
