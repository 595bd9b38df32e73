import crypto from 'node:crypto';
import bcrypt from 'bcryptjs';
import mysql from 'mysql2/promise';
import { Client } from 'pg';

/**
 * Source databases for the import tests: the ClassworksKV 1.3 schema on PostgreSQL and the
 * 1.1 schema on MariaDB, written from the documented columns
 * (shared/reference/classworkskv-spec.md §1.1 and §1.2; Prisma's DDL style), filled with
 * every kind of row the import has to keep.
 */

export const PG_ADMIN_URL = process.env.IMPORT_TEST_PG_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres';
export const MYSQL_ADMIN_URL = process.env.IMPORT_TEST_MYSQL_URL
  ?? (process.env.DATABASE_URL?.startsWith('mysql:') ? process.env.DATABASE_URL.replace(/\/[^/]*$/, '/') : 'mysql://root@127.0.0.1:3306/');

export const PG_13_DDL = `
CREATE TABLE "Account" (
  "id" VARCHAR(191) NOT NULL, "provider" VARCHAR(191) NOT NULL, "providerId" VARCHAR(191) NOT NULL,
  "email" VARCHAR(191), "name" VARCHAR(191), "avatarUrl" VARCHAR(191), "providerData" JSON, "accessToken" TEXT,
  "refreshToken" TEXT, "refreshTokenExpiry" TIMESTAMPTZ(6), "tokenVersion" INTEGER NOT NULL DEFAULT 1,
  "createdAt" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP, "updatedAt" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  CONSTRAINT "Account_pkey" PRIMARY KEY ("id"));
CREATE UNIQUE INDEX "Account_provider_providerId_key" ON "Account"("provider", "providerId");
CREATE TABLE "Device" (
  "id" SERIAL NOT NULL, "uuid" VARCHAR(191) NOT NULL, "name" VARCHAR(191), "accountId" VARCHAR(191),
  "createdAt" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP, "updatedAt" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  "password" VARCHAR(191), "passwordHint" VARCHAR(191), "namespace" VARCHAR(191),
  CONSTRAINT "Device_pkey" PRIMARY KEY ("id"));
CREATE UNIQUE INDEX "Device_uuid_key" ON "Device"("uuid");
CREATE UNIQUE INDEX "Device_namespace_key" ON "Device"("namespace");
CREATE INDEX "Device_accountId_idx" ON "Device"("accountId");
CREATE TABLE "AppInstall" (
  "id" VARCHAR(191) NOT NULL, "deviceId" INTEGER NOT NULL, "appId" VARCHAR(191) NOT NULL, "token" VARCHAR(191) NOT NULL,
  "note" VARCHAR(191), "installedAt" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  "updatedAt" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP, "deviceType" VARCHAR(191), "isReadOnly" BOOLEAN NOT NULL DEFAULT false,
  CONSTRAINT "AppInstall_pkey" PRIMARY KEY ("id"));
CREATE UNIQUE INDEX "AppInstall_token_key" ON "AppInstall"("token");
CREATE INDEX "AppInstall_deviceId_idx" ON "AppInstall"("deviceId");
CREATE TABLE "KVStore" (
  "deviceId" INTEGER NOT NULL, "key" VARCHAR(191) NOT NULL, "value" JSON NOT NULL, "creatorIp" VARCHAR(191) DEFAULT '',
  "createdAt" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP, "updatedAt" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  CONSTRAINT "KVStore_pkey" PRIMARY KEY ("deviceId", "key"));
CREATE TABLE "AutoAuth" (
  "id" VARCHAR(191) NOT NULL, "deviceId" INTEGER NOT NULL, "password" VARCHAR(191), "deviceType" VARCHAR(191),
  "isReadOnly" BOOLEAN NOT NULL DEFAULT false, "createdAt" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  "updatedAt" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  CONSTRAINT "AutoAuth_pkey" PRIMARY KEY ("id"));
CREATE UNIQUE INDEX "AutoAuth_deviceId_password_key" ON "AutoAuth"("deviceId", "password");
`;

