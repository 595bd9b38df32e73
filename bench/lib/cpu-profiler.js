'use strict';

/**
 * Preloaded into the server's processes by bench/profile.js (NODE_OPTIONS=--require;
 * `--cpu-prof` is not allowed in NODE_OPTIONS). In an app worker, the first
 * SIGUSR2 starts the V8 CPU profiler, the second one writes
 * <CKV_PROFILE_DIR>/worker-<pid>.cpuprofile. Other processes are left alone.
 */
const fs = require('fs');
const path = require('path');
const inspector = require('inspector');

const dir = process.env.CKV_PROFILE_DIR;
if (dir && /app_worker/.test(process.argv[1] || '')) {
  const session = new inspector.Session();
  session.connect();
  let running = false;
  process.on('SIGUSR2', () => {
    if (!running) {
      running = true;
      session.post('Profiler.enable', () => session.post('Profiler.setSamplingInterval', { interval: 500 }, () => session.post('Profiler.start')));
      return;
    }
    running = false;
    session.post('Profiler.stop', (err, result) => {
      if (!err) fs.writeFileSync(path.join(dir, `worker-${process.pid}.cpuprofile`), JSON.stringify(result.profile));
    });
  });
}
