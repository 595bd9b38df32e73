import { Command, CommanderError, Option } from 'commander';
import cliProgress from 'cli-progress';
import { ConfigError, loadSettings } from '../../../config/env';
import { Importer, Mode, PassResult, Resolution, TABLES } from './importer';
import { MysqlSource } from './mysqlSource';
import { ClusterNotifier } from './notify';
import { PostgresSource } from './postgresSource';
import { SourceError, SqlSource, SourceCounts, redactUrl } from './source';
import { Target } from './target';

/**
 * `npm run import -- <source-url> [--dry-run] [--on-conflict=stop|skip|overwrite]`
 * (CONTRACT.md §9; README "Switching over from ClassworksKV").
 *
 * Exit codes: 0 imported and verified (or dry run without conflicts); 1 the import could not
 * run (one line on stderr: unreachable source or target, not a ClassworksKV database, bad
 * arguments); 2 conflicts and no resolution (nothing written); 3 the verification found
 * differences; 4 imported and verified, but the running cluster could not be told (Redis).
 */
export interface Io {
  out: NodeJS.WritableStream;
  err: NodeJS.WritableStream & { isTTY?: boolean };
  env: Record<string, string | undefined>;
  cwd: string;
}

const LABEL: Record<string, string> = { accounts: 'accounts', devices: 'devices', tokens: 'tokens', configs: 'auto-auth', keys: 'keys' };

/** Progress on stderr: a bar on a terminal, a plain line every 10 % otherwise. */
class Progress {
  private bar?: cliProgress.SingleBar;
  private lastStep = -1;
  private phase: Mode = 'plan';
  private total = 0;
  private last?: { devices: number; keys: number };

  constructor(private readonly io: Io) {}

  start(phase: Mode, total: number) {
    this.stop();
    this.phase = phase;
    this.total = total;
    this.lastStep = -1;
    this.last = { devices: 0, keys: 0 };
    if (this.io.err.isTTY) {
      this.bar = new cliProgress.SingleBar({
        stream: this.io.err as NodeJS.WriteStream,
        format: `${phase.padEnd(6)} [{bar}] {percentage}% | {value}/{total} keys | {devices} devices | {eta_formatted}`,
        hideCursor: true,
        etaBuffer: 50,
      }, cliProgress.Presets.shades_classic);
      this.bar.start(Math.max(total, 1), 0, { devices: 0 });
    }
  }

  update(devices: number, keys: number) {
    this.last = { devices, keys };
    if (this.bar) {
      this.bar.update(keys, { devices });
      return;
    }
    const step = this.total === 0 ? 0 : Math.floor((keys / this.total) * 10);
    if (step > this.lastStep && step < 10) {
      this.lastStep = step;
      this.io.err.write(`import: ${this.phase} ${keys}/${this.total} keys (${step * 10}%), ${devices} devices\n`);
    }
  }

  stop() {
    if (this.bar) {
      this.bar.stop();
      this.bar = undefined;
    } else if (this.last) {
      this.io.err.write(`import: ${this.phase} done, ${this.last.keys} keys, ${this.last.devices} devices\n`);
    }
    this.last = undefined;
  }
}

function table(out: NodeJS.WritableStream, headers: string[], rows: Array<Array<string | number>>) {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map(r => String(r[i]).length)));
  const line = (cells: Array<string | number>) => `  ${cells.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  ')}\n`;
  out.write(line(headers));
  for (const r of rows) out.write(line(r));
}

function printConflicts(io: Io, r: PassResult) {
  if (r.conflictCount === 0) return;
  io.out.write(`\nconflicts (${r.conflictCount}${r.conflicts.length < r.conflictCount ? `, first ${r.conflicts.length} listed` : ''}):\n`);
  for (const c of r.conflicts) io.out.write(`  ${c.what}: ${c.reason}\n`);
}

function parseArgs(argv: string[], io: Io) {
  const program = new Command()
    .name('npm run import --')
    .description('Copies a ClassworksKV database (1.3 on PostgreSQL, 1.1 on MySQL) into this server\'s database (DATABASE_URL).')
    .argument('<source-url>', 'postgresql://user:pass@host:5432/db (1.3) or mysql://user:pass@host:3306/db (1.1)')
    .option('--dry-run', 'compare and report what would be copied; write nothing', false)
    .addOption(new Option('--on-conflict <how>', 'rows already here with other data: stop (report, write nothing), skip (keep this server\'s), overwrite (take the source\'s)')
      .choices([ 'stop', 'skip', 'overwrite' ]).default('stop'))
    .exitOverride()
    .configureOutput({ writeOut: s => io.out.write(s), writeErr: s => io.err.write(s) });
  program.parse(argv, { from: 'user' });
  const o = program.opts<{ dryRun: boolean; onConflict: Resolution }>();
  return { url: program.args[0], dryRun: o.dryRun, resolution: o.onConflict };
}

async function openSource(url: string): Promise<SqlSource> {
  let protocol: string;
  try {
    protocol = new URL(url).protocol;
  } catch {
    throw new SourceError('the source must be a URL: postgresql://user:pass@host:5432/db (ClassworksKV 1.3) or mysql://user:pass@host:3306/db (1.1)');
  }
  if (protocol === 'postgres:' || protocol === 'postgresql:') return PostgresSource.open(url);
  if (protocol === 'mysql:' || protocol === 'mariadb:') return MysqlSource.open(url);
  throw new SourceError(`unsupported source ${redactUrl(url)}: use postgresql://… (ClassworksKV 1.3) or mysql://… (1.1)`);
}