export const MYSQL_11_DDL = [
  `CREATE TABLE \`Account\` (
    \`id\` VARCHAR(191) NOT NULL, \`provider\` VARCHAR(191) NOT NULL, \`providerId\` VARCHAR(191) NOT NULL,
    \`email\` VARCHAR(191) NULL, \`name\` VARCHAR(191) NULL, \`avatarUrl\` VARCHAR(191) NULL, \`providerData\` JSON NULL,
    \`accessToken\` TEXT NULL, \`createdAt\` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3), \`updatedAt\` DATETIME(3) NOT NULL,
    UNIQUE INDEX \`Account_provider_providerId_key\`(\`provider\`, \`providerId\`), PRIMARY KEY (\`id\`)
  ) DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`,
  `CREATE TABLE \`Device\` (
    \`id\` INTEGER NOT NULL AUTO_INCREMENT, \`uuid\` VARCHAR(191) NOT NULL, \`name\` VARCHAR(191) NULL, \`accountId\` VARCHAR(191) NULL,
    \`createdAt\` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3), \`updatedAt\` DATETIME(3) NOT NULL,
    \`password\` VARCHAR(191) NULL, \`passwordHint\` VARCHAR(191) NULL,
    UNIQUE INDEX \`Device_uuid_key\`(\`uuid\`), PRIMARY KEY (\`id\`)
  ) DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`,
  `CREATE TABLE \`AppInstall\` (
    \`id\` VARCHAR(191) NOT NULL, \`deviceId\` INTEGER NOT NULL, \`appId\` VARCHAR(191) NOT NULL, \`token\` VARCHAR(191) NOT NULL,
    \`note\` VARCHAR(191) NULL, \`installedAt\` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3), \`updatedAt\` DATETIME(3) NOT NULL,
    UNIQUE INDEX \`AppInstall_token_key\`(\`token\`), PRIMARY KEY (\`id\`)
  ) DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`,
  `CREATE TABLE \`KVStore\` (
    \`deviceId\` INTEGER NOT NULL, \`key\` VARCHAR(191) NOT NULL, \`value\` JSON NOT NULL, \`creatorIp\` VARCHAR(191) NULL DEFAULT '',
    \`createdAt\` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3), \`updatedAt\` DATETIME(3) NOT NULL,
    PRIMARY KEY (\`deviceId\`, \`key\`)
  ) DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`,
  'ALTER TABLE `Device` ADD CONSTRAINT `Device_accountId_fkey` FOREIGN KEY (`accountId`) REFERENCES `Account`(`id`) ON DELETE SET NULL ON UPDATE CASCADE',
  'ALTER TABLE `AppInstall` ADD CONSTRAINT `AppInstall_deviceId_fkey` FOREIGN KEY (`deviceId`) REFERENCES `Device`(`id`) ON DELETE CASCADE ON UPDATE CASCADE',
  'ALTER TABLE `KVStore` ADD CONSTRAINT `KVStore_deviceId_fkey` FOREIGN KEY (`deviceId`) REFERENCES `Device`(`id`) ON DELETE CASCADE ON UPDATE CASCADE',
];

export type Version = '1.3' | '1.1';

export interface FxAccount {
  id: string; provider: string; providerId: string; email: string | null; name: string | null; avatarUrl: string | null;
  providerData: unknown; refreshToken: string | null; tokenVersion: number; createdAt: Date; updatedAt: Date;
}
export interface FxDevice {
  id: number; uuid: string; name: string | null; namespace: string | null; password: string | null; plainPassword: string | null;
  passwordHint: string | null; accountId: string | null; createdAt: Date; updatedAt: Date;
}
export interface FxInstall {
  id: string; deviceId: number; appId: string; token: string; note: string | null; deviceType: string | null;
  isReadOnly: boolean; installedAt: Date; updatedAt: Date;
}
export interface FxConfig { id: string; deviceId: number; password: string | null; deviceType: string | null; isReadOnly: boolean; createdAt: Date; updatedAt: Date }
export interface FxKey { deviceId: number; key: string; value: unknown; creatorIp: string | null; createdAt: Date; updatedAt: Date }

export interface Fixture { accounts: FxAccount[]; devices: FxDevice[]; installs: FxInstall[]; configs: FxConfig[]; keys: FxKey[] }

const T0 = Date.parse('2025-09-01T08:00:00.123Z');
/** Distinct, millisecond-precise timestamps. */
const at = (n: number) => new Date(T0 + n * 3600_001 + n * 7);
const cuid = () => `c${crypto.randomBytes(12).toString('hex').slice(0, 24)}`;
const token = () => crypto.randomBytes(32).toString('hex');

