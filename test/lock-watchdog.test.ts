/**
 * The real-deadlock watchdog (src/locking/watchdog.ts): workers really block on each other — two mutexes in
 * opposite orders, a mutex against a fence whose signaller needs the mutex, ww_mutexes of two classes under two
 * contexts — and the watchdog names the cycle and fails one waiter with -EDEADLK within a second; a long wait
 * with no cycle is reported hung, naming the holder. Steps are ordered by barriers (each blocking step is sent
 * only once the previous waiter is seen published), so the victim is the same in every run.
 */
import test, { type ExecutionContext } from 'ava';
import { Worker } from 'node:worker_threads';
import { LockDomain, LockWatchdog, beginExpectLockdepReports, endExpectLockdepReports, lockdepReports, type LockHandle, type LockdepReport } from '../src/locking/index.js';
import { createFenceTable } from '../src/fence/table.js';
import { call, makeLock, type Reply } from './helpers/lock-steps.js';

const fixture = new URL('./fixtures/lockdep-steps.js', import.meta.url);

interface Rig {
  readonly d: LockDomain;
  readonly wd: LockWatchdog;
  readonly ws: Worker[];
  /** Each worker's owner token in the domain. */
  readonly tokens: number[];
  step(w: number, ...step: (string | number | null)[]): Promise<Reply>;
  /** Resolves once `n` waits are published (the barrier before the next blocking step). */
  waitingCount(n: number): Promise<void>;
  close(): Promise<void>;
}

async function rig(t: ExecutionContext, locks: Record<string, string>, opts: { fences?: boolean; hungTaskTimeoutMs?: number } = {}): Promise<Rig> {
  const d = LockDomain.create({}, 'test main');
  const handles: Record<string, LockHandle> = {};
  for (const [name, spec] of Object.entries(locks)) handles[name] = makeLock(d, spec);
  const ws = [0, 1].map(() => new Worker(fixture));
  const fenceTable = opts.fences ? createFenceTable() : undefined;
  const tokens: number[] = [];
  for (let i = 0; i < ws.length; i++) {
    const r = await call(ws[i]!, { type: 'attach', domain: d.sab, name: `w${i}`, locks: handles, fenceTable });
    t.true(r.ok, r.error);
    tokens.push(r.value as number);
  }
  const wd = new LockWatchdog(d, { hungTaskTimeoutMs: opts.hungTaskTimeoutMs ?? 0, periodMs: 50 }).start();
  return {
    d,
    wd,
    ws,
    tokens,
    step: (w, ...step) => call(ws[w]!, { type: 'step', step }),
    waitingCount: async (n) => {
      const t0 = performance.now();
      while (wd.waits().length < n) {
        if (performance.now() - t0 > 5000) throw new Error(`never saw ${n} published waits: ${JSON.stringify(wd.waits())}`);
        await new Promise((r) => setTimeout(r, 5));
      }
    },
    close: async () => {
      wd.stop();
      await Promise.all(ws.map((w) => w.terminate()));
    },
  };
}

function only(reports: LockdepReport[], kind: LockdepReport['kind']): LockdepReport[] {
  return reports.filter((r) => r.kind === kind);
}

test('two workers, two mutexes in opposite orders: the deadlock is named and broken within 1 s', async (t) => {
  const r = await rig(t, { A: 'mutex:wd_A', B: 'mutex:wd_B' });
  const exp = beginExpectLockdepReports(r.d, { kind: ['circular', 'deadlock'] }, 'ABBA deadlock');
  try {
    t.is((await r.step(0, 'lock', 'A')).value, 0);
    t.is((await r.step(1, 'lock', 'B')).value, 0);
    const first = r.step(0, 'lock', 'B'); // blocks: w1 holds B
    await r.waitingCount(1);
    const [ret, ms] = (await r.step(1, 'lockTimed', 'A')).value as [number, number]; // closes the cycle: the victim
    t.log(`cycle closed → EDEADLK in ${ms.toFixed(0)} ms`);
    t.is(ret, -35, 'the acquisition that closed the cycle fails with -EDEADLK');
    t.true(ms < 1000, `broken in ${ms} ms`);
    t.is((await r.step(1, 'unlock', 'B')).value, true);
    t.is((await first).value, 0, 'the other waiter then gets its lock');
    await r.step(0, 'unlock', 'B');
    await r.step(0, 'unlock', 'A');
    const dl = only(lockdepReports(r.d), 'deadlock');
    t.is(dl.length, 1);
    t.is(dl[0]!.key, 'deadlock:wd_A -> wd_B');
    t.deepEqual(dl[0]!.workers, ['worker 3 (w1)', 'worker 2 (w0)']);
    for (const s of ['WARNING: deadlock detected (wait-for cycle)', 'worker 3 (w1) is blocked on:', '(wd_A){+.+.}', 'held by worker 2 (w0)', '*** DEADLOCK ***', "breaking it: worker 3 (w1)'s wait on wd_A fails with -EDEADLK"]) {
      t.true(dl[0]!.text.includes(s), s);
    }
    t.is(r.wd.broken, 1);
  } finally {
    t.is(endExpectLockdepReports(exp).length, 2, 'the circular prediction and the deadlock');
    await r.close();
  }
});

