import { isDeepStrictEqual } from 'node:util';
import type { Transaction } from 'sequelize';
import type { SourceDevice, SourceKey } from './source';
import { DeviceState, Walk, same, sameTime } from './walk';

/** Largest batch of key rows in one INSERT (rows, and bytes of values). */
const INSERT_ROWS = 1000;
const INSERT_BYTES = 4 * 1024 * 1024;

/**
 * The keys of one page of devices, streamed in (deviceId, key) pages: compared with the stored
 * ones where the device is already here; written with their revisions in the write pass.
 */
export async function walkKeys(w: Walk, states: Map<number, DeviceState>, page: SourceDevice[], t: Transaction | undefined, keyPage: number,
  revisions: Array<{ deviceId: number; revision: number }>, progress: (n: number) => void) {
  const { mode, r } = w;
  /** New devices: target id → last revision given. */
  const counters = new Map<number, number>();
  /** Devices already here that got keys: target id → their new revision. */
  const raised = new Map<number, number>();
  for await (const batch of w.source.keys(page[0].id, page[page.length - 1].id, keyPage)) {
    const rows = batch.filter(k => states.has(k.deviceId));
    // Keys of devices that are here (and not created by this pass) are compared with the stored ones.
    const lookup = rows.filter(k => {
      const st = states.get(k.deviceId)!;
      return !st.skipped && !st.created && st.targetId !== undefined;
    });
    const stored = new Map((await w.target.entries(
      [ ...new Set(lookup.map(k => states.get(k.deviceId)!.targetId!)) ], [ ...new Set(lookup.map(k => k.key)) ], t,
    )).map(e => [ `${e.deviceId}\u0000${e.key}`, e ]));

    const fresh: SourceKey[] = [];
    const replace: SourceKey[] = [];
    for (const k of rows) {
      r.tally.keys.source += 1;
      const st = states.get(k.deviceId)!;
      if (st.skipped) {
        r.tally.keys.skipped += 1;
        continue;
      }
      const reasons: string[] = [];
      const e = st.targetId === undefined ? undefined : stored.get(`${st.targetId}\u0000${k.key}`);
      // Parsed only when compared or written (the plan of a new device only counts it).
      let value: unknown;
      if (e || mode !== 'plan') {
        try {
          value = JSON.parse(k.json);
        } catch {
          reasons.push('cannot be stored here: the value is not JSON');
        }
      }
      if ((k.creatorIp?.length ?? 0) > 64) reasons.push('cannot be stored here: creatorIp longer than 64 characters');
      const storable = reasons.length === 0;
      if (e && storable) {
        const diff: string[] = [];
        if (!isDeepStrictEqual(JSON.parse(e.value), value)) diff.push('value');
        if (!same(e.creatorIp, k.creatorIp)) diff.push('creatorIp');
        for (const f of [ 'createdAt', 'updatedAt' ] as const) if (!sameTime(e[f], k[f])) diff.push(f);
        if (diff.length) reasons.push(`here with other ${diff.join(', ')}`);
      }
      const status = reasons.length ? 'conflict' : e ? 'same' : 'new';
      const action = w.decide('keys', status, `key "${k.key}" of device ${st.src.uuid}`, reasons.join('; '), storable);
      if (mode !== 'write' || action === 'none') continue;
      k.json = JSON.stringify(value);
      (action === 'replace' ? replace : fresh).push(k);
    }
    if (mode === 'write') await writeKeys(w, states, fresh, replace, counters, raised, t!);
    progress(batch.length);
  }
  if (mode !== 'write') return;
  await w.target.setRevisions(counters, t!);
  for (const [ deviceId, revision ] of [ ...counters, ...raised ]) revisions.push({ deviceId, revision });
}

async function writeKeys(w: Walk, states: Map<number, DeviceState>, fresh: SourceKey[], replace: SourceKey[],
  counters: Map<number, number>, raised: Map<number, number>, t: Transaction) {
  const { r } = w;
  if (replace.length) {
    for (const k of replace) await w.target.KvEntry.destroy({ where: { deviceId: states.get(k.deviceId)!.targetId!, key: k.key }, transaction: t });
  }
  const all = [ ...fresh, ...replace ];
  if (all.length === 0) return;
  // Revisions: a device created by this pass numbers its keys 1..n; a device already here
  // takes its next revisions, raised in its row first (bumpRevision(), app/lib/deviceRevision.ts, as the KV writes).
  const firsts = new Map<number, number>();
  const perDevice = new Map<number, number>();
  for (const k of all) {
    const st = states.get(k.deviceId)!;
    if (!st.created) perDevice.set(st.targetId!, (perDevice.get(st.targetId!) ?? 0) + 1);
  }
  for (const [ id, n ] of perDevice) {
    const first = await w.target.bumpRevision(id, n, t);
    firsts.set(id, first);
    raised.set(id, first + n - 1);
  }
  let rows: Array<Record<string, unknown>> = [];
  let log: Array<Record<string, unknown>> = [];
  let bytes = 0;
  const flush = async () => {
    if (rows.length === 0) return;
    // The query generator of the models' tables, without building a model instance per row
    // (measured: a third of the write pass's CPU, docs/PERFORMANCE.md §6).
    const qi = w.target.sequelize.getQueryInterface();
    await qi.bulkInsert(w.target.KvEntry.getTableName() as string, rows, { transaction: t }, w.target.KvEntry.getAttributes());
    if (log.length) await qi.bulkInsert(w.target.DeviceLog.getTableName() as string, log, { transaction: t }, w.target.DeviceLog.getAttributes());
    r.tally.keys.copied += rows.length;
    rows = [];
    log = [];
    bytes = 0;
  };
  const replaced = new Set(replace);
  for (const k of all) {
    const st = states.get(k.deviceId)!;
    const id = st.targetId!;
    let revision: number;
    if (st.created) {
      revision = (counters.get(id) ?? 0) + 1;
      counters.set(id, revision);
    } else {
      revision = firsts.get(id)!;
      firsts.set(id, revision + 1);
      log.push({ deviceId: id, revision, seq: 0, type: 'kv-key-changed', key: k.key, action: 'upsert', created: !replaced.has(k), batch: true, recordedAt: k.updatedAt });
    }
    rows.push({ deviceId: id, key: k.key, value: k.json, creatorIp: k.creatorIp, revision, createdAt: k.createdAt, updatedAt: k.updatedAt });
    bytes += k.json.length + k.key.length + 64;
    if (rows.length >= INSERT_ROWS || bytes >= INSERT_BYTES) await flush();
  }
  await flush();
}
