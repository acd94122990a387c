/**
 * Ports of lib/locking-selftest.c's single-lock-type cases, its ww_mutex cases, our own subclass / nest-lock cases
 * and the dma_fence signalling annotation cases, each case's steps spread over three workers and ordered by
 * barriers (the test sends a step, waits for its answer, then sends the next), so every run gives the same
 * verdict. Prints "ok" / "FAILED" per case as locking-selftest does.
 */
import test from 'ava';
import { Worker } from 'node:worker_threads';
import { LockDomain, Mutex, beginExpectLockdepReports, endExpectLockdepReports, expectLockdepReports, lockdepReports, type LockHandle, type LockdepReport } from '../src/locking/index.js';
import { createFenceTable } from '../src/fence/table.js';
import { call, makeLock, type Reply } from './helpers/lock-steps.js';

const fixture = new URL('./fixtures/lockdep-steps.js', import.meta.url);

type Step = [worker: number, op: string, ...args: (string | number | null)[]];
interface Case {
  readonly name: string;
  /** SUCCESS: no report; a kind: at least one report, the first of that kind. */
  readonly expect: 'SUCCESS' | LockdepReport['kind'];
  /** name → "mutex:Class", "spin:Class", "ww:Class" or "wwW:Class" (Wound-Wait). */
  readonly locks: Record<string, string>;
  readonly steps: Step[];
  /** Expected step values where they matter: index → value. */
  readonly values?: Record<number, unknown>;
  readonly fences?: boolean;
  /** Other report kinds the case provokes on purpose besides `expect` (labelled, not printed). */
  readonly alsoExpect?: readonly LockdepReport['kind'][];
}

const M = (c: string): string => `mutex:${c}`;
const ww = { o: 'ww:ww_lockdep', o2: 'ww:ww_lockdep', o3: 'ww:ww_lockdep' };

/** The single-type cases: the kernel's E1/E2/E3 bodies as lock orders, one order per worker. */
function orderCase(name: string, orders: string[][], expect: Case['expect']): Case {
  const locks: Record<string, string> = {};
  const steps: Step[] = [];
  orders.forEach((order, w) => {
    for (const l of order) {
      locks[l] = M(l.replace(/\d+$/, ''));
      steps.push([w % 3, 'lock', l]);
    }
    for (const l of [...order].reverse()) steps.push([w % 3, 'unlock', l]);
  });
  return { name, expect, locks, steps };
}

