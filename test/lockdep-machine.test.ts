/**
 * Machine.boot({ lockdep: true }): processes attach the machine's lock domain, so an inversion between two
 * processes is reported in machine.lockdep.reports(), and a process killed holding a lock has it recovered by
 * the next waiter through the machine's alive table (reap clears the dead process's token).
 */
import test from 'ava';
import { Machine } from '../src/index.js';
import { Mutex, beginExpectLockdepReports, endExpectLockdepReports } from '../src/locking/index.js';

const fixture = new URL('./fixtures/locking-proc.js', import.meta.url);
const syncProcs = new URL('../src/demos/implicit-sync-procs.js', import.meta.url);

test('an ABBA between two processes is reported, nothing blocks', async (t) => {
  const m = await Machine.boot({ lockdep: true });
  const exp = beginExpectLockdepReports(m.lockdep.domain()!, { kind: 'circular' }, 'ABBA between two processes');
  try {
    const a = new Mutex('proc_lock_a');
    const b = new Mutex('proc_lock_b');
    const p1 = await m.spawn(fixture, { name: 'p1' });
    const p2 = await m.spawn(fixture, { name: 'p2' });
    t.is(await p1.call('lockPair', a.handle, b.handle), 0);
    t.is(await p2.call('lockPair', b.handle, a.handle), 0);
    const reps = m.lockdep.reports();
    t.is(reps.length, 1);
    t.is(reps[0]!.kind, 'circular');
    t.is(reps[0]!.key, 'circular:proc_lock_a -> proc_lock_b');
    t.regex(reps[0]!.text, /p2 \(pid \d+\)\) is trying to acquire lock/);
    t.regex(reps[0]!.text, /first recorded by worker \d+ \(p1 \(pid \d+\)\):/);
  } finally {
    endExpectLockdepReports(exp);
    await m.shutdown();
  }
});

test('a process killed holding a lock: the next waiter gets it with EOWNERDEAD', async (t) => {
  const m = await Machine.boot({ lockdep: true });
  const exp = beginExpectLockdepReports(m.lockdep.domain()!, { kind: 'api', key: /owner-died/ }, 'a lock holder killed');
  try {
    const l = new Mutex('proc_robust');
    const holder = await m.spawn(fixture, { name: 'holder' });
    t.is(await holder.call('hold', l.handle), 0);
    const waiter = await m.spawn(fixture, { name: 'waiter' });
    const r = waiter.call('lockUnlock', l.handle);
    await holder.kill();
    t.is(await r, -130);
    t.true(m.lockdep.reports().some((x) => x.key.includes('owner-died')));
    t.false(l.isLocked());
  } finally {
    endExpectLockdepReports(exp);
    await m.shutdown();
  }
});

test('lockdep off by default: no domain', async (t) => {
  const m = await Machine.boot();
  try {
    t.is(m.lockdep.domain(), null);
    t.deepEqual(m.lockdep.reports(), []);
  } finally {
    await m.shutdown();
  }
});

test('sync_wait is an annotated wait: lock(A) + sync_wait(timeout 0) vs A inside a signalling section', async (t) => {
  const m = await Machine.boot({ lockdep: true });
  const exp = beginExpectLockdepReports(m.lockdep.domain()!, { kind: 'circular' }, 'sync_wait under a lock the signaller takes');
  try {
    const a = new Mutex('proc_wait_lock');
    const p1 = await m.spawn(fixture, { name: 'waiter' });
    const p2 = await m.spawn(fixture, { name: 'signaller' });
    t.is(await p1.call('lockThenSyncWait', a.handle), 0);
    t.deepEqual(m.lockdep.reports(), []);
    t.is(await p2.call('lockInSignallingSection', a.handle), 0);
    const reps = m.lockdep.reports();
    t.is(reps.length, 1);
    t.is(reps[0]!.key, 'circular:dma_fence_map -> proc_wait_lock');
  } finally {
    endExpectLockdepReports(exp);
    await m.shutdown();
  }
});

