import 'egg';
import type { Settings } from '../config/env';
import type { TokenInfo } from '../app/lib/tokenCache';
import type { Realtime } from '../app/lib/realtime';
import type { MysqlKvWriter } from '../app/lib/kvWriter';
import type { ValueCache } from '../app/lib/valueCache';
import type { Revocations } from '../app/lib/revocations';
import type { LogTrimmer } from '../app/lib/logTrimmer';
import type { DatabaseCounts, Metrics } from '../app/lib/metrics';
import type { CachedFetch } from '../app/lib/cachedFetch';
import type { DeviceAttributes } from '../app/model/device';
import type { AccountSession } from '../app/service/accounts';
import type TokenController from '../app/io/controller/token';
import type EventController from '../app/io/controller/event';

declare module 'egg' {
  interface EggAppConfig {
    classworks: Settings;
  }

  interface Application {
    realtime: Realtime;
    /** Token revocation that survives a lost bus message (app.ts, app/lib/revocations.ts). */
    revocations: Revocations;
    /** Stored values of this worker for GET /kv/:key, checked against shared state (app.ts). */
    valueCache: ValueCache;
    /** The batched MySQL write path of POST /kv/:key; undefined on SQLite (app.ts). */
    kvWriter?: MysqlKvWriter;
    /** Keeps device_log within retention, off the write path (app.ts). */
    logTrimmer: LogTrimmer;
    /** This worker's metrics and the cluster's combined figures (app.ts, app/lib/metrics.ts). */
    metrics: Metrics;
    /** The devices and keys counts of `GET /metrics`, per worker (app.ts, app/service/metrics.ts). */
    metricsCounts: CachedFetch<DatabaseCounts>;
  }

  interface Agent {
    model: IModel;
  }

  interface Context {
    /** The device resolved by the uuidAuth middleware. */
    device: DeviceAttributes;
    /** The account session resolved by accountAuth (or uuidAuth, from an account token). */
    accountSession: AccountSession;
    /** The token resolved by the kvAuth middleware. */
    kvToken: TokenInfo;
    /** Arguments of the socket event (egg-socket.io). */
    args: unknown[];
    packet: unknown[];
  }

  // app/io (egg-socket.io) is not covered by egg-ts-helper.
  interface CustomController {
    token: TokenController;
    event: EventController;
  }
}
