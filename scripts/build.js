'use strict';

/**
 * Compiles the TypeScript sources into dist/ (never beside the .ts files: egg
 * would load a stale .js first) and makes dist/ a runnable egg base directory.
 */
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');

const root = path.join(__dirname, '..');
const dist = path.join(root, 'dist');
const run = (bin, args) => execFileSync(process.execPath, [ require.resolve(bin), ...args ], { cwd: root, stdio: 'inherit' });

fs.rmSync(dist, { recursive: true, force: true });
run('egg-ts-helper/dist/bin', []);
run('typescript/bin/tsc', [ '-p', 'tsconfig.build.json' ]);

fs.cpSync(path.join(root, 'database'), path.join(dist, 'database'), { recursive: true });
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
pkg.egg = { ...pkg.egg, typescript: false, declarations: false };
delete pkg.scripts;
fs.writeFileSync(path.join(dist, 'package.json'), JSON.stringify(pkg, null, 2) + '\n');
fs.symlinkSync(path.join('..', 'node_modules'), path.join(dist, 'node_modules'), 'dir');
console.log('[build] dist/ ready');
