import type { Transaction } from 'sequelize';
import { hashPassword, verifyPassword } from '../../lib/password';
import { uuidv7 } from '../../lib/uuidv7';
import type { DeviceAttributes } from '../../model/device';
import { walkAccounts } from './accounts';
import { walkKeys } from './keys';
import type { SourceConfig, SourceDevice, SourceInstall, SqlSource } from './source';
import type { Target } from './target';
import {
  DeviceState, MAX_LISTED, Mode, PassResult, Resolution, Table, Walk, emptyTally, maskToken, same, sameTime,
} from './walk';

export { Mode, PassResult, Resolution, TABLES } from './walk';

/**
 * The import's one algorithm, run three times (CONTRACT.md §9):
 * - `plan`: every source row is compared with this server's database and classified as
 *   new (to copy), same (already here, identical) or conflict (here with other data, or
 *   impossible to store); nothing is written. This is the dry run's report, and a conflict
 *   stops the import here unless a resolution was given.
 * - `write`: the same walk, copying what is new and resolving conflicts (`skip`: this
 *   server's row stays, the source's is not copied; `overwrite`: the source's replaces it).
 *   One transaction per page of devices, holding the devices with their tokens, configs
 *   and keys; after each commit the running cluster is told (onCommit).
 * - `verify`: the same walk again; every row must now be the same (values compared as JSON,
 *   deep-equal), except conflicts left in place by `skip`.
 * The walk reads the source in keyset pages (devices by id, keys by (deviceId, key)), so
 * memory stays flat whatever the number of keys.
 *
 * Revisions: an imported device's keys get revisions 1..n in key order and the device's
 * revision is n; no change-log records are written for them (the source has no history, and
 * `GET /kv/_changes?since=<n` answers 410 CHANGES_EXPIRED: re-read the keys, as after trimming).
 * A key copied into a device that already exists here (a later run, or `overwrite`) takes the
 * device's next revision with its change-log record (`kv-key-changed`, `batch`), as a write
 * through the API would, so `_changes` and `join-token {since}` stay gap-free; it is not
 * broadcast to sockets joined at that moment (see README "Switching over from ClassworksKV").
 */

export interface ImporterOptions {
  resolution: Resolution;
  bcryptCost: number;
  devicePage?: number;
  keyPage?: number;
  /** Called after every committed page of the write pass: the devices whose revision rose, the tokens replaced. */
  onCommit?: (revisions: Array<{ deviceId: number; revision: number }>, tokens: string[]) => Promise<void>;
  /** Progress: devices and keys walked in this pass. */
  onProgress?: (mode: Mode, devices: number, keys: number) => void;
}

export class Importer {
  private readonly devicePage: number;
  private readonly keyPage: number;

  constructor(private readonly source: SqlSource, private readonly target: Target, private readonly opts: ImporterOptions) {
    this.devicePage = opts.devicePage ?? 200;
    this.keyPage = opts.keyPage ?? 5000;
  }

  async pass(mode: Mode): Promise<PassResult> {
    const r: PassResult = { mode, tally: emptyTally(), conflicts: [], conflictCount: 0 };
    await walkAccounts(this.walk(mode, r));
    const walked = { devices: 0, keys: 0 };
    const progress = (n: number) => {
      walked.keys += n;
      this.opts.onProgress?.(mode, walked.devices, walked.keys);
    };
    const run = <T>(fn: (t?: Transaction) => Promise<T>) => (mode === 'write' ? this.target.transaction(t => fn(t)) : fn(undefined));
    for await (const page of this.source.devices(this.devicePage)) {
      const revisions: Array<{ deviceId: number; revision: number }> = [];
      const tokens: string[] = [];
      await run(async t => {
        const states = await this.devices(mode, r, page, t);
        await this.installs(mode, r, states, page, t, tokens);
        await this.configs(mode, r, states, page, t);
        await walkKeys(this.walk(mode, r), states, page, t, this.keyPage, revisions, progress);
      });
      walked.devices += page.length;
      progress(0);
      if (mode === 'write' && this.opts.onCommit && (revisions.length || tokens.length)) await this.opts.onCommit(revisions, tokens);
    }
    return r;
  }

