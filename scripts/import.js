'use strict';

/**
 * `npm run import -- <source-url> [--dry-run] [--on-conflict=stop|skip|overwrite]`
 * Runs app/command/import/cli.ts: from the TypeScript sources through ts-node in a
 * checkout with dev dependencies, else from the build (`npm run build` → dist/).
 */
const fs = require('fs');
const path = require('path');

const root = path.join(__dirname, '..');
let cli;
let tsNode = false;
try {
  require.resolve('ts-node');
  tsNode = fs.existsSync(path.join(root, 'app/command/import/cli.ts'));
} catch {
  tsNode = false;
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
