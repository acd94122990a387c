/**
 * Ports of kernel/locking/test-ww_mutex.c (mutex, aa, abba with and without backoff, cycle of N workers, stress
 * in-order / reorder / single) for both Wait-Die and Wound-Wait, each step in its own worker, plus robust-lock
 * cases: a holder killed while holding a mutex, and a worker exiting with one held.
 */
import test, { type ExecutionContext } from 'ava';
import { Worker } from 'node:worker_threads';
import { LockDomain, LockWatchdog, Mutex, WwClass, WwMutex, beginExpectLockdepReports, endExpectLockdepReports, lockdepReports, type LockHandle } from '../src/locking/index.js';
import { chooseSeed } from '../src/shm/prng.js';

const fixture = new URL('./fixtures/ww-bodies.js', import.meta.url);

interface Result<T> {
  readonly ok: boolean;
  readonly token: number;
  readonly result: T;
  readonly error?: string;
}

/** Runs `body` in `n` workers; resolves with every result, rejects on any failure or after `timeoutMs`. */
async function run<T>(body: string, domain: LockDomain, locks: LockHandle[], n: number, extra: Record<string, unknown> = {}, timeoutMs = 30_000): Promise<T[]> {
  const sync = new SharedArrayBuffer(64);
  const ws = Array.from({ length: n }, (_, index) => new Worker(fixture, { workerData: { body, domain: domain.sab, locks, sync, index, nworkers: n, ...extra } }));
  try {
    return await Promise.all(
      ws.map(
        (w, i) =>
          new Promise<T>((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`${body} worker ${i} timed out`)), timeoutMs);
            w.once('message', (m: Result<T>) => {
              clearTimeout(timer);
              if (m.ok) resolve(m.result);
              else reject(new Error(`${body} worker ${i}: ${m.error}`));
            });
            w.once('error', (e) => {
              clearTimeout(timer);
              reject(e);
            });
          }),
      ),
    );
  } finally {
    await Promise.all(ws.map((w) => w.terminate()));
  }
}

/**
 * A domain and `nlocks` ww_mutexes of one class. The deadlock watchdog scans it throughout (every 20 ms): ww's own
 * back-off resolves every cycle these bodies make, so a 'deadlock' report here would be a false positive, and
 * noReports() fails on it.
 */
function setup(t: ExecutionContext, woundWait: boolean, nlocks: number): { d: LockDomain; locks: LockHandle[] } {
  const d = LockDomain.create({}, 'test main');
  const wd = new LockWatchdog(d, { hungTaskTimeoutMs: 0, periodMs: 20 }).start();
  t.teardown(() => wd.stop());
  const cls = new WwClass('test_ww_class', { woundWait });
  return { d, locks: Array.from({ length: nlocks }, () => new WwMutex(cls, { domain: d }).handle) };
}

function noReports(t: ExecutionContext, d: LockDomain): void {
  t.deepEqual(lockdepReports(d).map((r) => r.text), []);
}

