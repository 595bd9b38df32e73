'use strict';

/**
 * Preloaded into the server's processes by bench/run.js `memory` (NODE_OPTIONS=--require),
 * as bench/lib/cpu-profiler.js is by bench/profile.js; never part of production. In an app
 * worker, SIGUSR2 reads <CKV_HEAP_DIR>/request.json ({ label, snapshot }), forces a full
 * garbage collection through an inspector session (HeapProfiler.collectGarbage, twice), and
 * writes <label>-<pid>.json with process.memoryUsage() and v8.getHeapStatistics() taken
 * after it; with `snapshot: true` it first writes <label>-<pid>.heapsnapshot
 * (HeapProfiler.takeHeapSnapshot). The .json file is written last: its presence means done.
 * Other processes are left alone.
 */
const fs = require('fs');
const path = require('path');
const v8 = require('v8');
const inspector = require('inspector');

const dir = process.env.CKV_HEAP_DIR;
if (dir && /app_worker/.test(process.argv[1] || '')) {
  const session = new inspector.Session();
  session.connect();
  const post = (method, params) => new Promise((resolve, reject) =>
    session.post(method, params || {}, (err, res) => (err ? reject(err) : resolve(res))));

  async function snapshot(file) {
    const fd = fs.openSync(file, 'w');
    const onChunk = m => fs.writeSync(fd, m.params.chunk);
    session.on('HeapProfiler.addHeapSnapshotChunk', onChunk);
    try {
      await post('HeapProfiler.takeHeapSnapshot', { reportProgress: false });
    } finally {
      session.removeListener('HeapProfiler.addHeapSnapshotChunk', onChunk);
      fs.closeSync(fd);
    }
  }

  let busy = false;
  process.on('SIGUSR2', () => {
    if (busy) return;
    busy = true;
    (async () => {
      const req = JSON.parse(fs.readFileSync(path.join(dir, 'request.json'), 'utf8'));
      const base = path.join(dir, `${req.label}-${process.pid}`);
      await post('HeapProfiler.enable');
      await post('HeapProfiler.collectGarbage');
      await post('HeapProfiler.collectGarbage');
      if (req.snapshot) await snapshot(`${base}.heapsnapshot`);
      const out = { pid: process.pid, memoryUsage: process.memoryUsage(), heap: v8.getHeapStatistics() };
      fs.writeFileSync(`${base}.json.tmp`, JSON.stringify(out));
      fs.renameSync(`${base}.json.tmp`, `${base}.json`);
    })().catch(err => {
      fs.writeFileSync(path.join(dir, `error-${process.pid}.txt`), String(err && err.stack || err));
    }).finally(() => {
      busy = false;
    });
  });
}
