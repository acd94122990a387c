/**
 * The fd table (src/kernel/fdtable.ts): lowest-free allocation through the open-fds bitmap and its full-word
 * summary, checked against a plain linear scan over a seeded random run, and from a process: lowest free fd after
 * closes, dup2 far beyond the table, EMFILE exactly at RLIMIT_NOFILE.
 */
import test from 'ava';
import { FilesStruct } from '../src/kernel/fdtable.js';
import type { File } from '../src/kernel/file.js';
import { chooseSeed, Prng } from '../src/shm/prng.js';
import { withMachine, spawnSock } from './helpers/sim.js';

/** A file with no operations: the table only stores it (and asks its ops for flush on removal). */
const FILE = { ops: { kind: 'test' } } as unknown as File;

/** The reference: the lowest fd ≥ start not in `open`, below `limit`, or -1. */
function linear(open: Set<number>, start: number, limit: number): number {
  for (let fd = start; fd < limit; fd++) if (!open.has(fd)) return fd;
  return -1;
}

test('findFree agrees with a linear scan over a seeded random run of installs, closes and dup2s', (t) => {
  const seed = chooseSeed();
  t.log(`seed ${seed} (replay with DMABUF_SIM_SEED=${seed})`);
  const rng = new Prng(seed);
  const files = new FilesStruct();
  const open = new Set<number>();
  // Dense runs (whole words and whole summary words fill up) mixed with holes and far dup2 targets.
  for (let step = 0; step < 20000; step++) {
    const op = rng.below(10);
    const limit = rng.below(8) === 0 ? 1 + rng.below(5000) : Infinity;
    const start = rng.below(4) === 0 ? rng.below(3000) : 0;
    const want = linear(open, start, limit === Infinity ? 1 << 30 : limit);
    const got = files.findFree(start, limit);
    if (got !== want) t.fail(`seed ${seed} step ${step}: findFree(${start}, ${limit}) = ${got}, expected ${want}`);
    if (op < 6 && got >= 0) {
      files.install(got, { file: FILE, cloexec: false, origin: null });
      open.add(got);
    } else if (op < 9 && open.size > 0) {
      const fd = [...open][rng.below(open.size)]!;
      t.truthy(files.remove(fd), `seed ${seed}: remove(${fd})`);
      open.delete(fd);
    } else {
      const fd = rng.below(4000);
      if (!open.has(fd)) {
        files.install(fd, { file: FILE, cloexec: false, origin: null });
        open.add(fd);
      }
    }
    if (files.count !== open.size) t.fail(`seed ${seed} step ${step}: count ${files.count}, expected ${open.size}`);
  }
  t.pass();
});

test('a full table: 70,000 fds fill whole summary words; the lowest hole is found after each close', (t) => {
  const files = new FilesStruct();
  for (let fd = 0; fd < 70_000; fd++) files.install(fd, { file: FILE, cloexec: false, origin: null });
  t.is(files.findFree(0, Infinity), 70_000);
  t.is(files.findFree(0, 70_000), -1, 'EMFILE exactly at the limit');
  const holes: number[] = [];
  for (const hole of [69_999, 40_000, 1023, 1024, 31, 0]) {
    files.remove(hole);
    holes.push(hole);
    t.is(files.findFree(0, Infinity), Math.min(...holes), `after closing ${hole}: the lowest hole is the lowest free fd`);
    const above = holes.filter((h) => h > hole).sort((a, b) => a - b)[0] ?? 70_000;
    t.is(files.findFree(hole + 1, Infinity), above, `the next hole above ${hole}`);
  }
});

test.serial('from a process: lowest free fd after closes, dup2 far beyond the table, F_DUPFD from a minimum, EMFILE at the limit', async (t) => {
  await withMachine(t, async (m) => {
    const p = await spawnSock(m, 'fdtab', { nofile: 5000 });
    const fds: number[] = [];
    for (let i = 0; i < 100; i++) fds.push(await p.ok<number>('dup', 0));
    t.deepEqual(fds, Array.from({ length: 100 }, (_, i) => 3 + i), 'dups take 3, 4, 5, ... in order');
    await p.ok('close', 50);
    await p.ok('close', 10);
    t.is(await p.ok('dup', 0), 10, 'the lowest hole first');
    t.is(await p.ok('dup', 0), 50);
    t.is(await p.ok('dup', 0), 103, 'then past the end');
    t.is(await p.ok('dup2', 0, 4999), 4999, 'dup2 to the last fd the limit allows grows the table');
    t.is(await p.err('dup2', 0, 5000), 'EBADF', 'dup2 at the limit: EBADF');
    t.is(await p.ok('dup', 0), 104, 'dup after a far dup2 still takes the lowest free fd');
    t.is(await p.ok('fcntl', 0, 0 /* F_DUPFD */, 4000), 4000, 'F_DUPFD from a minimum');
    t.is(await p.ok('fcntl', 0, 0, 4000), 4001);
    await p.ok('setrlimit', 7 /* RLIMIT_NOFILE */, { cur: 200, max: 5000 });
    const more: number[] = [];
    for (;;) {
      const r = await p.r<number>('x', 'dup', 0);
      if ('err' in r) {
        t.is(r.err, 'EMFILE');
        break;
      }
      more.push(r.ok);
    }
    t.is(more.at(-1), 199, 'the last fd below the soft limit is the last one handed out');
    t.is(more.length, 199 - 105 + 1);
    await p.ok('close', 150);
    t.is(await p.ok('dup', 0), 150, 'a close below the limit makes room again');
  });
});
