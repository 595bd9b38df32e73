'use strict';

/**
 * What the change log costs the MySQL write path, measured at the database: the batched
 * writer's exact statements (app/lib/kvWriter.ts) on 4 connections, 64 devices, batches of
 * 1 and 8 writes, in three variants taking turns (medians of BENCH_LOG_ROUNDS rounds):
 *
 *   none   the writer without any log row (the 1.1 write path)
 *   log    + the `device_log` row of app/lib/kvWriter.ts (clustered key deviceId, revision, seq)
 *   ai     + the same row in a table with an auto-increment id and two secondary indexes
 *          (the first design: unique (deviceId, revision), index (deviceId, id))
 *
 * Prints writes/s and mysqld CPU µs per write (from /proc: less sensitive than throughput to
 * other load on the machine). Needs `npm run build` (it migrates with dist's migrator) and
 * MariaDB/MySQL as root@127.0.0.1:3306; drops and recreates the database `classworks_bench_log`
 * (BENCH_LOG_DB).
 *
 *   npm run build && node bench/writer-log.js
 */
const fs = require('fs');
const path = require('path');
const { execSync } = require('child_process');
const mysql = require('mysql2');
const { Sequelize } = require('sequelize');
const { median } = require('./lib/common');

const DB = process.env.BENCH_LOG_DB || 'classworks_bench_log';
const ROUNDS = Number(process.env.BENCH_LOG_ROUNDS || 5);
const SECONDS = Number(process.env.BENCH_LOG_SECONDS || 3);
const CONNECTIONS = 4;
const DEVICES = 64;

const UPSERT = 'INSERT INTO kv_entries (deviceId, `key`, value, creatorIp, revision, createdAt, updatedAt)' +
  ' VALUES (?, ?, ?, ?, @r - ?, ?, ?) ON DUPLICATE KEY UPDATE value = VALUES(value),' +
  ' creatorIp = VALUES(creatorIp), revision = VALUES(revision), updatedAt = VALUES(updatedAt)';
const LOG = table => `INSERT INTO ${table} (deviceId, revision, type, \`key\`, action, created, recordedAt)` +
  " VALUES (?, @r - ?, 'kv-key-changed', ?, 'upsert', ROW_COUNT() = 1, ?)";
const VARIANTS = { none: null, log: LOG('device_log'), ai: LOG('device_log_ai') };

function mysqldPid() {
  for (const name of [ 'mariadbd', 'mysqld' ]) {
    try {
      return execSync(`pidof ${name}`).toString().trim().split(' ')[0];
    } catch {
      // try the next name
    }
  }
  throw new Error('no mariadbd/mysqld process found (the database must run on this machine)');
}

async function main() {
  const admin = new Sequelize('mysql://root@127.0.0.1:3306/mysql', { logging: false });
  await admin.query(`DROP DATABASE IF EXISTS \`${DB}\``);
  await admin.query(`CREATE DATABASE \`${DB}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`);
  await admin.close();
  const url = `mysql://root@127.0.0.1:3306/${DB}`;
  const sequelize = new Sequelize(url, { logging: false, timezone: '+00:00' });
  const { migrateUp } = require(path.join(__dirname, '..', 'dist', 'app', 'lib', 'migrator'));
  await migrateUp(sequelize);
  await sequelize.query(
    'CREATE TABLE device_log_ai (id BIGINT AUTO_INCREMENT PRIMARY KEY, deviceId INT NOT NULL, revision BIGINT NULL,' +
    ' type VARCHAR(100) NOT NULL, `key` VARCHAR(191) NULL, action VARCHAR(8) NULL, created TINYINT(1) NULL, batch TINYINT(1) NULL,' +
    ' payload MEDIUMTEXT NULL, recordedAt DATETIME(3) NOT NULL, UNIQUE KEY (deviceId, revision), KEY (deviceId, id)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4');
  const now = new Date();
  for (let i = 0; i < DEVICES; i++) {
    await sequelize.query('INSERT INTO devices (uuid, name, namespace, revision, createdAt, updatedAt) VALUES (?, ?, ?, 0, ?, ?)', {
      replacements: [ `bench-log-${i}`, 'x', `bench-log-${i}`, now, now ],
    });
  }
  const [ rows ] = await sequelize.query('SELECT id FROM devices ORDER BY id');
  const ids = rows.map(r => r.id);
  await sequelize.close();

  const pid = mysqldPid();
  const cpu = () => {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  };
  const pool = mysql.createPool({ uri: url, connectionLimit: CONNECTIONS, multipleStatements: true, charset: 'utf8mb4', timezone: 'Z' });
  pool.on('connection', c => c.query('SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED'));
  const query = (sql, values) => new Promise((resolve, reject) => pool.query({ sql, values }, (e, r) => (e ? reject(e) : resolve(r))));

  async function run(log, batch) {
    let writes = 0;
    const end = Date.now() + SECONDS * 1000;
    const c0 = cpu();
    const t0 = Date.now();
    const connection = async () => {
      while (Date.now() < end) {
        const chosen = [ ...ids ].sort(() => Math.random() - 0.5).slice(0, batch).sort((a, b) => a - b);
        const statements = [ 'START TRANSACTION' ];
        const values = [];
        const at = new Date();
        for (const d of chosen) {
          statements.push('UPDATE devices SET revision = LAST_INSERT_ID(revision + ?) WHERE id = ?', 'SET @r = LAST_INSERT_ID()', UPSERT);
          values.push(1, d, d, `k${writes % 100}`, '{"a":1}', '127.0.0.1', 0, at, at);
          if (log) {
            statements.push(log);
            values.push(d, 0, `k${writes % 100}`, at);
          }
        }
        statements.push('COMMIT');
        await query(statements.join('; '), values);
        writes += chosen.length;
      }
    };
    await Promise.all(Array.from({ length: CONNECTIONS }, connection));
    return { rate: writes / ((Date.now() - t0) / 1000), cpuUs: (cpu() - c0) / writes * 1e6 };
  }

  const results = {};
  for (const batch of [ 1, 8 ]) {
    for (let round = 0; round < ROUNDS; round++) {
      for (const [ name, log ] of Object.entries(VARIANTS)) {
        (results[`${batch}:${name}`] = results[`${batch}:${name}`] || []).push(await run(log, batch));
      }
    }
  }
  pool.end();
  console.log(`writer log cost (${CONNECTIONS} connections, ${DEVICES} devices, medians of ${ROUNDS} × ${SECONDS} s)`);
  for (const batch of [ 1, 8 ]) {
    const base = results[`${batch}:none`];
    const baseRate = median(base.map(x => x.rate));
    const baseCpu = median(base.map(x => x.cpuUs));
    for (const name of Object.keys(VARIANTS)) {
      const xs = results[`${batch}:${name}`];
      const rate = median(xs.map(x => x.rate));
      const cpuUs = median(xs.map(x => x.cpuUs));
      console.log(`  batch ${batch}  ${name.padEnd(5)} ${rate.toFixed(0).padStart(6)} writes/s (${((rate / baseRate - 1) * 100).toFixed(1).padStart(6)} %)` +
        `  mysqld ${cpuUs.toFixed(0).padStart(4)} µs/write (${((cpuUs / baseCpu - 1) * 100).toFixed(1).padStart(6)} %)`);
    }
  }
}

main().catch(err => {
  console.error(err);
  process.exit(1);
});
