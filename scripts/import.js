'use strict';

/**
 * `npm run import -- <source-url> [--dry-run] [--on-conflict=stop|skip|overwrite]`
 * Runs app/command/import/cli.ts: with NODE_ENV=production (or without ts-node) from the
 * build (`npm run build` → dist/), else from the TypeScript sources through ts-node.
 */
const fs = require('fs');
const path = require('path');

const root = path.join(__dirname, '..');
let cli;
let tsNode = false;
if (process.env.NODE_ENV !== 'production') {
  try {
    require.resolve('ts-node');
    tsNode = fs.existsSync(path.join(root, 'app/command/import/cli.ts'));
  } catch {
    tsNode = false;
  }
}
if (!tsNode && !fs.existsSync(path.join(root, 'dist/app/command/import/cli.js'))) {
  process.stderr.write('import: dist/ is missing: run `npm run build` first\n');
  process.exit(1);
}
if (tsNode) {
  require('ts-node').register({ transpileOnly: true, project: path.join(root, 'tsconfig.json') });
  cli = require('../app/command/import/cli.ts');
} else {
  cli = require('../dist/app/command/import/cli.js');
}

cli.main(process.argv.slice(2), { out: process.stdout, err: process.stderr, env: process.env, cwd: process.cwd() })
  .then(code => { process.exitCode = code; })
  .catch(err => {
    process.stderr.write(`import: ${err && err.message ? err.message : err}\n`);
    process.exitCode = 1;
  });
