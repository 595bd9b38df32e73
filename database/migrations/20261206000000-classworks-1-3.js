'use strict';

/**
 * ClassworksKV 1.3 (CONTRACT.md §6, §7), upgrading a 1.1-shaped database in place:
 *
 * - devices.namespace: unique, byte-exact; existing devices get their uuid (the 1.3 default).
 * - app_installs.deviceType / isReadOnly: token kinds (existing tokens: null / false).
 * - auto_auth_configs: namespace-login configs; every existing device gets the default one
 *   (no password, classroom, not read-only), as every new device does.
 * - device_log: one store for a device's history: KV changes (`seq` 0, `revision` consecutive
 *   per device; the change log of §7) and relayed events (`seq` > 0 after the revision they
 *   followed, `payload` holds the delivered payload). Ordered by its primary key.
 */
const crypto = require('crypto');

const { schemaHelpers } = require('../collation');

/** A time-ordered UUID (version 7), like the server's install and config ids. */
function uuidv7(ms, seq) {
  const time = ms.toString(16).padStart(12, '0');
  const rand = crypto.randomBytes(8);
  rand[0] = 0x80 + (rand[0] % 0x40);
  const r = rand.toString('hex');
  return `${time.slice(0, 8)}-${time.slice(8, 12)}-7${(seq & 0xfff).toString(16).padStart(3, '0')}-${r.slice(0, 4)}-${r.slice(4, 16)}`;
}

module.exports = {
  async up(queryInterface, Sequelize) {
    const sequelize = queryInterface.sequelize;
    const mysql = sequelize.getDialect() === 'mysql';
    const { tableOptions, exact } = await schemaHelpers(queryInterface, Sequelize);

    // devices.namespace: added nullable, filled with the uuid, then indexed unique.
    await queryInterface.addColumn('devices', 'namespace', { type: exact(191), allowNull: true });
    await sequelize.query('UPDATE devices SET namespace = uuid WHERE namespace IS NULL');
    await queryInterface.addIndex('devices', [ 'namespace' ], { name: 'devices_namespace_unique', unique: true });

    await queryInterface.addColumn('app_installs', 'deviceType', { type: Sequelize.STRING(16), allowNull: true });
    await queryInterface.addColumn('app_installs', 'isReadOnly', { type: Sequelize.BOOLEAN, allowNull: false, defaultValue: false });

    await queryInterface.createTable('auto_auth_configs', {
      id: { type: Sequelize.STRING(36), primaryKey: true },
      deviceId: {
        type: Sequelize.INTEGER,
        allowNull: false,
        references: { model: 'devices', key: 'id' },
        onDelete: 'CASCADE',
        onUpdate: 'CASCADE',
      },
      password: { type: Sequelize.STRING(255), allowNull: true },
      deviceType: { type: Sequelize.STRING(16), allowNull: true },
      isReadOnly: { type: Sequelize.BOOLEAN, allowNull: false, defaultValue: false },
      createdAt: { type: Sequelize.DATE(3), allowNull: false },
      updatedAt: { type: Sequelize.DATE(3), allowNull: false },
    }, tableOptions);
    await queryInterface.addIndex('auto_auth_configs', [ 'deviceId', 'createdAt' ], { name: 'auto_auth_configs_device_created' });

    // The default config of every existing device, in pages (a large database stays flat in memory).
    const now = new Date();
    let seq = 0;
    let after = 0;
    for (;;) {
      const [ rows ] = await sequelize.query('SELECT id FROM devices WHERE id > ? ORDER BY id LIMIT 1000', { replacements: [ after ] });
      if (rows.length === 0) break;
      await queryInterface.bulkInsert('auto_auth_configs', rows.map(r => ({
        id: uuidv7(now.getTime(), seq++),
        deviceId: r.id,
        password: null,
        deviceType: 'classroom',
        isReadOnly: false,
        createdAt: now,
        updatedAt: now,
      })));
      after = rows[rows.length - 1].id;
    }

    // One clustered index, (deviceId, revision, seq): a KV change is (its revision, 0); a relayed
    // event is (the device's revision when it was sent, a time-ordered seq > 0), so the
    // primary key orders a device's whole history and nothing else has to be maintained on
    // the write path (measured: docs/PERFORMANCE.md).
    await queryInterface.createTable('device_log', {
      deviceId: {
        type: Sequelize.INTEGER,
        allowNull: false,
        primaryKey: true,
        references: { model: 'devices', key: 'id' },
        onDelete: 'CASCADE',
        onUpdate: 'CASCADE',
      },
      revision: { type: Sequelize.BIGINT, allowNull: false, primaryKey: true },
      seq: { type: Sequelize.BIGINT, allowNull: false, primaryKey: true, defaultValue: 0 },
      // The event name as delivered (`kv-key-changed`, or a relayed event's type).
      type: { type: exact(100), allowNull: false },
      // KV changes: key, action (upsert | delete), created, batch.
      key: { type: exact(191), allowNull: true },
      action: { type: Sequelize.STRING(8), allowNull: true },
      created: { type: Sequelize.BOOLEAN, allowNull: true },
      batch: { type: Sequelize.BOOLEAN, allowNull: true },
      // Relayed events: the payload as delivered (JSON text).
      payload: { type: mysql ? Sequelize.TEXT('medium') : Sequelize.TEXT, allowNull: true },
      recordedAt: { type: Sequelize.DATE(3), allowNull: false },
    }, tableOptions);
  },

  async down(queryInterface) {
    // SQLite: Sequelize's removeColumn rebuilds the table (copy, DROP, CREATE) and loses its
    // ON DELETE CASCADE; dropping `devices` then deletes every child row or fails on a foreign
    // key. SQLite >= 3.35 drops an unindexed column in place, keeping data and constraints.
    const sqlite = queryInterface.sequelize.getDialect() === 'sqlite';
    const dropColumn = (table, column) => (sqlite
      ? queryInterface.sequelize.query(`ALTER TABLE \`${table}\` DROP COLUMN \`${column}\``)
      : queryInterface.removeColumn(table, column));
    await queryInterface.dropTable('device_log');
    await queryInterface.dropTable('auto_auth_configs');
    await dropColumn('app_installs', 'isReadOnly');
    await dropColumn('app_installs', 'deviceType');
    await queryInterface.removeIndex('devices', 'devices_namespace_unique');
    await dropColumn('devices', 'namespace');
  },
};
