import type { SqlSource } from './source';
import type { SourceDevice } from './source';
import { Target, ms } from './target';

/** What the import's per-table walks share (importer.ts runs them; accounts.ts, keys.ts). */

export type Resolution = 'stop' | 'skip' | 'overwrite';
export type Mode = 'plan' | 'write' | 'verify';
export const TABLES = [ 'accounts', 'devices', 'tokens', 'configs', 'keys' ] as const;
export type Table = typeof TABLES[number];

export interface Tally {
  /** Rows read from the source. */
  source: number;
  new: number;
  same: number;
  conflict: number;
  /** Not looked at: rows of a device that is skipped, and conflicts left in place by `skip` (verify). */
  skipped: number;
  /** Rows written by this pass. */
  copied: number;
}

export interface Conflict {
  table: Table;
  what: string;
  reason: string;
}

export interface PassResult {
  mode: Mode;
  tally: Record<Table, Tally>;
  conflicts: Conflict[];
  conflictCount: number;
}

/** How many conflicts the report keeps (all are counted). */
export const MAX_LISTED = 100;

/** A token in a report: enough to find it, not enough to use it. */
export const maskToken = (token: string) => `${token.slice(0, 8)}…`;
export const same = (a: unknown, b: unknown) => (a ?? null) === (b ?? null);
export const sameTime = (a: unknown, b: unknown) => ms(a) === ms(b);

export function emptyTally(): Record<Table, Tally> {
  return Object.fromEntries(TABLES.map(t => [ t, { source: 0, new: 0, same: 0, conflict: 0, skipped: 0, copied: 0 }])) as Record<Table, Tally>;
}

/** Per page of devices: what the walk knows of each source device here. */
export interface DeviceState {
  src: SourceDevice;
  /** The device's id here (undefined: not here, and not written by this pass). */
  targetId?: number;
  /** Not copied in this pass: its rows are not looked at. */
  skipped: boolean;
  /** Created by this pass (its keys take revisions 1..n). */
  created: boolean;
}

/** One pass in progress. */
export interface Walk {
  mode: Mode;
  r: PassResult;
  source: SqlSource;
  target: Target;
  /** Counts one row as new, same or conflict; returns what to do with it (Importer.decide()). */
  decide(table: Table, status: 'new' | 'same' | 'conflict', what: string, reason?: string, storable?: boolean): 'insert' | 'replace' | 'none';
}