test('watchdog: a process holding A waits on a sw_sync fence whose timeline holder blocks on A — broken within 1 s', async (t) => {
  const m = await Machine.boot({ lockdep: true });
  const d = m.lockdep.domain()!;
  const exp = beginExpectLockdepReports(d, { kind: ['circular', 'deadlock'] }, 'process deadlock through a sw_sync fence');
  try {
    const a = new Mutex('proc_wd_lock');
    const sig = await m.spawn(fixture, { name: 'signaller' });
    const waiter = await m.spawn(fixture, { name: 'waiter' });
    const [s1, s2] = await m.socketpair(sig, waiter);
    t.is(await sig.call('makeFenceAndSend', s1), 0);
    t.true((await waiter.call<number>('receiveFence', s2)) >= 0);
    const waiting = waiter.call<number>('lockThenWaitFence', a.handle);
    const t0 = performance.now();
    while (m.lockdep.waits().length === 0 && performance.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 5));
    t.is(m.lockdep.waits()[0]?.kind, 'fence');
    t.regex(m.lockdep.waits()[0]!.holder ?? '', /signaller \(pid \d+\)/, 'the sw_sync timeline holder is the signaller');
    const { r, ms } = await sig.call<{ r: number; ms: number }>('lockThenSignal', a.handle);
    t.is(r, -35, 'the lock that closed the cycle fails with -EDEADLK');
    t.log(`cycle closed → EDEADLK in ${ms.toFixed(0)} ms`);
    t.true(ms < 1000, `broken in ${ms} ms`);
    t.is(await waiting, 0, 'the waiter\'s fence then signals');
    const dl = m.lockdep.reports().filter((r) => r.kind === 'deadlock');
    t.is(dl.length, 1);
    t.regex(dl[0]!.text, /signalled by worker \d+ \(signaller \(pid \d+\)\)/);
    t.regex(dl[0]!.text, /\(proc_wd_lock\)\{\+\.\+\.\}, mutex #\d+, held by worker \d+ \(waiter \(pid \d+\)\)/);
  } finally {
    endExpectLockdepReports(exp);
    await m.shutdown();
  }
});

test('watchdog off: no domain unless asked; watchdog alone makes one with the validator off; options validated', async (t) => {
  const m = await Machine.boot({ watchdog: true, hungTaskTimeoutMs: 0 });
  try {
    t.truthy(m.lockdep.watchdog());
    t.false(m.lockdep.domain()!.enabled, 'validator off');
  } finally {
    await m.shutdown();
  }
  await t.throwsAsync(Machine.boot({ hungTaskTimeoutMs: -1 }), { code: 'ERR_OUT_OF_RANGE', message: /options\.hungTaskTimeoutMs/ });
  await t.throwsAsync(Machine.boot({ hungTaskTimeoutMs: '5' as unknown as number }), { code: 'ERR_INVALID_ARG_TYPE' });
  await t.throwsAsync(Machine.boot({ watchdog: 1 as unknown as boolean }), { code: 'ERR_INVALID_ARG_TYPE' });
});

test('watchdog: a DMA_BUF_IOCTL_SYNC START parked in the kernel past the hung-task time is reported hung', async (t) => {
  const m = await Machine.boot({ watchdog: true, hungTaskTimeoutMs: 300 });
  const d = m.lockdep.domain()!;
  const exp = beginExpectLockdepReports(d, { kind: 'hung' }, 'a parked SYNC START');
  try {
    const gpu = await m.spawn(syncProcs, { name: 'gpu' });
    const display = await m.spawn(syncProcs, { name: 'display' });
    const [gs, ds] = await m.socketpair(gpu, display);
    await gpu.call('gpuSubmit', gs);
    await display.call('displayReceive', ds);
    const scan = display.call<{ waitedMs: number; wrong: number }>('displayScanout', 0xab); // parks on the write fence
    const t0 = performance.now();
    while (!m.lockdep.reports().some((r) => r.kind === 'hung') && performance.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 20));
    const hung = m.lockdep.reports().filter((r) => r.kind === 'hung');
    t.is(hung.length, 1);
    t.regex(hung[0]!.text, /^INFO: task worker \d+ \(display \(pid \d+\)\) blocked for more than \d+ ms\.\n\s+waiting for \(DMA_BUF_IOCTL_SYNC\(START\)\), a syscall parked in the kernel waiting for fences,/);
    await gpu.call('gpuRenderAndSignal', 0xab);
    t.is((await scan).wrong, 0, 'the wait then completes as usual');
    t.deepEqual(m.lockdep.waits(), []);
  } finally {
    endExpectLockdepReports(exp);
    await m.shutdown();
  }
});
