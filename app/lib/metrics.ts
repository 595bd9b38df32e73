import crypto from 'node:crypto';
import { AggregatorRegistry, Counter, Gauge, Histogram, MetricObjectWithValues, MetricValue, Registry, register as globalRegister } from 'prom-client';
import type { SharedState } from './state/types';

/**
 * Every metric of `GET /metrics` (CONTRACT §6.5), and how the whole cluster's figures
 * are combined whichever worker answers.
 *
 * Two kinds of figures:
 * - per worker, summed over the cluster: HTTP requests and latencies, sockets connected,
 *   events delivered. Each worker keeps them in its own prom-client registry and stores a
 *   snapshot (`getMetricsAsJSON()` plus the hashes of its joined tokens) in shared state
 *   every presence heartbeat; the snapshot expires with the worker's presence TTL, so a
 *   dead worker drops out. The answering worker takes a fresh snapshot of its own, reads
 *   the others' and sums them with prom-client's `AggregatorRegistry.aggregate()` (egg's
 *   master offers no `cluster` messaging for prom-client's own aggregator).
 * - cluster-wide, computed once by the answering worker, never summed: online tokens (the
 *   union of the workers' token hashes), registered devices, keys, database/Redis health
 *   (`ClusterFigures`, gathered by app/service/metrics.ts).
 */

/** Route label of requests no route matched (never the raw URL: it may carry tokens or keys). */
export const UNMATCHED_ROUTE = 'unmatched';

const METHODS = new Set([ 'GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS' ]);
/** Event types that keep their name as a label; every relayed (client-chosen) type counts as `relayed`. */
const SERVER_EVENTS = new Set([ 'kv-key-changed' ]);

/** Cluster-wide figures the answering worker gathered; `undefined` = could not be read (not exported). */
export interface ClusterFigures {
  registeredDevices?: number;
  keys?: number;
  databaseUp: boolean;
  /** `undefined` when Redis is not configured (then `classworks_redis_up` is not exported). */
  redisUp?: boolean;
}

/** The database's figures (app/service/metrics.ts counts them, cached per worker). */
export interface DatabaseCounts {
  registeredDevices: number;
  keys: number;
}

interface Snapshot {
  v: 1;
  metrics: MetricJson[];
  /** Hashes of the tokens with at least one joined socket on that worker. */
  tokens: string[];
}

export interface MetricsSources {
  state: SharedState;
  /** Sockets connected to this worker. */
  sockets(): number;
  /** Tokens with at least one socket joined on this worker. */
  joinedTokens(): Iterable<string>;
  /** How often the snapshot is renewed in shared state (the presence heartbeat). */
  snapshotEveryMs: number;
  warn(message: string, ...args: unknown[]): void;
}

interface HttpSeries {
  duration: { observe(seconds: number): void };
  byStatus: Map<number, { inc(): void }>;
}

type MetricJson = MetricObjectWithValues<MetricValue<string>>;

/** A cluster-wide gauge as `getMetricsAsJSON()` would give it ('first': exported as computed, never summed). */
function gauge(name: string, help: string, value: number): MetricJson {
  return { name, help, type: 'gauge', aggregator: 'first', values: [{ value, labels: {} }] } as unknown as MetricJson;
}

export class Metrics {
  /** This worker's own figures (not prom-client's global registry). */
  readonly registry = new Registry();
  private readonly httpRequests: Counter<'method' | 'route' | 'status'>;
  private readonly httpDuration: Histogram<'method' | 'route'>;
  private readonly events: Counter<'type'>;
  /** route → method → label children, so a request costs prom-client's inc/observe only. */
  private readonly http = new Map<string, Map<string, HttpSeries>>();
  private readonly eventChildren = new Map<string, { inc(n?: number): void }>();
  /** token → its hash (tokens are credentials: only hashes leave the process). */
  private tokenHashes = new Map<string, string>();
  private timer?: NodeJS.Timeout;
  private lastWarning = 0;

  constructor(private readonly sources: MetricsSources) {
    const registers = [ this.registry ];
    this.httpRequests = new Counter({
      name: 'classworks_http_requests_total',
      help: 'HTTP requests answered, by method, route pattern and status',
      labelNames: [ 'method', 'route', 'status' ],
      registers,
    });
    this.httpDuration = new Histogram({
      name: 'classworks_http_request_duration_seconds',
      help: 'Time to answer HTTP requests, by method and route pattern',
      labelNames: [ 'method', 'route' ],
      buckets: [ 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 ],
      registers,
    });
    new Gauge({
      name: 'classworks_sockets_connected',
      help: 'Socket.IO connections open',
      registers,
      collect() {
        this.set(sources.sockets());
      },
    });
    this.events = new Counter({
      name: 'classworks_events_delivered_total',
      help: 'Events sent to device rooms (one per room): kv-key-changed, and relayed send-event events',
      labelNames: [ 'type' ],
      registers,
    });
    // Present from the first scrape on, at 0.
    this.events.labels('kv-key-changed').inc(0);
  }