  private walk(mode: Mode, r: PassResult): Walk {
    return { mode, r, source: this.source, target: this.target, decide: (...args) => this.decide(mode, r, ...args) };
  }

  /** Classifies one row; returns what to do with it. */
  private decide(mode: Mode, r: PassResult, table: Table, status: 'new' | 'same' | 'conflict', what: string, reason = '', storable = true): 'insert' | 'replace' | 'none' {
    const tally = r.tally[table];
    if (status === 'new') {
      tally.new += 1;
      return 'insert';
    }
    if (status === 'same') {
      tally.same += 1;
      return 'none';
    }
    if (mode === 'verify' && this.opts.resolution === 'skip') {
      tally.skipped += 1;
      return 'none';
    }
    tally.conflict += 1;
    r.conflictCount += 1;
    if (r.conflicts.length < MAX_LISTED) r.conflicts.push({ table, what, reason });
    return this.opts.resolution === 'overwrite' && storable ? 'replace' : 'none';
  }

  // ---------------------------------------------------------------- accounts


  private async devices(mode: Mode, r: PassResult, page: SourceDevice[], t?: Transaction): Promise<Map<number, DeviceState>> {
    const states = new Map<number, DeviceState>();
    const here = new Map((await this.target.devicesByUuid(page.map(d => d.uuid), t)).map(d => [ d.uuid, d ]));
    // A device without a namespace of its own answers to its uuid, unless that string is
    // another device's namespace (in the source, or here): as DeviceService.create() does.
    const takenInSource = await this.source.namespacesTaken(page.filter(d => d.namespace === null).map(d => d.uuid));
    const wanted = [ ...new Set(page.map(d => d.namespace ?? d.uuid)) ];
    const holders = await this.target.namespaceHolders(wanted, t);
    const holderOf = (v: string) => holders.find(h => h.namespace === v) ?? holders.find(h => h.namespace === null && h.uuid === v);

    const inserts: Array<Partial<DeviceAttributes>> = [];
    for (const d of page) {
      r.tally.devices.source += 1;
      let namespace: string | null = d.namespace;
      const reasons: string[] = [];
      const holder = holderOf(d.namespace ?? d.uuid);
      if (d.namespace === null) {
        namespace = takenInSource.has(d.uuid) || (holder && holder.uuid !== d.uuid) ? null : d.uuid;
      } else if (holder && holder.uuid !== d.uuid) {
        reasons.push(`namespace "${d.namespace}" belongs to device ${holder.uuid} here`);
      }
      const row: Partial<DeviceAttributes> = {
        uuid: d.uuid, name: d.name, namespace, password: d.password, passwordHint: d.passwordHint,
        accountId: d.accountId, createdAt: d.createdAt, updatedAt: d.updatedAt,
      };
      const existing = here.get(d.uuid);
      if (existing) {
        const diff: string[] = ([ 'name', 'namespace', 'password', 'passwordHint', 'accountId' ] as const).filter(f => !same(existing[f], row[f]));
        for (const f of [ 'createdAt', 'updatedAt' ] as const) if (!sameTime(existing[f], row[f])) diff.push(f);
        // Field names only: a password hash is a secret.
        if (diff.length) reasons.push(`here with other ${diff.join(', ')}`);
      }
      const status = reasons.length ? 'conflict' : existing ? 'same' : 'new';
      const action = this.decide(mode, r, 'devices', status, `device ${d.uuid}`, reasons.join('; '));
      // A device that will not be copied is skipped with its rows, except in the plan of a run that
      // stops on conflicts: its report lists every conflict at once.
      const skipped = status === 'conflict' && action !== 'replace' && !(mode === 'plan' && this.opts.resolution === 'stop');
      const state: DeviceState = { src: d, targetId: existing?.id, skipped, created: false };
      states.set(d.id, state);
      if (mode !== 'write') continue;
      if (action === 'replace') {
        // The namespace moves to the imported device: the other one answers to its uuid again.
        if (d.namespace !== null && holder && holder.uuid !== d.uuid && holder.namespace === d.namespace) {
          await this.target.Device.update({ namespace: null }, { where: { id: holder.id }, transaction: t, silent: true });
        }
        if (existing) {
          await this.target.Device.update(row, { where: { id: existing.id }, transaction: t, silent: true });
        } else {
          inserts.push({ ...row, revision: 0 });
          state.created = true;
        }
        r.tally.devices.copied += 1;
      } else if (action === 'insert') {
        inserts.push({ ...row, revision: 0 });
        state.created = true;
        r.tally.devices.copied += 1;
      }
    }
    if (inserts.length) {
      await this.target.Device.bulkCreate(inserts, { transaction: t });
      const ids = new Map((await this.target.devicesByUuid(inserts.map(d => d.uuid!), t)).map(d => [ d.uuid, d.id ]));
      for (const s of states.values()) if (s.created) s.targetId = ids.get(s.src.uuid);
    }
    return states;
  }

