#!/usr/bin/env node
// Runs the ava suite and ends with one plain "ava: N passed, N failed" line that CI reads; exits with ava's status.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const avaCli = fileURLToPath(new URL('../node_modules/ava/entrypoints/cli.mjs', import.meta.url));
const child = spawn(process.execPath, [avaCli, ...process.argv.slice(2)], { stdio: ['ignore', 'pipe', 'pipe'] });
let passed = 0;
let ticks = 0;
let failed = 0;
let tail = '';
const scan = (chunk) => {
  const text = tail + chunk.toString();
  const lines = text.split('\n');
  tail = lines.pop() ?? '';
  for (const line of lines) {
    // eslint-disable-next-line no-control-regex
    const plain = line.replace(/\x1b\[[0-9;]*m/g, '');
    let m;
    // ava prints "N tests passed" only when nothing failed; count the ✔ lines as well.
    if (/^\s*✔ /.test(plain)) ticks++;
    if ((m = /^\s*(\d+) tests? passed/.exec(plain))) passed = Number(m[1]);
    if ((m = /^\s*(\d+) (?:tests? failed|uncaught exceptions?|unhandled rejections?|tests? remained pending|known failures?)/.exec(plain))) failed += Number(m[1]);
  }
};
child.stdout.on('data', (c) => { process.stdout.write(c); scan(c); });
child.stderr.on('data', (c) => { process.stderr.write(c); scan(c); });
child.on('close', (code) => {
  scan('\n');
  passed = Math.max(passed, ticks);
  if (code !== 0 && failed === 0) failed = 1;
  process.stdout.write(`\nava: ${passed} passed, ${failed} failed\n`);
  process.exit(code ?? 1);
});