/** The data every source holds (1.1: no namespaces, token kinds, auto-auth configs, refresh tokens). */
export function fixture(version: Version): Fixture {
  const v13 = version === '1.3';
  const accounts: FxAccount[] = [
    { id: 'cacc1github000000000000001', provider: 'github', providerId: '1001', email: 'wang@example.com', name: 'Teacher Wang',
      avatarUrl: 'https://avatars.example.com/u/1001', providerData: { login: 'wang', id: 1001, plan: { name: 'free' } },
      refreshToken: v13 ? 'refresh-token-of-wang' : null, tokenVersion: v13 ? 3 : 1, createdAt: at(1), updatedAt: at(2) },
    { id: 'cacc2casdoor00000000000002', provider: 'casdoor', providerId: 'u-2', email: null, name: null, avatarUrl: null,
      providerData: null, refreshToken: null, tokenVersion: 1, createdAt: at(3), updatedAt: at(3) },
  ];
  const devices: FxDevice[] = [
    { id: 1, uuid: 'imp-dev-1', name: '一年级一班', namespace: v13 ? 'class-1a' : null, password: bcrypt.hashSync('devpass1', 8), plainPassword: 'devpass1',
      passwordHint: '生日', accountId: accounts[0].id, createdAt: at(4), updatedAt: at(5) },
    { id: 2, uuid: 'imp-dev-2', name: null, namespace: null, password: null, plainPassword: null, passwordHint: null, accountId: null,
      createdAt: at(6), updatedAt: at(6) },
    // A gap in the ids, as deleted rows leave.
    { id: 7, uuid: 'imp-dev-3', name: '三班', namespace: v13 ? 'class-3' : null, password: bcrypt.hashSync('devpass3', 8), plainPassword: 'devpass3',
      passwordHint: null, accountId: accounts[1].id, createdAt: at(7), updatedAt: at(8) },
  ];
  const kind = (deviceType: string | null, isReadOnly: boolean) => (v13 ? { deviceType, isReadOnly } : { deviceType: null, isReadOnly: false });
  const installs: FxInstall[] = [
    { id: cuid(), deviceId: 1, appId: 'classworks', token: token(), note: '王老师', ...kind('teacher', false), installedAt: at(10), updatedAt: at(11) },
    { id: cuid(), deviceId: 1, appId: 'classworks', token: token(), note: 'Alice', ...kind('student', true), installedAt: at(12), updatedAt: at(13) },
    { id: cuid(), deviceId: 1, appId: 'd158067f53627d2b98babe8bffd2fd7d', token: token(), note: null, ...kind('classroom', false), installedAt: at(14), updatedAt: at(14) },
    { id: cuid(), deviceId: 1, appId: 'classworks', token: token(), note: 'Alice 家长', ...kind('parent', true), installedAt: at(15), updatedAt: at(16) },
    { id: cuid(), deviceId: 2, appId: 'cli', token: token(), note: null, ...kind(null, false), installedAt: at(17), updatedAt: at(17) },
    { id: cuid(), deviceId: 7, appId: 'screen', token: token(), note: 'hall', ...kind('classroom', true), installedAt: at(18), updatedAt: at(19) },
  ];
  const configs: FxConfig[] = v13 ? [
    { id: cuid(), deviceId: 1, password: 'classpw', deviceType: 'student', isReadOnly: true, createdAt: at(20), updatedAt: at(21) },
    { id: cuid(), deviceId: 1, password: 'teacherpw', deviceType: 'teacher', isReadOnly: false, createdAt: at(22), updatedAt: at(22) },
    { id: cuid(), deviceId: 1, password: null, deviceType: 'classroom', isReadOnly: false, createdAt: at(23), updatedAt: at(23) },
    { id: cuid(), deviceId: 2, password: null, deviceType: 'classroom', isReadOnly: false, createdAt: at(24), updatedAt: at(24) },
    { id: cuid(), deviceId: 7, password: '三班家长', deviceType: 'parent', isReadOnly: true, createdAt: at(25), updatedAt: at(26) },
  ] : [];
  const key = (deviceId: number, k: string, value: unknown, n: number, creatorIp: string | null = '203.0.113.7'): FxKey =>
    ({ deviceId, key: k, value, creatorIp, createdAt: at(30 + n), updatedAt: at(40 + n) });
  const keys: FxKey[] = [
    key(1, 'classworks-list-main', [{ name: 'Alice', id: 1 }, { name: 'Bob', id: 2 }], 1),
    key(1, 'obj', { a: 1, nested: { list: [ 1, 'two', null, true, { deep: [] }] }, 'z-last': 'x', 'a-first': 0 }, 2, '::ffff:10.0.0.5'),
    key(1, 'arr', [ 1, 'two', 3.5, false, null, { x: [] }], 3),
    key(1, 'empty-array', [], 4, ''),
    key(1, 'empty-object', {}, 5, null),
    key(1, 'string', 'hello "world"', 6),
    key(1, 'number', 42.5, 7),
    key(1, '键🔑ünïcödé', { text: '值✓ 中文 😀', emoji: '👩‍👩‍👧' }, 8, '2001:db8::1'),
    key(1, 'k'.repeat(191), { long: true }, 9),
    key(1, 'Key', { caseSensitive: 'upper' }, 10),
    key(1, 'key', { caseSensitive: 'lower' }, 11),
    key(2, 'settings', { theme: 'dark', size: 14 }, 12),
    key(2, 'list', [ 'a', 'b' ], 13),
  ];
  // 1.1 runs on MySQL with a case-insensitive collation: "Key" and "key" cannot both exist there.
  return { accounts, devices, installs, configs, keys: v13 ? keys : keys.filter(k => k.key !== 'Key') };
}

