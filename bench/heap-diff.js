#!/usr/bin/env node
'use strict';

/**
 * What grew between two V8 heap snapshots (.heapsnapshot, as bench/lib/heap-probe.js
 * writes them with BENCH_MEMORY_SNAPSHOT=1):
 *
 *   node bench/heap-diff.js <before.heapsnapshot> <after.heapsnapshot> [sockets] [--top N] [--retainers Name]...
 *
 * Groups the nodes of each snapshot by constructor (objects), or by kind (strings,
 * arrays, closures by function name, system nodes by name) and prints the groups whose
 * self size grew most: count and bytes, and per socket when `sockets` is given.
 * `--retainers Name` also lists, for the nodes of group Name in the second snapshot,
 * the paths (3 levels of first retainers) that hold them, by bytes grown from the first snapshot. Self sizes only: a retained size
 * needs the dominator tree, which DevTools computes (open the files there).
 */
const fs = require('fs');

const args = process.argv.slice(2);
const files = [];
let sockets = 0;
let top = 40;
const retainers = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--top') top = Number(args[++i]);
  else if (args[i] === '--retainers') retainers.push(args[++i]);
  else if (/^\d+$/.test(args[i])) sockets = Number(args[i]);
  else files.push(args[i]);
}
if (files.length !== 2) {
  console.error('usage: node bench/heap-diff.js <before.heapsnapshot> <after.heapsnapshot> [sockets] [--top N] [--retainers Name]');
  process.exit(2);
}

function load(file) {
  const snap = JSON.parse(fs.readFileSync(file, 'utf8'));
  const meta = snap.snapshot.meta;
  const nf = meta.node_fields;
  const ef = meta.edge_fields;
  const nodeTypes = meta.node_types[0];
  const edgeTypes = meta.edge_types[0];
  const N = nf.length;
  const E = ef.length;
  const iType = nf.indexOf('type');
  const iName = nf.indexOf('name');
  const iSelf = nf.indexOf('self_size');
  const iEdges = nf.indexOf('edge_count');
  const eType = ef.indexOf('type');
  const eName = ef.indexOf('name_or_index');
  const eTo = ef.indexOf('to_node');
  const { nodes, edges, strings } = snap;
  const count = nodes.length / N;
  const group = new Array(count);
  for (let n = 0; n < count; n++) {
    const type = nodeTypes[nodes[n * N + iType]];
    const name = strings[nodes[n * N + iName]];
    let g;
    if (type === 'object' || type === 'native' || type === 'hidden' || type === 'synthetic') g = name;
    else if (type === 'closure') g = `(closure) ${name || '(anonymous)'}`;
    else if (type === 'string' || type === 'concatenated string' || type === 'sliced string') g = '(string)';
    else if (type === 'array') g = `(array) ${name}`;
    else g = `(${type})`;
    group[n] = g;
  }
  return { snap, nodes, edges, strings, N, E, iSelf, iEdges, eType, eName, eTo, edgeTypes, count, group };
}

function totals(h) {
  const byGroup = new Map();
  for (let n = 0; n < h.count; n++) {
    const g = h.group[n];
    let t = byGroup.get(g);
    if (!t) byGroup.set(g, t = { count: 0, bytes: 0 });
    t.count++;
    t.bytes += h.nodes[n * h.N + h.iSelf];
  }
  return byGroup;
}

/** First strong retainer of every node (node index -> { from, label }), computed once. */
function firstRetainers(h) {
  if (h.parent) return h.parent;
  const from = new Int32Array(h.count).fill(-1);
  const label = new Array(h.count);
  let edgeAt = 0;
  for (let n = 0; n < h.count; n++) {
    const edgeCount = h.nodes[n * h.N + h.iEdges];
    for (let e = 0; e < edgeCount; e++, edgeAt += h.E) {
      const to = h.edges[edgeAt + h.eTo] / h.N;
      if (from[to] !== -1) continue;
      const type = h.edgeTypes[h.edges[edgeAt + h.eType]];
      if (type === 'weak' || type === 'shortcut') continue;
      from[to] = n;
      label[to] = type === 'element' || type === 'hidden' ? `[${type === 'element' ? h.edges[edgeAt + h.eName] : 'hidden'}]` : h.strings[h.edges[edgeAt + h.eName]];
    }
  }
  h.parent = { from, label };
  return h.parent;
}

/** Nodes of group `name` by the path of (first) retainers above them, 3 levels: count and self bytes. */
function retainersOf(h, name) {
  const { from, label } = firstRetainers(h);
  const out = new Map();
  for (let n = 0; n < h.count; n++) {
    if (h.group[n] !== name) continue;
    const path = [];
    let at = n;
    for (let depth = 0; depth < 3 && from[at] !== -1; depth++) {
      const l = String(label[at]).replace(/^\[\d+\]$/, '[i]');
      path.unshift(`${h.group[from[at]]}.${l}`);
      at = from[at];
    }
    const key = path.join(' > ');
    const t = out.get(key) || { count: 0, bytes: 0 };
    t.count++;
    t.bytes += h.nodes[n * h.N + h.iSelf];
    out.set(key, t);
  }
  return out;
}

/** retainersOf(b) − retainersOf(a): the paths that grew, by bytes. */
function retainersGrown(a, b, name) {
  const ra = retainersOf(a, name);
  const out = [];
  for (const [ k, t ] of retainersOf(b, name)) {
    const o = ra.get(k) || { count: 0, bytes: 0 };
    out.push([ k, { count: t.count - o.count, bytes: t.bytes - o.bytes } ]);
  }
  return out.sort((x, y) => y[1].bytes - x[1].bytes).slice(0, 15);
}

const a = load(files[0]);
const ta = totals(a);
const b = load(files[1]);
const tb = totals(b);
const sum = t => [ ...t.values() ].reduce((x, y) => x + y.bytes, 0);
const rows = [];
for (const [ g, t ] of tb) {
  const o = ta.get(g) || { count: 0, bytes: 0 };
  rows.push({ g, dCount: t.count - o.count, dBytes: t.bytes - o.bytes });
}
for (const [ g, o ] of ta) if (!tb.has(g)) rows.push({ g, dCount: -o.count, dBytes: -o.bytes });
rows.sort((x, y) => y.dBytes - x.dBytes);
const d = sum(tb) - sum(ta);
const per = x => (sockets ? `  ${(x / sockets).toFixed(2).padStart(8)}` : '');
console.log(`self size: ${(sum(ta) / 1048576).toFixed(1)} MiB -> ${(sum(tb) / 1048576).toFixed(1)} MiB, ` +
  `+${(d / 1048576).toFixed(2)} MiB${sockets ? `, ${(d / sockets / 1024).toFixed(2)} KiB per socket (${sockets})` : ''}`);
console.log(`${'Δ bytes'.padStart(12)}${sockets ? '  B/socket' : ''}${'Δ count'.padStart(10)}${sockets ? '  n/socket' : ''}  group`);
for (const r of rows.slice(0, top)) {
  console.log(`${String(r.dBytes).padStart(12)}${per(r.dBytes)}${String(r.dCount).padStart(10)}${per(r.dCount)}  ${r.g}`);
}
for (const name of retainers) {
  console.log(`\ngrown, ${name}, by the path that holds it:`);
  for (const [ k, v ] of retainersGrown(a, b, name)) console.log(`${String(v.bytes).padStart(10)} B ${String(v.count).padStart(7)}  ${k}`);
}
