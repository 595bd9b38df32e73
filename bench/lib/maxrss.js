'use strict';

// Preloaded with `node -r` by bench/import.js: prints the process's peak resident set size on exit.
process.on('exit', () => {
  require('fs').writeSync(2, `maxrss-kb ${process.resourceUsage().maxRSS}\n`);
});