/** Creates (anew) the PostgreSQL database `name` with the 1.3 schema and the fixture; returns its URL. */
export async function createPg13(name: string, fx: Fixture): Promise<string> {
  const admin = new Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${name}`);
    await admin.query(`CREATE DATABASE ${name} ENCODING 'UTF8'`);
  } finally {
    await admin.end();
  }
  const u = new URL(PG_ADMIN_URL);
  u.pathname = `/${name}`;
  const url = u.toString();
  const c = new Client({ connectionString: url });
  await c.connect();
  try {
    await c.query(PG_13_DDL);
    for (const a of fx.accounts) {
      await c.query('INSERT INTO "Account" ("id","provider","providerId","email","name","avatarUrl","providerData","accessToken","refreshToken","refreshTokenExpiry","tokenVersion","createdAt","updatedAt") VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)',
        [ a.id, a.provider, a.providerId, a.email, a.name, a.avatarUrl, a.providerData === null ? null : JSON.stringify(a.providerData), 'unused',
          a.refreshToken, a.refreshToken ? at(100) : null, a.tokenVersion, a.createdAt, a.updatedAt ]);
    }
    for (const d of fx.devices) {
      await c.query('INSERT INTO "Device" ("id","uuid","name","accountId","createdAt","updatedAt","password","passwordHint","namespace") VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)',
        [ d.id, d.uuid, d.name, d.accountId, d.createdAt, d.updatedAt, d.password, d.passwordHint, d.namespace ]);
    }
    await c.query('SELECT setval(pg_get_serial_sequence(\'"Device"\', \'id\'), 100)');
    for (const i of fx.installs) await insertPgInstall(c, i);
    for (const g of fx.configs) {
      await c.query('INSERT INTO "AutoAuth" ("id","deviceId","password","deviceType","isReadOnly","createdAt","updatedAt") VALUES ($1,$2,$3,$4,$5,$6,$7)',
        [ g.id, g.deviceId, g.password, g.deviceType, g.isReadOnly, g.createdAt, g.updatedAt ]);
    }
    for (const k of fx.keys) await insertPgKey(c, k);
  } finally {
    await c.end();
  }
  return url;
}

export async function insertPgInstall(c: Client, i: FxInstall) {
  await c.query('INSERT INTO "AppInstall" ("id","deviceId","appId","token","note","installedAt","updatedAt","deviceType","isReadOnly") VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)',
    [ i.id, i.deviceId, i.appId, i.token, i.note, i.installedAt, i.updatedAt, i.deviceType, i.isReadOnly ]);
}

export async function insertPgKey(c: Client, k: FxKey) {
  await c.query('INSERT INTO "KVStore" ("deviceId","key","value","creatorIp","createdAt","updatedAt") VALUES ($1,$2,$3::json,$4,$5,$6)',
    [ k.deviceId, k.key, JSON.stringify(k.value), k.creatorIp, k.createdAt, k.updatedAt ]);
}

/** Creates (anew) the MySQL database `name` with the 1.1 schema and the fixture; returns its URL. */
export async function createMysql11(name: string, fx: Fixture): Promise<string> {
  const u = new URL(MYSQL_ADMIN_URL);
  u.pathname = `/${name}`;
  const url = u.toString();
  const admin = await mysql.createConnection({ uri: MYSQL_ADMIN_URL });
  try {
    await admin.query(`DROP DATABASE IF EXISTS \`${name}\``);
    await admin.query(`CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`);
  } finally {
    await admin.end();
  }
  const c = await mysqlSource(url);
  try {
    for (const sql of MYSQL_11_DDL) await c.query(sql);
    for (const a of fx.accounts) {
      await c.query('INSERT INTO `Account` (`id`,`provider`,`providerId`,`email`,`name`,`avatarUrl`,`providerData`,`accessToken`,`createdAt`,`updatedAt`) VALUES (?,?,?,?,?,?,?,?,?,?)',
        [ a.id, a.provider, a.providerId, a.email, a.name, a.avatarUrl, a.providerData === null ? null : JSON.stringify(a.providerData), 'unused', a.createdAt, a.updatedAt ]);
    }
    for (const d of fx.devices) {
      await c.query('INSERT INTO `Device` (`id`,`uuid`,`name`,`accountId`,`createdAt`,`updatedAt`,`password`,`passwordHint`) VALUES (?,?,?,?,?,?,?,?)',
        [ d.id, d.uuid, d.name, d.accountId, d.createdAt, d.updatedAt, d.password, d.passwordHint ]);
    }
    for (const i of fx.installs) {
      await c.query('INSERT INTO `AppInstall` (`id`,`deviceId`,`appId`,`token`,`note`,`installedAt`,`updatedAt`) VALUES (?,?,?,?,?,?,?)',
        [ i.id, i.deviceId, i.appId, i.token, i.note, i.installedAt, i.updatedAt ]);
    }
    for (const k of fx.keys) await insertMysqlKey(c, k);
  } finally {
    await c.end();
  }
  return url;
}

