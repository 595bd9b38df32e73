'use strict';

/**
 * Connection settings for `sequelize-cli` (npm run db:migrate / db:migrate:undo).
 * Same rule as the server (config/env.ts): DATABASE_URL, else the embedded SQLite file.
 */
const path = require('path');

function fromEnv() {
  const url = (process.env.DATABASE_URL || '').trim();
  if (!url) {
    return { dialect: 'sqlite', storage: path.resolve(process.env.SQLITE_PATH || 'data/classworks-kv.sqlite') };
  }
  if (/^sqlite:/i.test(url)) return { dialect: 'sqlite', storage: path.resolve(url.replace(/^sqlite:(\/\/)?/i, '')) };
  return { url: url.replace(/^mariadb:/i, 'mysql:'), dialect: 'mysql', dialectOptions: { charset: 'utf8mb4' }, timezone: '+00:00' };
}

const config = fromEnv();
module.exports = { development: config, test: config, production: config, unittest: config };