const cases: Case[] = [
  // ---- single lock type: the deadlock patterns ----
  { name: 'A-A deadlock', expect: 'recursive', locks: { A1: M('A'), A2: M('A') }, steps: [[0, 'lock', 'A1'], [0, 'lock', 'A2']] },
  orderCase('A-B-B-A deadlock', [['A', 'B'], ['B', 'A']], 'circular'),
  orderCase('A-B-B-C-C-A deadlock', [['A', 'B'], ['B', 'C'], ['C', 'A']], 'circular'),
  orderCase('A-B-C-A-B-C deadlock', [['A', 'B'], ['C', 'A'], ['B', 'C']], 'circular'),
  orderCase('A-B-B-C-C-D-D-A deadlock', [['A', 'B'], ['B', 'C'], ['C', 'D'], ['D', 'A']], 'circular'),
  orderCase('A-B-C-D-B-D-D-A deadlock', [['A', 'B'], ['C', 'D'], ['B', 'D'], ['D', 'A']], 'circular'),
  orderCase('A-B-C-D-B-C-D-A deadlock', [['A', 'B'], ['C', 'D'], ['B', 'C'], ['D', 'A']], 'circular'),
  orderCase('A-B, B-C, A-C (no cycle)', [['A', 'B'], ['B', 'C'], ['A', 'C']], 'SUCCESS'),
  { name: 'double unlock', expect: 'api', locks: { A: M('A') }, steps: [[0, 'lock', 'A'], [0, 'unlock', 'A'], [1, 'unlock', 'A']] },
  { name: 'unlock by a non-owner', expect: 'api', locks: { A: M('A') }, steps: [[0, 'lock', 'A'], [1, 'unlock', 'A'], [0, 'unlock', 'A']] },
  { name: 'bad unlock order (no report)', expect: 'SUCCESS', locks: { A: M('A'), B: M('B') }, steps: [[0, 'lock', 'A'], [0, 'lock', 'B'], [0, 'unlock', 'A'], [0, 'unlock', 'B']] },
  { name: 'trylock: no dependency into it', expect: 'SUCCESS', locks: { A: M('A'), B: M('B') }, steps: [[0, 'lock', 'A'], [0, 'trylock', 'B'], [0, 'unlock', 'B'], [0, 'unlock', 'A'], [1, 'lock', 'B'], [1, 'lock', 'A'], [1, 'unlock', 'A'], [1, 'unlock', 'B']] },
  { name: 'trylock: dependencies out of it', expect: 'circular', locks: { A: M('A'), B: M('B') }, steps: [[0, 'trylock', 'A'], [0, 'lock', 'B'], [0, 'unlock', 'B'], [0, 'unlock', 'A'], [1, 'lock', 'B'], [1, 'lock', 'A']] },
  { name: 'edges only from the nearest non-trylock: A-B-C, then A-C ok', expect: 'SUCCESS', locks: { A: M('A'), B: M('B'), C: M('C') }, steps: [[0, 'lock', 'A'], [0, 'lock', 'B'], [0, 'lock', 'C'], [0, 'unlock', 'C'], [0, 'unlock', 'B'], [0, 'unlock', 'A'], [1, 'lock', 'A'], [1, 'lock', 'C'], [1, 'unlock', 'C'], [1, 'unlock', 'A']] },
  // ---- read modes (rwlock read = recursive read 2, rwsem read = read 1) ----
  { name: 'rlock A-A (recursive read twice)', expect: 'SUCCESS', locks: { A1: M('A'), A2: M('A') }, steps: [[0, 'acquireRead', 'A1', 2], [0, 'acquireRead', 'A2', 2], [0, 'release', 'A2'], [0, 'release', 'A1']] },
  { name: 'rsem A-A (read twice)', expect: 'recursive', locks: { A1: M('A'), A2: M('A') }, steps: [[0, 'acquireRead', 'A1', 1], [0, 'acquireRead', 'A2', 1]] },
  { name: 'rlock(A)-B vs B-rlock(A): no deadlock', expect: 'SUCCESS', locks: { A: M('A'), B: M('B') }, steps: [[0, 'acquireRead', 'A', 2], [0, 'lock', 'B'], [0, 'unlock', 'B'], [0, 'release', 'A'], [1, 'lock', 'B'], [1, 'acquireRead', 'A', 2], [1, 'release', 'A'], [1, 'unlock', 'B']] },
  { name: 'rlock(A)-B vs B-wlock(A): deadlock', expect: 'circular', locks: { A: M('A'), B: M('B') }, steps: [[0, 'acquireRead', 'A', 2], [0, 'lock', 'B'], [0, 'unlock', 'B'], [0, 'release', 'A'], [1, 'lock', 'B'], [1, 'acquireRead', 'A', 0]] },
  // ---- subclasses and nest locks (ours: the kernel file has none) ----
  { name: 'subclass: A then A/1', expect: 'SUCCESS', locks: { A1: M('A'), A2: M('A') }, steps: [[0, 'lock', 'A1'], [0, 'lockNested', 'A2', 1], [0, 'unlock', 'A2'], [0, 'unlock', 'A1']] },
  { name: 'subclass: A/0-A/1 vs A/1-A/0', expect: 'circular', locks: { A1: M('A'), A2: M('A') }, steps: [[0, 'lock', 'A1'], [0, 'lockNested', 'A2', 1], [0, 'unlock', 'A2'], [0, 'unlock', 'A1'], [1, 'lockNested', 'A2', 1], [1, 'lock', 'A1']] },
  { name: 'nest lock below: Y1, Y2 under X', expect: 'SUCCESS', locks: { X: M('X'), Y1: M('Y'), Y2: M('Y'), A: M('A') }, steps: [[0, 'lock', 'X'], [0, 'lockNest', 'Y1', 'X'], [0, 'lock', 'A'], [0, 'lockNest', 'Y2', 'X'], [0, 'unlock', 'Y2'], [0, 'unlock', 'A'], [0, 'unlock', 'Y1'], [0, 'unlock', 'X']] },
  { name: 'nest lock not held', expect: 'api', locks: { X: M('X'), Y1: M('Y') }, steps: [[1, 'lockNest', 'Y1', 'X'], [1, 'unlock', 'Y1']] },
  { name: 'nest lock above the first: AA', expect: 'recursive', locks: { X: M('X'), Y1: M('Y'), Y2: M('Y') }, steps: [[2, 'lock', 'Y1'], [2, 'lock', 'X'], [2, 'lockNest', 'Y2', 'X']] },
  { name: 'sleeping lock under a spinlock', expect: 'wait-context', locks: { S: 'spin:S', A: M('A') }, steps: [[0, 'lock', 'S'], [0, 'lock', 'A'], [0, 'unlock', 'A'], [0, 'unlock', 'S']] },
  // ---- ww_mutex (locking-selftest ww_tests) ----
  { name: 'ww api failures: fail_acquire', expect: 'SUCCESS', locks: { ...ww }, steps: [[0, 'wwInit', 't', 'o'], [0, 'wwLock', 'o', 't'], [0, 'wwLock', 'o', 't'], [0, 'wwTry', 'o', null], [1, 'wwInit', 't2', 'o'], [1, 'wwLock', 'o3', 't2'], [1, 'wwLock', 'o', 't2'], [1, 'unlock', 'o3'], [1, 'wwFini', 't2'], [0, 'unlock', 'o'], [0, 'wwTry', 'o', null], [0, 'unlock', 'o'], [0, 'wwFini', 't']], values: { 1: 0, 2: 'EALREADY', 3: false, 6: 'EDEADLK', 10: true } },
  { name: 'ww api failures: normal', expect: 'SUCCESS', locks: { ...ww }, steps: [[0, 'wwLock', 'o', null], [0, 'unlock', 'o'], [0, 'wwTry', 'o', null], [0, 'unlock', 'o'], [0, 'wwLock', 'o', null], [0, 'wwTry', 'o', null], [0, 'unlock', 'o'], [0, 'wwInit', 't', 'o'], [0, 'wwLock', 'o', 't'], [0, 'unlock', 'o'], [0, 'wwFini', 't']], values: { 2: true, 5: false } },
  { name: 'ww api failures: unneeded_slow', expect: 'api', locks: { ...ww }, steps: [[0, 'wwInit', 't', 'o'], [0, 'wwSlow', 'o', 't']] },
  { name: 'ww contexts mixing: two_contexts', expect: 'recursive', locks: { ...ww }, steps: [[1, 'wwInit', 't', 'o'], [1, 'wwInit', 't2', 'o']] },
  { name: 'ww contexts mixing: diff_class', expect: 'api', locks: { o: 'ww:ww_lockdep', x: 'ww:other_class' }, steps: [[0, 'wwInit', 't', 'x'], [0, 'wwLock', 'o', 't']] },
  { name: 'finishing ww context: done_twice', expect: 'api', locks: { ...ww }, steps: [[0, 'wwInit', 't', 'o'], [0, 'wwDone', 't'], [0, 'wwDone', 't'], [0, 'wwFini', 't']] },
  { name: 'finishing ww context: unlock_twice', expect: 'api', locks: { ...ww }, steps: [[0, 'wwInit', 't', 'o'], [0, 'wwDone', 't'], [0, 'wwFini', 't'], [0, 'wwFini', 't']] },
  { name: 'finishing ww context: fini_early', expect: 'api', locks: { ...ww }, steps: [[0, 'wwInit', 't', 'o'], [0, 'wwLock', 'o', 't'], [0, 'wwDone', 't'], [0, 'wwFini', 't']] },
  { name: 'finishing ww context: lock_after_done', expect: 'api', locks: { ...ww }, steps: [[0, 'wwInit', 't', 'o'], [0, 'wwDone', 't'], [0, 'wwLock', 'o', 't']] },
  { name: 'locking mismatches: object_unlock_twice', expect: 'api', locks: { ...ww }, steps: [[0, 'wwLock', 'o', null], [0, 'unlock', 'o'], [0, 'unlock', 'o']] },
  { name: 'locking mismatches: object_lock_unbalanced', expect: 'api', locks: { ...ww }, steps: [[0, 'wwInit', 't', 'o'], [0, 'wwLock', 'o', 't'], [0, 'wwSetAcquired', 't', 0], [0, 'unlock', 'o'], [0, 'wwFini', 't']] },
  { name: 'locking mismatches: object_lock_stale_context', expect: 'api', locks: { ...ww }, steps: [[0, 'wwInit', 't', 'o'], [0, 'wwStaleCtx', 'o', 't'], [0, 'wwLock', 'o', 't']] },
  ...edeadlkCases(),
  { name: 'spinlock nest test: spin_nest_lock', expect: 'SUCCESS', locks: { X1: 'spin:X', Y1: 'spin:Y', Y2: 'spin:Y', A: 'spin:A' }, steps: [[0, 'lock', 'X1'], [0, 'lockNest', 'Y1', 'X1'], [0, 'lock', 'A'], [0, 'lockNest', 'Y2', 'X1'], [0, 'unlock', 'A'], [0, 'unlock', 'Y2'], [0, 'unlock', 'Y1'], [0, 'unlock', 'X1']] },
  { name: 'spinlock nest unlocked', expect: 'api', locks: { ...ww, A: 'spin:A' }, steps: [[0, 'lockNest', 'A', 'o'], [0, 'unlock', 'A']] },
  { name: 'context: context_block', expect: 'recursive', locks: { ...ww }, steps: [[0, 'wwInit', 't', 'o'], [0, 'wwLock', 'o', 't'], [0, 'wwLock', 'o2', null]] },
  { name: 'context: context_try', expect: 'SUCCESS', locks: { ...ww }, steps: [[0, 'wwInit', 't', 'o'], [0, 'wwLock', 'o', 't'], [0, 'wwTry', 'o2', null], [0, 'unlock', 'o2'], [0, 'unlock', 'o'], [0, 'wwFini', 't']] },
  { name: 'context: context_context', expect: 'SUCCESS', locks: { ...ww }, steps: [[0, 'wwInit', 't', 'o'], [0, 'wwLock', 'o', 't'], [0, 'wwLock', 'o2', 't'], [0, 'unlock', 'o2'], [0, 'unlock', 'o'], [0, 'wwFini', 't'], [1, 'wwInit', 't', 'o'], [1, 'wwLock', 'o2', 't'], [1, 'wwLock', 'o', 't'], [1, 'unlock', 'o'], [1, 'unlock', 'o2'], [1, 'wwFini', 't']] },
  { name: 'try: try_block', expect: 'recursive', locks: { ...ww }, steps: [[0, 'wwTry', 'o', null], [0, 'wwLock', 'o2', null]] },
  { name: 'try: try_try', expect: 'SUCCESS', locks: { ...ww }, steps: [[0, 'wwTry', 'o', null], [0, 'wwTry', 'o2', null], [0, 'unlock', 'o2'], [0, 'unlock', 'o']] },
  { name: 'try: try_context', expect: 'recursive', locks: { ...ww }, steps: [[0, 'wwTry', 'o', null], [0, 'wwInit', 't', 'o'], [0, 'wwLock', 'o2', 't']] },
  { name: 'block: block_block', expect: 'recursive', locks: { ...ww }, steps: [[0, 'wwLock', 'o', null], [0, 'wwLock', 'o2', null]] },
  { name: 'block: block_try', expect: 'SUCCESS', locks: { ...ww }, steps: [[0, 'wwLock', 'o', null], [0, 'wwTry', 'o2', null], [0, 'unlock', 'o2'], [0, 'unlock', 'o']] },
  { name: 'block: block_context', expect: 'recursive', locks: { ...ww }, steps: [[0, 'wwLock', 'o', null], [0, 'wwInit', 't', 'o'], [0, 'wwLock', 'o2', 't']] },
  // The kernel stops at its first report; ours goes on, and A → o after o → A is also a cycle.
  { name: 'spinlock: spin_block', expect: 'wait-context', alsoExpect: ['circular'], locks: { ...ww, A: 'spin:A' }, steps: [[0, 'lock', 'A'], [0, 'unlock', 'A'], [0, 'wwLock', 'o', null], [0, 'lock', 'A'], [0, 'unlock', 'A'], [0, 'unlock', 'o'], [1, 'lock', 'A'], [1, 'wwLock', 'o', null]] },
  { name: 'spinlock: spin_try', expect: 'SUCCESS', locks: { ...ww, A: 'spin:A' }, steps: [[0, 'lock', 'A'], [0, 'unlock', 'A'], [0, 'wwTry', 'o', null], [0, 'lock', 'A'], [0, 'unlock', 'A'], [0, 'unlock', 'o'], [1, 'lock', 'A'], [1, 'wwTry', 'o', null], [1, 'unlock', 'o'], [1, 'unlock', 'A']] },
  { name: 'spinlock: spin_context', expect: 'wait-context', locks: { ...ww, A: 'spin:A' }, steps: [[0, 'wwInit', 't', 'o'], [0, 'wwLock', 'o', 't'], [0, 'lock', 'A'], [0, 'unlock', 'A'], [0, 'unlock', 'o'], [0, 'lock', 'A'], [0, 'wwLock', 'o', 't']] },
  // ---- fence signalling annotations ----
  { name: 'fence: wait under a lock the signaller takes', expect: 'circular', locks: { A: M('A') }, steps: [[0, 'lock', 'A'], [0, 'mightWait'], [0, 'unlock', 'A'], [1, 'begin'], [1, 'lock', 'A'], [1, 'unlock', 'A'], [1, 'end']] },
  { name: 'fence: same, signaller first', expect: 'circular', locks: { A: M('A') }, steps: [[1, 'begin'], [1, 'lock', 'A'], [1, 'unlock', 'A'], [1, 'end'], [0, 'lock', 'A'], [0, 'mightWait'], [0, 'unlock', 'A']] },
  { name: 'fence: real fences, wait(timeout 0) and dma_fence_signal', expect: 'circular', fences: true, locks: { A: M('A') }, steps: [[1, 'fenceCreate', 'F'], [0, 'lock', 'A'], [0, 'fenceWait', 'F', 0], [0, 'unlock', 'A'], [1, 'begin'], [1, 'lock', 'A'], [1, 'unlock', 'A'], [1, 'fenceSignal', 'F'], [1, 'end'], [0, 'fenceWait', 'F', 0]] },
  { name: 'fence: reservation lock inside a signalling section', expect: 'circular', locks: { r: 'ww:reservation_ww_class' }, steps: [[2, 'begin'], [2, 'wwInit', 't', 'r'], [2, 'wwLock', 'r', 't'], [2, 'unlock', 'r'], [2, 'wwFini', 't'], [2, 'end']] },
  { name: 'fence: reclaiming allocation inside a signalling section', expect: 'circular', locks: {}, steps: [[1, 'begin'], [1, 'mightAlloc'], [1, 'end']] },
  { name: 'fence: allocation outside a section', expect: 'SUCCESS', locks: {}, steps: [[1, 'mightAlloc'], [1, 'begin'], [1, 'end']] },
  { name: 'fence: nested begin, wait inside (no false AA)', expect: 'SUCCESS', locks: {}, steps: [[0, 'begin'], [0, 'begin'], [0, 'mightWait'], [0, 'end'], [0, 'end']] },
  { name: 'fence: wait inside a fence callback (atomic)', expect: 'wait-context', locks: {}, steps: [[0, 'atomicBegin'], [0, 'mightWait'], [0, 'atomicEnd']] },
  { name: 'fence: sleeping lock inside a fence callback', expect: 'wait-context', locks: { A: M('A') }, steps: [[0, 'atomicBegin'], [0, 'lock', 'A'], [0, 'unlock', 'A'], [0, 'atomicEnd']] },
  { name: 'fence: a real fence callback taking a sleeping lock', expect: 'wait-context', fences: true, locks: { A: M('A') }, steps: [[0, 'fenceCreate', 'F'], [0, 'fenceCallbackLocks', 'F', 'A'], [0, 'fenceSignal', 'F']], values: { 1: 0, 2: 0 } },
  { name: 'fence: signalling from atomic context is no section', expect: 'SUCCESS', locks: { A: M('A') }, steps: [[0, 'lock', 'A'], [0, 'mightWait'], [0, 'unlock', 'A'], [1, 'atomicBegin'], [1, 'begin'], [1, 'end'], [1, 'atomicEnd'], [1, 'begin'], [1, 'end']] },
];