for (const woundWait of [false, true]) {
  const cls = woundWait ? 'wound-wait' : 'wait-die';

  test(`test_mutex (${cls}): a held lock blocks the other worker until unlocked`, async (t) => {
    const { d, locks } = setup(t, woundWait, 1);
    const [r0] = await run<{ early?: number }>('mutex', d, locks, 2);
    t.is(r0!.early, 0, 'the second worker got the lock while the first held it');
    noReports(t, d);
  });

  test(`test_aa (${cls}): EALREADY, and trylocks fail`, async (t) => {
    const { d, locks } = setup(t, woundWait, 1);
    const [r] = await run<Record<string, unknown>>('aa', d, locks, 1);
    t.deepEqual(r, { first: 0, tryNull: false, tryCtx: false, again: 'EALREADY' });
    noReports(t, d);
  });

  for (const resolve of [false, true]) {
    test(`test_abba (${cls}, ${resolve ? 'with' : 'without'} backoff)`, async (t) => {
      const { d, locks } = setup(t, woundWait, 2);
      const rs = await run<{ err: number | string }>('abba', d, locks, 2, { resolve });
      const errs = rs.map((r) => r.err);
      if (resolve) t.deepEqual(errs, [0, 0]);
      else t.true(errs.includes('EDEADLK'), `missed ABBA deadlock: ${JSON.stringify(errs)}`);
      noReports(t, d);
    });
  }

  test(`test_cycle (${cls}): a cycle of 4 workers resolves`, async (t) => {
    const { d, locks } = setup(t, woundWait, 4);
    const rs = await run<{ backoffs: number }>('cycle', d, locks, 4);
    t.true(rs.reduce((a, r) => a + r.backoffs, 0) >= 1, 'a cycle must make someone back off');
    noReports(t, d);
  });

  for (const mode of ['inorder', 'reorder', 'single'] as const) {
    test(`stress ${mode} (${cls}): bounded, every transaction completes`, async (t) => {
      const seed = chooseSeed();
      t.log(`seed ${seed} (DMABUF_SIM_SEED=${seed} replays)`);
      const { d, locks } = setup(t, woundWait, 8);
      const rs = await run<{ txns?: number; n?: number }>(mode === 'single' ? 'single' : 'stress', d, locks, 3, { seed, resolve: mode === 'reorder', iterations: 300, budgetMs: 3000 });
      for (const r of rs) t.true((r.txns ?? r.n ?? 0) > 0, `seed ${seed}: a worker made no progress`);
      noReports(t, d);
      for (const h of locks) t.false(WwMutex.from(h).isLocked(), `seed ${seed}: a lock is still held`);
    });
  }
}

test('robust: a holder killed while holding a mutex — the waiter gets it with EOWNERDEAD and it is reported', async (t) => {
  const d = LockDomain.create({}, 'test main');
  const exp = beginExpectLockdepReports(d, { kind: 'api', key: /owner-died/ }, 'a lock holder killed');
  const m = new Mutex('robust_lock', { domain: d });
  const sync = new SharedArrayBuffer(64);
  const s32 = new Int32Array(sync);
  const holder = new Worker(fixture, { workerData: { body: 'holdForever', domain: d.sab, locks: [m.handle], sync, index: 0, nworkers: 1 } });
  try {
    while (Atomics.load(s32, 0) === 0) await new Promise((r) => setTimeout(r, 5));
    const owner = m.owner();
    t.not(owner, 0);
    const waiter = run<{ r: number }>('waitDeadHolder', d, [m.handle], 1);
    await new Promise((r) => setTimeout(r, 50));
    // Whoever created the worker marks it dead when it ends (here: by hand after terminate).
    await holder.terminate();
    d.ownerDied(owner);
    const [r] = await waiter;
    t.is(r!.r, -130, 'EOWNERDEAD');
    const reps = lockdepReports(d);
    t.true(reps.some((x) => x.kind === 'api' && x.key.includes('owner-died')), JSON.stringify(reps.map((x) => x.key)));
    t.false(m.isLocked());
  } finally {
    endExpectLockdepReports(exp);
    await holder.terminate();
  }
});

test('robust: a worker exiting with a lock held is reported and the lock released', async (t) => {
  const d = LockDomain.create({}, 'test main');
  const exp = beginExpectLockdepReports(d, { kind: 'api', key: /exit-held/ }, 'a worker exiting with a lock held');
  const m = new Mutex('exit_lock', { domain: d });
  const w = new Worker(fixture, { workerData: { body: 'exitHolding', domain: d.sab, locks: [m.handle], sync: new SharedArrayBuffer(64), index: 0, nworkers: 1 } });
  await new Promise<void>((resolve) => w.once('exit', () => resolve()));
  t.false(m.isLocked(), 'released at exit');
  t.true(lockdepReports(d).some((x) => x.key.includes('exit-held')));
  endExpectLockdepReports(exp);
});
