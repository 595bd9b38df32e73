import { app } from 'egg-mock/bootstrap';

let seq = 0;

export interface TestDevice {
  id: number;
  uuid: string;
  name: string;
}

export interface TestInstall {
  id: string;
  appId: string;
  token: string;
  note: string | null;
  deviceType: string | null;
  isReadOnly: boolean;
  installedAt: string;
}

/** Registers a device through the API (optionally with a password). */
export async function createDevice(opts: { uuid?: string; name?: string; password?: string; hint?: string } = {}): Promise<TestDevice> {
  seq += 1;
  const uuid = opts.uuid ?? `device-${process.pid}-${seq}`;
  const name = opts.name ?? `Device ${seq}`;
  const res = await app.httpRequest().post('/devices').send({ uuid, deviceName: name }).expect(201);
  if (opts.password) {
    await app.httpRequest().post(`/devices/${encodeURIComponent(uuid)}/password`)
      .send({ newPassword: opts.password, ...(opts.hint ? { passwordHint: opts.hint } : {}) })
      .expect(200);
  }
  return { id: res.body.device.id, uuid, name };
}

export interface InstallOptions {
  appId?: string;
  note?: string;
  password?: string;
  /** teacher | student | classroom | parent (or null); absent: not sent. */
  deviceType?: string | null;
  isReadOnly?: boolean;
}

/** Installs an app on a device through the API and returns the install (with its token). */
export async function installApp(device: TestDevice, opts: InstallOptions = {}): Promise<TestInstall> {
  const appId = opts.appId ?? 'test-app';
  const req = app.httpRequest().post(`/apps/devices/${encodeURIComponent(device.uuid)}/install/${encodeURIComponent(appId)}`);
  if (opts.password) req.set('x-device-password', opts.password);
  const body: Record<string, unknown> = {};
  for (const field of [ 'note', 'deviceType', 'isReadOnly' ] as const) {
    if (opts[field] !== undefined) body[field] = opts[field];
  }
  const res = await req.send(body).expect(201);
  return res.body;
}

/** A device with one installed app: the usual starting point of KV tests. */
export async function deviceWithToken(opts: { uuid?: string } = {}) {
  const device = await createDevice(opts);
  const install = await installApp(device);
  return { device, install, token: install.token };
}

const savedRateLimits: Array<Record<string, number>> = [];

/**
 * Changes rate limits (app.config.classworks.rateLimit) for one test. Pair it with
 * `restoreRateLimits()` in an afterEach so no other test sees the change.
 */
export function overrideRateLimits(values: Partial<Record<'ip' | 'kvRead' | 'kvWrite' | 'kvDelete' | 'kvBatch' | 'password' | 'passwordTarget' | 'events' | 'history' | 'tokenFailures', number>>) {
  const limits = app.config.classworks.rateLimit as unknown as Record<string, number>;
  savedRateLimits.push({ ...limits });
  Object.assign(limits, values);
}

/** Undoes every `overrideRateLimits()` since the last restore. */
export function restoreRateLimits() {
  const first = savedRateLimits[0];
  savedRateLimits.length = 0;
  if (first) Object.assign(app.config.classworks.rateLimit, first);
}

/** ISO-8601 with milliseconds, UTC: the contract's timestamp format. */
export const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