/** EDEADLK handling: o2 held by an older context t2 in another worker. */
function edeadlkCases(): Case[] {
  const pre: Step[] = [[1, 'wwInit', 't2', 'o'], [1, 'wwLock', 'o2', 't2'], [0, 'wwInit', 't', 'o'], [0, 'wwLock', 'o', 't'], [0, 'wwLock', 'o2', 't']];
  const pre3: Step[] = [[1, 'wwInit', 't2', 'o'], [1, 'wwLock', 'o2', 't2'], [1, 'wwLock', 'o3', 't2'], [0, 'wwInit', 't', 'o'], [0, 'wwLock', 'o', 't'], [0, 'wwLock', 'o2', 't']];
  const rel: Step[] = [[1, 'unlock', 'o2']];
  const mk = (name: string, expect: Case['expect'], steps: Step[]): Case => ({ name: `EDEADLK handling: ${name}`, expect, locks: { ...ww }, steps, values: { 4: 'EDEADLK' } });
  return [
    mk('normal', 'SUCCESS', [...pre, ...rel, [0, 'unlock', 'o'], [0, 'wwLock', 'o2', 't']]),
    mk('normal_slow', 'SUCCESS', [...pre, ...rel, [0, 'unlock', 'o'], [0, 'wwSlow', 'o2', 't']]),
    mk('no_unlock', 'api', [...pre, ...rel, [0, 'wwLock', 'o2', 't']]),
    mk('no_unlock_slow', 'api', [...pre, ...rel, [0, 'wwSlow', 'o2', 't']]),
    mk('acquire_more', 'api', [...pre, [0, 'wwLock', 'o3', 't']]),
    mk('acquire_more_slow', 'api', [...pre, [0, 'wwSlow', 'o3', 't']]),
    { ...mk('acquire_more_edeadlk', 'api', [...pre3, [0, 'wwLock', 'o3', 't']]), values: { 5: 'EDEADLK', 6: 'EDEADLK' } },
    { ...mk('acquire_more_edeadlk_slow', 'api', [...pre3, [0, 'unlock', 'o'], [1, 'unlock', 'o3'], [0, 'wwSlow', 'o3', 't']]), values: { 5: 'EDEADLK' } },
    mk('acquire_wrong', 'api', [...pre, [0, 'unlock', 'o'], [0, 'wwLock', 'o3', 't']]),
    mk('acquire_wrong_slow', 'api', [...pre, [0, 'unlock', 'o'], [0, 'wwSlow', 'o3', 't']]),
  ];
}