  /** Counts one answered HTTP request (app/middleware/httpMetrics.ts). `route`: the router's pattern. */
  observeHttp(method: string, route: string | undefined, status: number, seconds: number) {
    const m = METHODS.has(method) ? method : 'OTHER';
    const r = route ?? UNMATCHED_ROUTE;
    let byMethod = this.http.get(r);
    if (!byMethod) {
      byMethod = new Map();
      this.http.set(r, byMethod);
    }
    let series = byMethod.get(m);
    if (!series) {
      series = { duration: this.httpDuration.labels(m, r), byStatus: new Map() };
      byMethod.set(m, series);
    }
    let counter = series.byStatus.get(status);
    if (!counter) {
      counter = this.httpRequests.labels(m, r, String(status));
      series.byStatus.set(status, counter);
    }
    counter.inc();
    series.duration.observe(seconds);
  }

  /**
   * Counts events sent to device rooms: `kv-key-changed`, or a relayed `send-event` type
   * (counted as `relayed`: client-chosen names never become labels). `rooms`: how many
   * device rooms the event went to.
   */
  eventDelivered(type: string, rooms = 1) {
    const label = SERVER_EVENTS.has(type) ? type : 'relayed';
    let child = this.eventChildren.get(label);
    if (!child) {
      child = this.events.labels(label);
      this.eventChildren.set(label, child);
    }
    child.inc(rooms);
  }

  private async snapshot(): Promise<Snapshot> {
    const hashes = new Map<string, string>();
    for (const token of this.sources.joinedTokens()) {
      hashes.set(token, this.tokenHashes.get(token) ?? crypto.createHash('sha256').update(token).digest('base64url').slice(0, 16));
    }
    this.tokenHashes = hashes;
    return { v: 1, metrics: await this.registry.getMetricsAsJSON(), tokens: [ ...hashes.values() ] };
  }

  private async publish(): Promise<Snapshot> {
    const own = await this.snapshot();
    await this.sources.state.metricsSave(JSON.stringify(own));
    return own;
  }

  /** Renews this worker's snapshot every heartbeat (only useful with several workers: Redis). */
  start() {
    if (this.sources.state.kind !== 'redis') return;
    const tick = () => this.publish().catch(err => this.warnSometimes('[metrics] storing the snapshot failed: %s', (err as Error).message));
    tick();
    this.timer = setInterval(tick, this.sources.snapshotEveryMs);
    this.timer.unref();
  }

  close() {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private warnSometimes(message: string, ...args: unknown[]) {
    if (Date.now() - this.lastWarning < 60000) return;
    this.lastWarning = Date.now();
    this.sources.warn(message, ...args);
  }

  /**
   * The whole cluster's figures in Prometheus text format: this worker's fresh snapshot
   * plus every other live worker's latest, summed, and the cluster-wide gauges. With
   * shared state unreachable, this worker's figures alone (`classworks_metrics_workers` 1).
   */
  async render(figures: ClusterFigures): Promise<string> {
    const own = await this.snapshot();
    const [ saved, others ] = await Promise.allSettled([
      this.sources.state.metricsSave(JSON.stringify(own)),
      this.sources.state.metricsOthers(),
    ]);
    if (saved.status === 'rejected') this.warnSometimes('[metrics] storing the snapshot failed: %s', (saved.reason as Error).message);
    const snapshots = [ own ];
    if (others.status === 'fulfilled') {
      for (const raw of others.value) {
        try {
          const s = JSON.parse(raw) as Snapshot;
          if (s.v === 1 && Array.isArray(s.metrics) && Array.isArray(s.tokens)) snapshots.push(s);
        } catch {
          // A snapshot of another version or a torn write: left out.
        }
      }
    }
    const online = new Set<string>();
    for (const s of snapshots) for (const t of s.tokens) online.add(t);

    const cluster = [
      gauge('classworks_online_devices_total', 'Distinct tokens with at least one joined socket, whole cluster', online.size),
      gauge('classworks_metrics_workers', 'Workers whose figures this answer combines', snapshots.length),
      gauge('classworks_database_up', 'Whether the database answered a probe during this scrape (1) or not (0)', figures.databaseUp ? 1 : 0),
    ];
    if (figures.registeredDevices !== undefined) {
      cluster.push(gauge('classworks_registered_devices_total', 'Devices registered', figures.registeredDevices));
    }
    if (figures.keys !== undefined) cluster.push(gauge('classworks_keys_total', 'KV keys stored, all devices', figures.keys));
    if (figures.redisUp !== undefined) {
      cluster.push(gauge('classworks_redis_up', 'Whether Redis answered a probe during this scrape (1) or not (0)', figures.redisUp ? 1 : 0));
    }
    return AggregatorRegistry.aggregate([ ...snapshots.map(s => s.metrics), cluster ]).metrics();
  }

  /** The content type of the text format. */
  static readonly contentType = globalRegister.contentType;
}