export async function main(argv: string[], io: Io): Promise<number> {
  let args: ReturnType<typeof parseArgs>;
  try {
    args = parseArgs(argv, io);
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 1;
    throw err;
  }
  const fail = (message: string) => {
    io.err.write(`import: ${message.replace(/\s*\n\s*/g, ' ')}\n`);
    return 1;
  };

  let settings;
  try {
    settings = loadSettings(io.env, io.cwd);
  } catch (err) {
    if (err instanceof ConfigError) return fail(err.message);
    throw err;
  }

  let source: SqlSource | undefined;
  let target: Target | undefined;
  let notifier: ClusterNotifier | undefined;
  const progress = new Progress(io);
  try {
    source = await openSource(args.url);
    await source.check();

    target = new Target(settings);
    let migrations: string[];
    try {
      migrations = await target.connect(!args.dryRun);
    } catch (err) {
      return fail(`cannot use the target database ${target.describe()}: ${(err as Error).message}`);
    }
    if (!args.dryRun && settings.redisUrl) {
      notifier = new ClusterNotifier({ ...settings, redisUrl: settings.redisUrl });
      try {
        await notifier.connect();
      } catch (err) {
        return fail(`cannot reach Redis (REDIS_URL) to tell the running cluster: ${(err as Error).message}`);
      }
    }

    io.out.write(`ClassworksKV import${args.dryRun ? ' (dry run: nothing is written)' : ''}\n`);
    io.out.write(`  source: ${redactUrl(args.url)} (ClassworksKV ${source.label})\n`);
    io.out.write(`  target: ${target.describe()}\n`);
    io.out.write(`  migrations ${args.dryRun ? 'pending (applied before a real import)' : 'applied'}: ${migrations.length ? migrations.join(', ') : 'none'}\n`);

    const counts: SourceCounts = await source.counts();
    const orphans = await source.orphans();
    let notifyFailed: Error | undefined;
    const importer = new Importer(source, target, {
      resolution: args.resolution,
      bcryptCost: settings.bcryptCost,
      onProgress: (_mode, devices, keys) => progress.update(devices, keys),
      onCommit: notifier ? async (revisions, tokens) => {
        try {
          await notifier!.committed(revisions, tokens);
        } catch (err) {
          notifyFailed = err as Error;
        }
      } : undefined,
    });
    const run = async (mode: Mode) => {
      progress.start(mode, counts.keys - orphans.keys);
      try {
        return await importer.pass(mode);
      } finally {
        progress.stop();
      }
    };

    const plan = await run('plan');
    io.out.write(`\n${args.dryRun ? 'would copy' : 'plan'}:\n`);
    table(io.out, [ 'table', 'source', 'new', 'same', 'conflict', 'not looked at' ], TABLES.map(t => {
      const x = plan.tally[t];
      const src = t === 'configs' && counts.configs === null ? `${x.source} (1.1: default)` : x.source;
      return [ LABEL[t], src, x.new, x.same, x.conflict, x.skipped ];
    }));
    if (orphans.installs + orphans.configs + orphans.keys > 0) {
      io.out.write(`  not copied, their device does not exist in the source: ${orphans.installs} tokens, ${orphans.configs} auto-auth configs, ${orphans.keys} keys\n`);
    }
    printConflicts(io, plan);
    if (plan.conflictCount > 0 && args.resolution === 'stop') {
      io.out.write(`\n${args.dryRun ? 'A real import would stop here' : 'Stopped: nothing was written'}: ${plan.conflictCount} conflict(s). ` +
        'Re-run with --on-conflict=skip (keep this server\'s rows) or --on-conflict=overwrite (replace them with the source\'s).\n');
      return 2;
    }
    if (args.dryRun) {
      io.out.write('\nDry run: nothing was written.\n');
      return 0;
    }

    const started = Date.now();
    const written = await run('write');
    const seconds = (Date.now() - started) / 1000;
    io.out.write(`\ncopied in ${seconds.toFixed(1)} s: ${TABLES.map(t => `${written.tally[t].copied} ${LABEL[t]}`).join(', ')}` +
      `${args.resolution !== 'stop' && written.conflictCount ? ` (${written.conflictCount} conflict(s) ${args.resolution === 'skip' ? 'skipped' : 'overwritten'})` : ''}\n`);

    const check = await run('verify');
    const here = await target.tableCounts();
    io.out.write('\nverification (every row and every value compared with the source):\n');
    table(io.out, [ 'table', 'source', 'identical', 'different', 'missing', 'skipped', 'rows here' ], TABLES.map(t => {
      const x = check.tally[t];
      return [ LABEL[t], x.source, x.same, x.conflict, x.new, x.skipped, here[t] ];
    }));
    printConflicts(io, check);
    const ok = TABLES.every(t => check.tally[t].conflict === 0 && check.tally[t].new === 0);
    if (!ok) {
      io.out.write('\nVerification FAILED: rows differ from the source (listed above).\n');
      return 3;
    }
    io.out.write('\nVerification OK.\n');
    if (notifyFailed) {
      io.err.write(`import: imported and verified, but Redis could not be told (${notifyFailed.message}): restart the workers so no cached value is served\n`);
      return 4;
    }
    return 0;
  } catch (err) {
    if (err instanceof SourceError) return fail(err.message);
    return fail(`${(err as Error).message}`);
  } finally {
    progress.stop();
    await source?.close();
    await target?.close().catch(() => undefined);
    await notifier?.close();
  }
}