/** Runs one case; returns null when it passed, else why it failed. */
async function runCase(workers: Worker[], c: Case): Promise<string | null> {
  const d = LockDomain.create({ maxEdges: 4096, arenaBytes: 1 << 20 }, 'test main');
  const locks: Record<string, LockHandle> = {};
  for (const [name, spec] of Object.entries(c.locks)) locks[name] = makeLock(d, spec);
  const fenceTable = c.fences ? createFenceTable() : undefined;
  // The reports a failing case provokes are labelled expected (one line per case, not the reports themselves):
  // anything else, in any worker, prints loudly.
  const exp = c.expect === 'SUCCESS' ? null : beginExpectLockdepReports(d, { kind: [c.expect, ...(c.alsoExpect ?? [])] }, `"${c.name}"`);
  try {
    return await runSteps(workers, c, d, locks, fenceTable);
  } finally {
    if (exp) endExpectLockdepReports(exp);
  }
}

async function runSteps(workers: Worker[], c: Case, d: LockDomain, locks: Record<string, LockHandle>, fenceTable: SharedArrayBuffer | undefined): Promise<string | null> {
  for (let i = 0; i < workers.length; i++) {
    const r = await call(workers[i]!, { type: 'attach', domain: d.sab, name: `w${i}`, locks, fenceTable });
    if (!r.ok) return `attach: ${r.error}`;
  }
  // The fence cases exchange fences: a 'fenceCreate' step's handle is installed in every other worker.
  for (let i = 0; i < c.steps.length; i++) {
    const [w, ...step] = c.steps[i]!;
    const r = await call(workers[w]!, { type: 'step', step });
    if (!r.ok) return `step ${i} ${JSON.stringify(step)} threw: ${r.error}`;
    if (c.values && i in c.values && JSON.stringify(r.value) !== JSON.stringify(c.values[i])) {
      return `step ${i} ${JSON.stringify(step)} returned ${JSON.stringify(r.value)}, expected ${JSON.stringify(c.values[i])}`;
    }
    if (step[0] === 'fenceCreate') {
      for (let j = 0; j < workers.length; j++) {
        if (j !== w) await call(workers[j]!, { type: 'fences', fences: { [String(step[1])]: r.value } });
      }
    }
  }
  const reports = lockdepReports(d);
  if (c.expect === 'SUCCESS') return reports.length === 0 ? null : `unexpected report:\n${reports.map((r) => r.text).join('\n')}`;
  if (!reports.some((r) => r.kind === c.expect)) return `expected a '${c.expect}' report, got ${JSON.stringify(reports.map((r) => r.key))}`;
  return null;
}