  // ---------------------------------------------------------------- tokens

  private async installs(mode: Mode, r: PassResult, states: Map<number, DeviceState>, page: SourceDevice[], t: Transaction | undefined, replaced: string[]) {
    const all = await this.source.installs(page[0].id, page[page.length - 1].id);
    const rows = all.filter(i => states.has(i.deviceId));
    const here = await this.target.installs(rows.map(i => i.token), rows.map(i => i.id), t);
    const byToken = new Map(here.map(i => [ i.token, i ]));
    const byId = new Map(here.map(i => [ i.id, i ]));
    const inserts: Array<SourceInstall & { deviceId: number }> = [];
    for (const i of rows) {
      r.tally.tokens.source += 1;
      const st = states.get(i.deviceId)!;
      if (st.skipped) {
        r.tally.tokens.skipped += 1;
        continue;
      }
      const reasons: string[] = [];
      const invalid = i.token.length > 64 ? 'token longer than 64 characters' : i.id.length > 36 ? 'id longer than 36 characters'
        : (i.deviceType?.length ?? 0) > 16 ? 'deviceType longer than 16 characters' : '';
      if (invalid) reasons.push(`cannot be stored here: ${invalid}`);
      const byT = byToken.get(i.token);
      const byI = byId.get(i.id);
      if (byT && (st.targetId === undefined || byT.deviceId !== st.targetId)) reasons.push('token belongs to another device here');
      if (byI && byI.token !== i.token) reasons.push('install id belongs to another token here');
      if (byT && !reasons.length) {
        const diff = ([ 'id', 'appId', 'note', 'deviceType' ] as const).filter(f => !same(byT[f], i[f]));
        if (Boolean(byT.isReadOnly) !== i.isReadOnly) diff.push('isReadOnly' as 'id');
        for (const f of [ 'installedAt', 'updatedAt' ] as const) if (!sameTime(byT[f], i[f])) diff.push(f as 'id');
        if (diff.length) reasons.push(`here with other ${diff.join(', ')}`);
      }
      const status = reasons.length ? 'conflict' : byT ? 'same' : 'new';
      const action = this.decide(mode, r, 'tokens', status, `token ${maskToken(i.token)} of device ${st.src.uuid}`, reasons.join('; '), !invalid);
      if (mode !== 'write' || action === 'none') continue;
      if (action === 'replace') {
        await this.target.AppInstall.destroy({ where: { token: i.token }, transaction: t });
        await this.target.AppInstall.destroy({ where: { id: i.id }, transaction: t });
        replaced.push(i.token);
      }
      inserts.push({ ...i, deviceId: st.targetId! });
    }
    if (inserts.length) {
      await this.target.AppInstall.bulkCreate(inserts, { transaction: t });
      r.tally.tokens.copied += inserts.length;
    }
  }

  // ---------------------------------------------------------------- auto-auth configs