test('mutex against fence: worker 1 holds A and waits on F, F\'s signaller blocks on A — broken within 1 s', async (t) => {
  const r = await rig(t, { A: 'mutex:wd_fence_A' }, { fences: true });
  const exp = beginExpectLockdepReports(r.d, { kind: ['circular', 'deadlock'] }, 'mutex-versus-fence deadlock');
  try {
    const created = await r.step(1, 'fenceCreate', 'F');
    t.true(created.ok, created.error);
    await call(r.ws[0]!, { type: 'fences', fences: { F: created.value } });
    t.true((await r.step(1, 'fenceSetSignaller', 'F', null)).ok);
    t.is((await r.step(0, 'lock', 'A')).value, 0);
    const wait = r.step(0, 'fenceWait', 'F', Infinity); // sleeps on F
    await r.waitingCount(1);
    t.deepEqual(r.wd.waits().map((w) => [w.worker, w.kind, w.holder]), [['worker 2 (w0)', 'fence', 'worker 3 (w1)']]);
    t.true((await r.step(1, 'begin')).ok);
    const [ret, ms] = (await r.step(1, 'lockTimed', 'A')).value as [number, number]; // the signaller needs A: the cycle closes here
    t.log(`cycle closed → EDEADLK in ${ms.toFixed(0)} ms`);
    t.is(ret, -35);
    t.true(ms < 1000, `broken in ${ms} ms`);
    // Released, the signaller signals without the lock; the waiter wakes.
    t.is((await r.step(1, 'fenceSignal', 'F')).value, 0);
    t.true((await r.step(1, 'end')).ok);
    t.true(((await wait).value as number) > 0, 'the fence wait returns signaled');
    await r.step(0, 'unlock', 'A');
    const dl = only(lockdepReports(r.d), 'deadlock');
    t.is(dl.length, 1);
    t.regex(dl[0]!.key, /^deadlock:fence lockdep-test:tl -> wd_fence_A$|^deadlock:wd_fence_A -> fence lockdep-test:tl$/);
    t.regex(dl[0]!.text, /\(dma_fence lockdep-test:tl context \d+ seqno 1\), signalled by worker 3 \(w1\)/);
    t.regex(dl[0]!.text, /\(wd_fence_A\)\{\+\.\+\.\}, mutex #\d+, held by worker 2 \(w0\)/);
    t.true(only(lockdepReports(r.d), 'circular').some((c) => c.key.includes('dma_fence_map')), 'lockdep predicted it too');
  } finally {
    endExpectLockdepReports(exp);
    await r.close();
  }
});

test('ww_mutexes of two classes under two contexts: no back-off can see it, the watchdog breaks it', async (t) => {
  const r = await rig(t, { x: 'ww:wd_class_X', y: 'ww:wd_class_Y' });
  const exp = beginExpectLockdepReports(r.d, { kind: ['circular', 'deadlock'] }, 'ww cross-class deadlock');
  try {
    for (const [w, ctx, lock] of [[0, 'tx', 'x'], [1, 'ty', 'y']] as const) {
      t.true((await r.step(w, 'wwInit', ctx, lock)).ok);
      t.is((await r.step(w, 'wwLock', lock, ctx)).value, 0);
    }
    t.true((await r.step(0, 'wwInit', 'ty0', 'y')).ok);
    const first = r.step(0, 'wwLock', 'y', 'ty0'); // a context holding nothing waits (no -EDEADLK from ww)
    await r.waitingCount(1);
    t.true((await r.step(1, 'wwInit', 'tx1', 'x')).ok);
    const [ret, ms] = (await r.step(1, 'wwLockTimed', 'x', 'tx1')).value as [string, number];
    t.log(`cycle closed → EDEADLK in ${ms.toFixed(0)} ms`);
    t.is(ret, 'EDEADLK', 'the wait that closed the cycle is failed');
    t.true(ms < 1000, `broken in ${ms} ms`);
    // The victim backs off as after any -EDEADLK: releases what it holds; the other one goes on.
    t.is((await r.step(1, 'unlock', 'y')).value, true);
    t.is((await first).value, 0);
    await r.step(1, 'wwFiniAll');
    await r.step(0, 'unlock', 'y');
    await r.step(0, 'unlock', 'x');
    await r.step(0, 'wwFiniAll');
    const dl = only(lockdepReports(r.d), 'deadlock');
    t.is(dl.length, 1);
    t.is(dl[0]!.key, 'deadlock:wd_class_X_mutex -> wd_class_Y_mutex');
    t.regex(dl[0]!.text, /ww_mutex #\d+, held by worker/);
  } finally {
    endExpectLockdepReports(exp);
    await r.close();
  }
});

test('a wait longer than the hung-task time, no cycle: reported hung, naming the lock and its holder', async (t) => {
  const r = await rig(t, { A: 'mutex:wd_hung_A' }, { hungTaskTimeoutMs: 300 });
  const exp = beginExpectLockdepReports(r.d, { kind: 'hung' }, 'hung task');
  try {
    t.is((await r.step(0, 'lock', 'A')).value, 0);
    const waiting = r.step(1, 'lock', 'A');
    const t0 = performance.now();
    while (only(lockdepReports(r.d), 'hung').length === 0 && performance.now() - t0 < 5000) await new Promise((res) => setTimeout(res, 20));
    const ms = performance.now() - t0;
    t.true(ms >= 250, `not before the hung-task time (${ms} ms)`);
    const hung = only(lockdepReports(r.d), 'hung');
    t.is(hung.length, 1);
    t.regex(hung[0]!.text, /^INFO: task worker 3 \(w1\) blocked for more than \d+ ms\./);
    t.regex(hung[0]!.text, /waiting for \(wd_hung_A\)\{\+\.\+\.\}, mutex #\d+,\n\s+held by worker 2 \(w0\), which is not blocked on anything the watchdog sees\./);
    t.deepEqual(hung[0]!.workers, ['worker 3 (w1)', 'worker 2 (w0)']);
    t.is((await r.step(0, 'unlock', 'A')).value, true);
    t.is((await waiting).value, 0, 'a hung report breaks nothing');
    t.is(r.wd.broken, 0);
    t.true(r.wd.longestWait.ms >= 250, `the longest wait seen: ${r.wd.longestWait.ms} ms`);
    t.regex(r.wd.longestWait.what, /^worker 3 \(w1\) on .*wd_hung_A/);
  } finally {
    endExpectLockdepReports(exp);
    await r.close();
  }
});

test('a waiter killed mid-wait leaves no phantom wait: its publication goes with its token', async (t) => {
  const r = await rig(t, { A: 'mutex:wd_killed_A' }, { hungTaskTimeoutMs: 500 });
  try {
    t.is((await r.step(0, 'lock', 'A')).value, 0);
    void r.step(1, 'lock', 'A').catch(() => {});
    await r.waitingCount(1);
    await r.ws[1]!.terminate();
    r.d.ownerDied(r.tokens[1]!); // whoever created the worker marks it dead (a Machine's reap does this)
    t.deepEqual(r.wd.waits(), []);
    await new Promise((res) => setTimeout(res, 700)); // past the hung-task time
    t.deepEqual(r.wd.scan(), [], 'and it is never reported hung');
    t.deepEqual(lockdepReports(r.d).filter((x) => x.kind === 'hung'), []);
  } finally {
    await r.close();
  }
});

test('LockWatchdog options are validated Node-style', (t) => {
  const d = LockDomain.create({}, 'main');
  t.throws(() => new LockWatchdog(d, { hungTaskTimeoutMs: -1 }), { code: 'ERR_OUT_OF_RANGE' });
  t.throws(() => new LockWatchdog(d, { hungTaskTimeoutMs: 1.5 }), { code: 'ERR_OUT_OF_RANGE' });
  t.throws(() => new LockWatchdog(d, { hungTaskTimeoutMs: '10' as unknown as number }), { code: 'ERR_INVALID_ARG_TYPE' });
  t.throws(() => new LockWatchdog(d, { periodMs: 5 }), { code: 'ERR_OUT_OF_RANGE' });
});
