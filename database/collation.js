'use strict';

/**
 * What the migrations share: the byte-exact collation of keys, uuids, appIds, tokens and
 * namespaces. On MariaDB/MySQL a binary NO PAD collation ("a", "A" and "a " are three
 * different strings); SQLite compares TEXT byte-wise already (undefined).
 */
async function binaryCollation(queryInterface) {
  if (queryInterface.sequelize.getDialect() !== 'mysql') return undefined;
  const [ rows ] = await queryInterface.sequelize.query('SELECT VERSION() AS v');
  const version = String(rows[0].v);
  if (/mariadb/i.test(version)) return 'utf8mb4_nopad_bin';
  const major = Number(version.split('.')[0]);
  return major >= 8 ? 'utf8mb4_0900_bin' : 'utf8mb4_bin';
}

/** Table options and the byte-exact string column type for `queryInterface`'s database. */
async function schemaHelpers(queryInterface, Sequelize) {
  const collate = await binaryCollation(queryInterface);
  const mysql = queryInterface.sequelize.getDialect() === 'mysql';
  return {
    collate,
    tableOptions: mysql ? { charset: 'utf8mb4', collate: 'utf8mb4_unicode_ci', engine: 'InnoDB' } : {},
    exact: length => (collate ? `VARCHAR(${length}) CHARACTER SET utf8mb4 COLLATE ${collate}` : Sequelize.STRING(length)),
  };
}

module.exports = { binaryCollation, schemaHelpers };