/** A connection to a 1.1 source (DATETIME(3) in UTC, as Prisma writes them). */
export function mysqlSource(url: string) {
  return mysql.createConnection({ uri: url, timezone: 'Z', charset: 'utf8mb4' });
}

export async function insertMysqlKey(c: mysql.Connection, k: FxKey) {
  await c.query('INSERT INTO `KVStore` (`deviceId`,`key`,`value`,`creatorIp`,`createdAt`,`updatedAt`) VALUES (?,?,?,?,?,?)',
    [ k.deviceId, k.key, JSON.stringify(k.value), k.creatorIp, k.createdAt, k.updatedAt ]);
}

export async function dropPg(name: string) {
  const admin = new Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${name}`);
  } finally {
    await admin.end();
  }
}

export async function dropMysql(name: string) {
  const admin = await mysql.createConnection({ uri: MYSQL_ADMIN_URL });
  try {
    await admin.query(`DROP DATABASE IF EXISTS \`${name}\``);
  } finally {
    await admin.end();
  }
}

/** A database of the right kind that is not a ClassworksKV one. */
export async function createForeignPg(name: string): Promise<string> {
  const admin = new Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${name}`);
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const u = new URL(PG_ADMIN_URL);
  u.pathname = `/${name}`;
  const c = new Client({ connectionString: u.toString() });
  await c.connect();
  await c.query('CREATE TABLE users (id SERIAL PRIMARY KEY, email TEXT)');
  await c.end();
  return u.toString();
}

export async function createForeignMysql(name: string): Promise<string> {
  const admin = await mysql.createConnection({ uri: MYSQL_ADMIN_URL });
  try {
    await admin.query(`DROP DATABASE IF EXISTS \`${name}\``);
    await admin.query(`CREATE DATABASE \`${name}\``);
    await admin.query(`CREATE TABLE \`${name}\`.\`Device\` (id INT PRIMARY KEY, label TEXT)`);
  } finally {
    await admin.end();
  }
  const u = new URL(MYSQL_ADMIN_URL);
  u.pathname = `/${name}`;
  return u.toString();
}
