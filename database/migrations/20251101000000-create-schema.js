'use strict';

/**
 * Initial schema: devices, app installs (KV tokens) and KV entries.
 *
 * Keys and uuids are compared byte-exactly: on MariaDB/MySQL they use a binary
 * NO PAD collation ("a" and "a " are different keys; "A" and "a" too).
 * SQLite compares TEXT byte-wise already.
 */
const { schemaHelpers } = require('../collation');

module.exports = {
  async up(queryInterface, Sequelize) {
    // Byte-exact strings (keys, uuids, appIds); a plain VARCHAR on SQLite.
    const { collate, tableOptions, exact } = await schemaHelpers(queryInterface, Sequelize);

    await queryInterface.createTable('devices', {
      id: { type: Sequelize.INTEGER, primaryKey: true, autoIncrement: true },
      uuid: { type: exact(191), allowNull: false, unique: true },
      name: { type: Sequelize.STRING(255), allowNull: true },
      password: { type: Sequelize.STRING(255), allowNull: true },
      passwordHint: { type: Sequelize.STRING(255), allowNull: true },
      revision: { type: Sequelize.BIGINT, allowNull: false, defaultValue: 0 },
      createdAt: { type: Sequelize.DATE(3), allowNull: false },
      updatedAt: { type: Sequelize.DATE(3), allowNull: false },
    }, tableOptions);

    await queryInterface.createTable('app_installs', {
      id: { type: Sequelize.STRING(36), primaryKey: true },
      deviceId: {
        type: Sequelize.INTEGER,
        allowNull: false,
        references: { model: 'devices', key: 'id' },
        onDelete: 'CASCADE',
        onUpdate: 'CASCADE',
      },
      appId: { type: exact(191), allowNull: false },
      token: { type: collate ? `CHAR(64) CHARACTER SET utf8mb4 COLLATE ${collate}` : Sequelize.CHAR(64), allowNull: false, unique: true },
      note: { type: Sequelize.TEXT, allowNull: true },
      installedAt: { type: Sequelize.DATE(3), allowNull: false },
      updatedAt: { type: Sequelize.DATE(3), allowNull: false },
    }, tableOptions);
    await queryInterface.addIndex('app_installs', [ 'deviceId', 'installedAt' ], { name: 'app_installs_device_installed' });

    await queryInterface.createTable('kv_entries', {
      deviceId: {
        type: Sequelize.INTEGER,
        allowNull: false,
        primaryKey: true,
        references: { model: 'devices', key: 'id' },
        onDelete: 'CASCADE',
        onUpdate: 'CASCADE',
      },
      key: { type: exact(191), allowNull: false, primaryKey: true },
      value: { type: collate ? Sequelize.TEXT('long') : Sequelize.TEXT, allowNull: false },
      creatorIp: { type: Sequelize.STRING(64), allowNull: true },
      revision: { type: Sequelize.BIGINT, allowNull: false, defaultValue: 0 },
      createdAt: { type: Sequelize.DATE(3), allowNull: false },
      updatedAt: { type: Sequelize.DATE(3), allowNull: false },
    }, tableOptions);
    await queryInterface.addIndex('kv_entries', [ 'deviceId', 'createdAt' ], { name: 'kv_entries_device_created' });
    await queryInterface.addIndex('kv_entries', [ 'deviceId', 'updatedAt' ], { name: 'kv_entries_device_updated' });
  },

  async down(queryInterface) {
    await queryInterface.dropTable('kv_entries');
    await queryInterface.dropTable('app_installs');
    await queryInterface.dropTable('devices');
  },
};