test('locking-selftest ports: every case gives its verdict, steps spread over workers', async (t) => {
  const workers = [0, 1, 2].map(() => new Worker(fixture));
  const failures: string[] = [];
  try {
    for (const c of cases) {
      const why = await runCase(workers, c);
      const line = `  ${c.name.padEnd(60)} ${why === null ? 'ok' : 'FAILED'}`;
      t.log(line);
      if (why !== null) failures.push(`${c.name}: ${why}`);
    }
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
  t.log(`${cases.length - failures.length} of ${cases.length} testcases succeeded`);
  t.deepEqual(failures, []);
});

test('a cycle is reported once per run (dedup by canonical rotation) and the report carries the chain', async (t) => {
  const workers = [0, 1, 2].map(() => new Worker(fixture));
  try {
    const c = orderCase('ABBCCA twice', [['A', 'B'], ['B', 'C'], ['C', 'A'], ['B', 'C'], ['C', 'A']], 'circular');
    const d = LockDomain.create({}, 'test main');
    const locks: Record<string, LockHandle> = {};
    for (const [name, spec] of Object.entries(c.locks)) locks[name] = makeLock(d, spec);
    for (let i = 0; i < 3; i++) await call(workers[i]!, { type: 'attach', domain: d.sab, name: `w${i}`, locks });
    await expectLockdepReports(d, { kind: 'circular' }, 'ABBCCA twice', async () => {
      for (const [w, ...step] of c.steps) t.true((await call(workers[w]!, { type: 'step', step })).ok);
    });
    const reports = lockdepReports(d);
    t.is(reports.length, 1);
    const r = reports[0]!;
    t.is(r.kind, 'circular');
    t.is(r.key, 'circular:A -> B -> C');
    t.deepEqual([...r.locks].sort(), ['A', 'B', 'C']);
    t.true(r.workers.length >= 2);
    for (const s of ['possible circular locking dependency detected', 'the existing dependency chain (in reverse order) is:', 'Chain exists of:', 'Possible unsafe locking scenario', 'WORKER0', 'WORKER1', '*** DEADLOCK ***', 'first recorded by worker']) {
      t.true(r.text.includes(s), s);
    }
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
});

test('out of edge table space: one loud report, then the validator is off', (t) => {
  const d = LockDomain.create({ maxEdges: 3 }, 'main');
  const exp = beginExpectLockdepReports(d, { kind: 'api', key: /^api:limit:/ }, 'out of edge table space');
  const ls = ['A', 'B', 'C', 'D', 'E', 'F'].map((n) => new Mutex(n, { domain: d }));
  for (let i = 0; i + 1 < ls.length; i++) {
    ls[i]!.lock();
    ls[i + 1]!.lock();
    ls[i + 1]!.unlock();
    ls[i]!.unlock();
  }
  const reports = lockdepReports(d);
  t.is(reports.length, 1);
  t.regex(reports[0]!.text, /MAX_LOCKDEP_ENTRIES too low![\s\S]*turning off the locking correctness validator/);
  t.false(d.enabled);
  // Off: an inversion now goes unreported, and the locks still work.
  ls[5]!.lock();
  ls[0]!.lock();
  ls[0]!.unlock();
  ls[5]!.unlock();
  t.is(lockdepReports(d).length, 1);
  t.is(endExpectLockdepReports(exp).length, 1);
});

test('suppressions and throw mode', (t) => {
  const d = LockDomain.create({ suppress: [{ kind: 'circular', locks: ['S1'] }] }, 'main');
  const exp = beginExpectLockdepReports(d, { kind: 'circular', key: /TA/ }, 'throw mode');
  const [s1, s2] = [new Mutex('S1', { domain: d }), new Mutex('S2', { domain: d })];
  s1.lock(); s2.lock(); s2.unlock(); s1.unlock();
  s2.lock(); s1.lock(); s1.unlock(); s2.unlock();
  t.is(lockdepReports(d).length, 0);
  d.setOnReport('throw');
  const [a, b] = [new Mutex('TA', { domain: d }), new Mutex('TB', { domain: d })];
  a.lock(); b.lock(); b.unlock(); a.unlock();
  b.lock();
  const e = t.throws(() => a.lock(), { code: 'ELOCKDEP' }) as Error & { report: LockdepReport };
  t.is(e.report.kind, 'circular');
  t.false(a.isLocked(), 'thrown before taking the lock');
  // The same inversion again throws again (reported once: the stored report is not repeated).
  t.throws(() => a.lock(), { code: 'ELOCKDEP' });
  t.false(a.isLocked());
  t.is(lockdepReports(d).length, 1);
  b.unlock();
  t.is(endExpectLockdepReports(exp).length, 1);
});

test('a real ABBA between two workers is reported before it hangs (throw mode): nobody blocks forever', async (t) => {
  const workers = [0, 1].map(() => new Worker(fixture));
  const d = LockDomain.create({ onReport: 'throw' }, 'test main');
  const exp = beginExpectLockdepReports(d, { kind: 'circular' }, 'a real ABBA in throw mode');
  try {
    const locks = { A: makeLock(d, M('A')), B: makeLock(d, M('B')) };
    for (let i = 0; i < 2; i++) t.true((await call(workers[i]!, { type: 'attach', domain: d.sab, name: `w${i}`, locks })).ok);
    t.true((await call(workers[0]!, { type: 'step', step: ['lock', 'A'] })).ok);
    t.true((await call(workers[1]!, { type: 'step', step: ['lock', 'B'] })).ok);
    // Both now go for the other's lock at once: whichever validates second closes the cycle and throws before it
    // sleeps, so it can back off; the other then gets its lock. Either order gives the same verdict.
    const [r0, r1] = await Promise.all([call(workers[0]!, { type: 'step', step: ['lock', 'B'] }), call(workers[1]!, { type: 'step', step: ['lock', 'A'] })].map((p, i) =>
      p.then(async (r) => {
        if (!r.ok) t.true((await call(workers[i]!, { type: 'step', step: ['unlock', i === 0 ? 'A' : 'B'] })).ok);
        return r;
      }),
    ));
    const failed = [r0!, r1!].filter((r) => !r.ok) as (Reply & { code?: string })[];
    t.is(failed.length, 1, 'exactly one acquirer is refused');
    t.is(failed[0]!.code, 'ELOCKDEP');
    const reps = lockdepReports(d);
    t.is(reps.length, 1);
    t.is(reps[0]!.key, 'circular:A -> B');
  } finally {
    endExpectLockdepReports(exp);
    await Promise.all(workers.map((w) => w.terminate()));
  }
});
