'use strict';

/**
 * What the change log costs the MySQL write path, measured at the database: the batched
 * writer's exact statements (app/lib/kvWriter.ts) on 4 connections, 64 devices, batches of
 * 1 and 8 writes, in three variants taking turns (medians of BENCH_LOG_ROUNDS rounds):
 *
 *   none    the writer without any log row (the 1.1 write path)
 *   log     + the `device_log` row of app/lib/kvWriter.ts (appended; primary key deviceId,
 *           revision, seq), and what keeping it at the retention needs: the trimmer of
 *           app/lib/logTrimmer.ts, deleting once a second per written device the rows past the
 *           retention
 *   ring    + an upsert into a per-device ring instead (slot = revision % retention, nothing
 *           ever deleted): the alternative that was measured and not kept
 *
 * Retention is BENCH_LOG_RETENTION (default 100, so that every device is past it within the
 * first round and the steady state is measured: in production every device gets there).
 * Prints writes/s and mysqld CPU µs per write (from /proc: less sensitive than throughput to
 * other load on the machine; the trimmer's deletes are included). Needs `npm run build` (it
 * migrates with dist's migrator) and MariaDB/MySQL as root@127.0.0.1:3306 on this machine;
 * drops and recreates the database `classworks_bench_log` (BENCH_LOG_DB).
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
const RETENTION = Number(process.env.BENCH_LOG_RETENTION || 100);

const UPSERT = 'INSERT INTO kv_entries (deviceId, `key`, value, creatorIp, revision, createdAt, updatedAt)' +
  ' VALUES (?, ?, ?, ?, @r - ?, ?, ?) ON DUPLICATE KEY UPDATE value = VALUES(value),' +
  ' creatorIp = VALUES(creatorIp), revision = VALUES(revision), updatedAt = VALUES(updatedAt)';
const LOG = 'INSERT INTO device_log (deviceId, revision, type, `key`, action, created, recordedAt)' +
  " VALUES (?, @r - ?, 'kv-key-changed', ?, 'upsert', ROW_COUNT() = 1, ?)";
const RING = 'INSERT INTO device_log_ring (deviceId, slot, revision, seq, type, `key`, action, created, batch, payload, recordedAt)' +
  " VALUES (?, MOD(@r - ?, ?), @r - ?, 0, 'kv-key-changed', ?, 'upsert', ROW_COUNT() = 1, NULL, NULL, ?)" +
  ' ON DUPLICATE KEY UPDATE revision = VALUES(revision), seq = 0, type = VALUES(type), `key` = VALUES(`key`),' +
  ' action = VALUES(action), created = VALUES(created), batch = NULL, payload = NULL, recordedAt = VALUES(recordedAt)';
const VARIANTS = {
  none: null,
  log: { sql: LOG, values: (d, j, key, at) => [ d, j, key, at ], trim: true },
  ring: { sql: RING, values: (d, j, key, at) => [ d, j, RETENTION, j, key, at ] },
};

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
    'CREATE TABLE device_log_ring (deviceId INT NOT NULL, slot BIGINT NOT NULL, revision BIGINT NOT NULL, seq BIGINT NOT NULL DEFAULT 0,' +
    ' type VARCHAR(100) NOT NULL, `key` VARCHAR(191) NULL, action VARCHAR(8) NULL, created TINYINT(1) NULL, batch TINYINT(1) NULL,' +
    ' payload MEDIUMTEXT NULL, recordedAt DATETIME(3) NOT NULL, PRIMARY KEY (deviceId, slot)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4');
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

  async function run(variant, batch) {
    let writes = 0;
    const end = Date.now() + SECONDS * 1000;
    const c0 = cpu();
    const t0 = Date.now();
    const latest = new Map();
    const connection = async () => {
      while (Date.now() < end) {
        const chosen = [ ...ids ].sort(() => Math.random() - 0.5).slice(0, batch).sort((a, b) => a - b);
        const statements = [ 'START TRANSACTION' ];
        const values = [];
        const at = new Date();
        for (const d of chosen) {
          statements.push('UPDATE devices SET revision = LAST_INSERT_ID(revision + ?) WHERE id = ?', 'SET @r = LAST_INSERT_ID()', UPSERT);
          values.push(1, d, d, `k${writes % 100}`, '{"a":1}', '127.0.0.1', 0, at, at);
          if (variant) {
            statements.push(variant.sql);
            values.push(...variant.values(d, 0, `k${writes % 100}`, at));
          }
        }
        statements.push('COMMIT');
        const r = await query(statements.join('; '), values);
        chosen.forEach((d, i) => latest.set(d, Number(r[1 + i * (variant ? 4 : 3)].insertId)));
        writes += chosen.length;
      }
    };
    // The log's trimmer (as app/lib/logTrimmer.ts + ChangesService.trim): once a second, each device
    // written meanwhile loses the rows past the retention.
    let trimming = Promise.resolve();
    const timer = variant && variant.trim ? setInterval(() => {
      const round = [ ...latest ];
      latest.clear();
      trimming = trimming.then(async () => {
        for (const [ d, rev ] of round) {
          await query('DELETE FROM device_log WHERE deviceId = ? AND revision <= ? AND seq = 0', [ d, rev - RETENTION ]);
        }
      });
    }, 1000) : undefined;
    await Promise.all(Array.from({ length: CONNECTIONS }, connection));
    if (timer) clearInterval(timer);
    await trimming;
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
  console.log(`writer log cost (${CONNECTIONS} connections, ${DEVICES} devices, retention ${RETENTION}, medians of ${ROUNDS} × ${SECONDS} s)`);
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
