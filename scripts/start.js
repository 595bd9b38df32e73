'use strict';

/**
 * `npm start`: builds dist/ (prestart) and starts the cluster with egg-scripts in
 * sticky mode, so every Socket.IO client keeps talking to one worker.
 *
 *   npm start                      foreground, PORT (3000) and WORKERS from the environment
 *   npm start -- --daemon          background; stop with `npm stop`
 *
 * Without REDIS_URL the server runs embedded (in-process rooms and state), which
 * only works with one worker, so WORKERS is forced to 1 there.
 * The process title is `classworks-kv-<PORT>` (override: APP_TITLE) so that
 * `npm stop` stops this instance only.
 */
const path = require('path');
const { spawn } = require('child_process');

const root = path.join(__dirname, '..');
const { loadSettings, ConfigError } = require(path.join(root, 'dist/config/env.js'));

let settings;
try {
  // As the workers will see it: egg-scripts sets NODE_ENV=production (so egg runs as `prod`
  // unless EGG_SERVER_ENV says otherwise), and production refuses unsafe defaults (JWT_SECRET).
  settings = loadSettings({ ...process.env, NODE_ENV: 'production' });
} catch (err) {
  if (err instanceof ConfigError) {
    console.error(`[start] configuration error: ${err.message}`);
    process.exit(2);
  }
  throw err;
}

let workers = settings.workers;
if (!settings.redisUrl && workers > 1) {
  console.error('[start] WORKERS > 1 needs REDIS_URL (rooms, presence and rate limits are shared through Redis); starting 1 worker');
  workers = 1;
}

const title = process.env.APP_TITLE || `classworks-kv-${settings.port}`;
const args = [
  require.resolve('egg-scripts/bin/egg-scripts.js'),
  'start',
  '--sticky',
  `--workers=${workers}`,
  `--port=${settings.port}`,
  `--title=${title}`,
  ...process.argv.slice(2),
  path.join(root, 'dist'),
];
console.log(`[start] ${settings.database.dialect} database, ${settings.redisUrl ? 'Redis' : 'in-process'} state, ${workers} worker(s), port ${settings.port}, title ${title}`);
const child = spawn(process.execPath, args, { cwd: root, stdio: 'inherit' });
for (const sig of [ 'SIGINT', 'SIGTERM' ]) process.on(sig, () => child.kill(sig));
child.on('exit', code => process.exit(code ?? 1));
