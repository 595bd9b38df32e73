'use strict';

/**
 * Small helpers shared by the orchestrator (bench/run.js) and its child processes:
 * wall-clock time comparable across processes, statistics, an HTTP JSON client
 * that can bind a loopback source address.
 */
const http = require('http');
const { performance } = require('perf_hooks');

/**
 * Wall-clock milliseconds (sub-millisecond resolution) that mean the same thing in
 * every process of the machine: the processes share the system clock.
 */
const wallNow = () => performance.timeOrigin + performance.now();

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

function median(values) {
  const v = values.filter(x => typeof x === 'number' && !Number.isNaN(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

/** Nearest-rank percentile of a numeric array (typed arrays welcome). */
function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/** Summary of a latency sample, in ms rounded to 0.01. */
function summarize(samples) {
  const sorted = Float64Array.from(samples).sort();
  const r = x => (x === null ? null : Math.round(x * 100) / 100);
  return {
    n: sorted.length,
    p50: r(percentile(sorted, 50)),
    p99: r(percentile(sorted, 99)),
    max: r(sorted.length ? sorted[sorted.length - 1] : null),
    min: r(sorted.length ? sorted[0] : null),
  };
}

/** Source addresses 127.0.0.<from>..127.0.0.<to> (all of 127/8 is local on Linux). */
function loopbackRange(from, to) {
  const out = [];
  for (let i = from; i <= to; i++) out.push(`127.0.0.${i}`);
  return out;
}

/**
 * egg's sticky master sends a connection to worker index (digits of the peer
 * address as a number) mod workers: 127.0.0.2 -> 127002 -> even, 127.0.0.3 -> odd.
 */
function stickyIndex(address, workers) {
  return Number(address.replace(/\D/g, '')) % workers;
}

const keepAliveAgent = new http.Agent({ keepAlive: true, maxSockets: 64 });

/**
 * One HTTP request with a JSON (or raw string) body; resolves with status, parsed
 * body (when JSON) and the send/response wall-clock times.
 */
function request(base, method, path, { body, headers = {}, localAddress, agent = keepAliveAgent } = {}) {
  const url = new URL(path, base);
  const payload = body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const sentAt = wallNow();
    const req = http.request({
      host: url.hostname,
      port: url.port,
      path: url.pathname + url.search,
      method,
      agent: localAddress ? undefined : agent,
      localAddress,
      headers: {
        ...(payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }),
        ...headers,
      },
    }, res => {
      const chunks = [];
      res.on('data', c => chunks.push(c));
      res.on('end', () => {
        const respAt = wallNow();
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        try {
          json = text ? JSON.parse(text) : undefined;
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode, body: json, text, sentAt, respAt });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

/** Runs `fn` over `items` with at most `limit` in flight. */
async function pool(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

module.exports = { wallNow, sleep, median, percentile, summarize, loopbackRange, stickyIndex, request, pool };
