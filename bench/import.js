'use strict';

/**
 * `npm run build && node bench/import.js`: `npm run import` (CONTRACT.md §9) of a
 * ClassworksKV 1.3 database on PostgreSQL with BENCH_DEVICES devices (default 10,000) ×
 * BENCH_KEYS devices' keys (default 100: 1,000,000 keys), 2 tokens and 1 auto-auth config
 * each, into MySQL. Reports keys copied per second (the write pass) and end to end (plan +
 * write + verify), and the import process's peak RSS.
 *
 * Drops and recreates the PostgreSQL database BENCH_PG_DB (default imp_src_bench) and the
 * MySQL database BENCH_MYSQL_DB (default classworks_bench_import); never reads DATABASE_URL.
 * The import runs from dist/ (NODE_ENV=production), as operators run it.
 */
const path = require('path');
const { spawn } = require('child_process');
const { Client } = require('pg');
const mysql = require('mysql2/promise');

const DEVICES = Number(process.env.BENCH_DEVICES || 10000);
const KEYS = Number(process.env.BENCH_KEYS || 100);
const PG_ADMIN = process.env.BENCH_PG_URL || 'postgresql://postgres@127.0.0.1:5432/postgres';
const PG_DB = process.env.BENCH_PG_DB || 'imp_src_bench';
const MYSQL_ADMIN = process.env.BENCH_MYSQL_URL || 'mysql://root@127.0.0.1:3306/';
const MYSQL_DB = process.env.BENCH_MYSQL_DB || 'classworks_bench_import';
const REDIS_URL = process.env.BENCH_REDIS_URL; // optional: include telling a cluster

const root = path.join(__dirname, '..');
require('ts-node').register({ transpileOnly: true, project: path.join(root, 'tsconfig.json') });
const { PG_13_DDL } = require('../test/command/import/sources.ts');

function dbUrl(admin, name) {
  const u = new URL(admin);
  u.pathname = `/${name}`;
  return u.toString();
}

async function seedSource() {
  const admin = new Client({ connectionString: PG_ADMIN });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${PG_DB}`);
  await admin.query(`CREATE DATABASE ${PG_DB}`);
  await admin.end();
  const c = new Client({ connectionString: dbUrl(PG_ADMIN, PG_DB) });
  await c.connect();
  await c.query(PG_13_DDL);
  const t = Date.now();
  await c.query(`INSERT INTO "Device" ("id","uuid","name","namespace","createdAt","updatedAt")
    SELECT g, 'bench-device-' || g, 'Class ' || g, CASE WHEN g % 2 = 0 THEN 'ns-' || g END, now(), now() FROM generate_series(1, $1) g`, [ DEVICES ]);
  await c.query(`INSERT INTO "AppInstall" ("id","deviceId","appId","token","note","installedAt","updatedAt","deviceType","isReadOnly")
    SELECT 'c' || md5(d || '-' || k), d, 'classworks', md5('a' || d || '-' || k) || md5('b' || d || '-' || k), NULL, now(), now(),
      CASE WHEN k = 1 THEN 'classroom' ELSE 'student' END, k = 2
    FROM generate_series(1, $1) d, generate_series(1, 2) k`, [ DEVICES ]);
  await c.query(`INSERT INTO "AutoAuth" ("id","deviceId","password","deviceType","isReadOnly","createdAt","updatedAt")
    SELECT 'c' || md5('cfg' || d), d, NULL, 'classroom', false, now(), now() FROM generate_series(1, $1) d`, [ DEVICES ]);
  await c.query(`INSERT INTO "KVStore" ("deviceId","key","value","creatorIp","createdAt","updatedAt")
    SELECT d, 'key-' || lpad(k::text, 4, '0'),
      json_build_object('device', d, 'n', k, 'text', '键值 ' || repeat('x', 48), 'list', json_build_array(1, 'two', 3.5, true, NULL)),
      '203.0.113.7', now() - (k || ' minutes')::interval, now()
    FROM generate_series(1, $1) d, generate_series(1, $2) k`, [ DEVICES, KEYS ]);
  await c.query('ANALYZE');
  const [{ bytes }] = (await c.query('SELECT pg_database_size(current_database()) AS bytes')).rows;
  await c.end();
  return { seconds: (Date.now() - t) / 1000, bytes: Number(bytes) };
}

async function resetTarget() {
  const c = await mysql.createConnection({ uri: MYSQL_ADMIN });
  await c.query(`DROP DATABASE IF EXISTS \`${MYSQL_DB}\``);
  await c.query(`CREATE DATABASE \`${MYSQL_DB}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`);
  await c.end();
}

function runImport() {
  return new Promise((resolve, reject) => {
    // As in production, where the server's settings (JWT_SECRET among them) are in the environment.
    const env = { JWT_SECRET: 'bench-import-secret-0123456789abcdef0123', ...process.env, NODE_ENV: 'production', DATABASE_URL: dbUrl(MYSQL_ADMIN, MYSQL_DB) };
    delete env.REDIS_URL;
    if (REDIS_URL) env.REDIS_URL = REDIS_URL;
    const started = Date.now();
    const nodeArgs = (process.env.BENCH_NODE_ARGS || '').split(' ').filter(Boolean);
    const child = spawn(process.execPath, [ ...nodeArgs, '-r', path.join(__dirname, 'lib/maxrss.js'), path.join(root, 'scripts/import.js'),
      dbUrl(PG_ADMIN, PG_DB) ], { env, stdio: [ 'ignore', 'pipe', 'pipe' ] });
    let out = '';
    let err = '';
    child.stdout.on('data', d => { out += d; });
    child.stderr.on('data', d => { err += d; process.stderr.write(d); });
    child.on('error', reject);
    child.on('exit', code => resolve({ code, out, err, seconds: (Date.now() - started) / 1000 }));
  });
}

(async () => {
  console.log(`seeding ${DEVICES} devices × ${KEYS} keys = ${DEVICES * KEYS} keys in ${PG_DB} …`);
  const seed = await seedSource();
  console.log(`seeded in ${seed.seconds.toFixed(1)} s (${(seed.bytes / 1048576).toFixed(0)} MB on PostgreSQL)`);
  await resetTarget();
  const r = await runImport();
  process.stdout.write(r.out);
  if (r.code !== 0) throw new Error(`import exited with ${r.code}`);
  const copy = Number(/copied in ([\d.]+) s/.exec(r.out)[1]);
  const rss = Number(/maxrss-kb (\d+)/.exec(r.err)[1]) / 1024;
  const keys = DEVICES * KEYS;
  console.log('\nresult:');
  console.log(`  keys: ${keys}, devices: ${DEVICES}, tokens: ${DEVICES * 2}, auto-auth configs: ${DEVICES}`);
  console.log(`  write pass: ${copy.toFixed(1)} s = ${Math.round(keys / copy)} keys/s`);
  console.log(`  end to end (connect, migrate, plan, write, verify): ${r.seconds.toFixed(1)} s = ${Math.round(keys / r.seconds)} keys/s`);
  console.log(`  peak RSS of the import process: ${rss.toFixed(0)} MB`);
  const c = new Client({ connectionString: PG_ADMIN });
  await c.connect();
  await c.query(`DROP DATABASE IF EXISTS ${PG_DB}`);
  await c.end();
})().catch(err => {
  console.error(err);
  process.exitCode = 1;
});
