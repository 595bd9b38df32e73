'use strict';

/** `npm stop`: stops the instance started by `npm start` on this PORT (by its title). */
const path = require('path');
const { spawnSync } = require('child_process');

const port = process.env.PORT || '3000';
const title = process.env.APP_TITLE || `classworks-kv-${port}`;
const r = spawnSync(process.execPath, [ require.resolve('egg-scripts/bin/egg-scripts.js'), 'stop', `--title=${title}` ], {
  cwd: path.join(__dirname, '..'),
  stdio: 'inherit',
});
process.exit(r.status ?? 1);