  private async configs(mode: Mode, r: PassResult, states: Map<number, DeviceState>, page: SourceDevice[], t?: Transaction) {
    if (!this.source.hasConfigs) return this.defaultConfigs(mode, r, states, t);
    const rows = (await this.source.configs(page[0].id, page[page.length - 1].id)).filter(c => states.has(c.deviceId));
    const here = new Map((await this.target.configs(rows.map(c => c.id), t)).map(c => [ c.id, c ]));
    const inserts: Array<SourceConfig & { deviceId: number }> = [];
    for (const c of rows) {
      r.tally.configs.source += 1;
      const st = states.get(c.deviceId)!;
      if (st.skipped) {
        r.tally.configs.skipped += 1;
        continue;
      }
      const reasons: string[] = [];
      const invalid = c.id.length > 36 ? 'id longer than 36 characters' : (c.deviceType?.length ?? 0) > 16 ? 'deviceType longer than 16 characters' : '';
      if (invalid) reasons.push(`cannot be stored here: ${invalid}`);
      const h = here.get(c.id);
      if (h && (st.targetId === undefined || h.deviceId !== st.targetId)) reasons.push('config id belongs to another device here');
      if (h && !reasons.length) {
        const diff: string[] = [];
        if (!same(h.deviceType, c.deviceType)) diff.push('deviceType');
        if (Boolean(h.isReadOnly) !== c.isReadOnly) diff.push('isReadOnly');
        // Stored as a bcrypt hash here: the source's plain password must verify against it.
        const passwordSame = c.password === null ? h.password === null : h.password !== null && await verifyPassword(c.password, h.password);
        if (!passwordSame) diff.push('password');
        for (const f of [ 'createdAt', 'updatedAt' ] as const) if (!sameTime(h[f], c[f])) diff.push(f);
        if (diff.length) reasons.push(`here with other ${diff.join(', ')}`);
      }
      const status = reasons.length ? 'conflict' : h ? 'same' : 'new';
      const action = this.decide(mode, r, 'configs', status, `auto-auth config ${c.id} of device ${st.src.uuid}`, reasons.join('; '), !invalid);
      if (mode !== 'write' || action === 'none') continue;
      if (action === 'replace') await this.target.AutoAuthConfig.destroy({ where: { id: c.id }, transaction: t });
      inserts.push({
        ...c,
        deviceId: st.targetId!,
        // The original kept class passwords in plain text; here they are bcrypt hashes (§6.1).
        password: c.password === null ? null : await hashPassword(c.password, this.opts.bcryptCost),
      });
    }
    if (inserts.length) {
      await this.target.AutoAuthConfig.bulkCreate(inserts, { transaction: t });
      r.tally.configs.copied += inserts.length;
    }
  }

  /**
   * A 1.1 source has no auto-auth configs; its devices get the default one (no password,
   * classroom, not read-only), exactly as the 1.3 migration gives every device already here.
   * Counted as one expected config per device.
   */
  private async defaultConfigs(mode: Mode, r: PassResult, states: Map<number, DeviceState>, t?: Transaction) {
    const present = await this.target.configCount([ ...states.values() ].filter(s => s.targetId !== undefined && !s.created).map(s => s.targetId!), t);
    const inserts = [];
    for (const st of states.values()) {
      r.tally.configs.source += 1;
      if (st.skipped) {
        r.tally.configs.skipped += 1;
        continue;
      }
      const has = !st.created && st.targetId !== undefined && (present.get(st.targetId) ?? 0) > 0;
      const action = this.decide(mode, r, 'configs', has ? 'same' : 'new', `default auto-auth config of device ${st.src.uuid}`);
      if (mode === 'write' && action === 'insert') {
        const now = new Date();
        inserts.push({ id: uuidv7(), deviceId: st.targetId!, password: null, deviceType: 'classroom', isReadOnly: false, createdAt: now, updatedAt: now });
      }
    }
    if (inserts.length) {
      await this.target.AutoAuthConfig.bulkCreate(inserts, { transaction: t });
      r.tally.configs.copied += inserts.length;
    }
  }

  // ---------------------------------------------------------------- keys
}
