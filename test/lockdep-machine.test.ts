/**
 * Machine.boot({ lockdep: true }) — the default under a test runner —: processes attach the machine's lock domain,
 * so an inversion between two processes is reported in machine.lockdep.reports(), and a process killed holding a
 * lock has it recovered by the next waiter through the machine's alive table (reap clears the dead process's
 * token); a report nobody expected comes back from shutdown().
 */
import test from 'ava';
import { Machine, formatUnexpectedLockdep, type BootOptions } from '../src/index.js';
import { lockdepDefault } from '../src/options.js';
import { Mutex, beginExpectLockdepReports, endExpectLockdepReports, expectLockdepReports, setLockdepSink, type LockdepReport } from '../src/locking/index.js';
import { noUnexpectedLockdep, sockFixture, throwUnexpectedLockdep } from './helpers/sim.js';
import { CAP_ALIVE, WAIT_WORDS, W_OWNER } from '../src/locking/domain.js';

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
    noUnexpectedLockdep(t, await m.shutdown());
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
    noUnexpectedLockdep(t, await m.shutdown());
  }
});

test('lockdep default: on under a test runner (NODE_ENV=test), off elsewhere; DMABUF_SIM_LOCKDEP overrides, the option wins', async (t) => {
  t.is(process.env['NODE_ENV'], 'test', 'ava sets NODE_ENV in its workers');
  t.true(lockdepDefault({ NODE_ENV: 'test' }));
  t.false(lockdepDefault({}), 'outside tests: off');
  t.false(lockdepDefault({ NODE_ENV: 'production' }));
  for (const v of ['1', 'on', 'true', ' ON ']) t.true(lockdepDefault({ DMABUF_SIM_LOCKDEP: v }), v);
  for (const v of ['0', 'off', 'false']) t.false(lockdepDefault({ NODE_ENV: 'test', DMABUF_SIM_LOCKDEP: v }), v);
  t.true(lockdepDefault({ NODE_ENV: 'test', DMABUF_SIM_LOCKDEP: '' }), 'empty counts as unset');
  t.throws(() => lockdepDefault({ DMABUF_SIM_LOCKDEP: 'yes please' }), { code: 'ERR_INVALID_ARG_VALUE', message: /process\.env\.DMABUF_SIM_LOCKDEP/ });

  // The variable is read at boot, synchronously (before boot's first await): set and restored around the call
  // (this run may itself have been started with DMABUF_SIM_LOCKDEP=0).
  const saved = process.env['DMABUF_SIM_LOCKDEP'];
  const withEnv = (v: string, opts?: BootOptions): Promise<Machine> => {
    process.env['DMABUF_SIM_LOCKDEP'] = v;
    try {
      return Machine.boot(opts);
    } finally {
      if (saved === undefined) delete process.env['DMABUF_SIM_LOCKDEP'];
      else process.env['DMABUF_SIM_LOCKDEP'] = saved;
    }
  };
  // Here (ava, the variable unset): on by default, with the watchdog; an explicit option wins over the default.
  const on = await withEnv('');
  try {
    t.true(on.lockdep.domain()?.enabled, 'the validator runs');
    t.truthy(on.lockdep.watchdog(), 'and the watchdog');
  } finally {
    noUnexpectedLockdep(t, await on.shutdown());
  }
  const off = await withEnv('', { lockdep: false });
  try {
    t.is(off.lockdep.domain(), null);
    t.is(off.lockdep.watchdog(), null);
    t.deepEqual(off.lockdep.reports(), []);
  } finally {
    t.deepEqual((await off.shutdown()).lockdep, []);
  }
  const envOff = await withEnv('0');
  t.is(envOff.lockdep.domain(), null, 'DMABUF_SIM_LOCKDEP=0 turns the default off');
  await envOff.shutdown();
  const optionWins = await withEnv('0', { lockdep: true });
  t.true(optionWins.lockdep.domain()?.enabled, 'the option wins over the variable');
  await optionWins.shutdown();
  await t.throwsAsync(withEnv('maybe'), { code: 'ERR_INVALID_ARG_VALUE', message: /DMABUF_SIM_LOCKDEP/ });
});

test('attaching to the lock domain costs a process no syscall; reap frees a dead worker\'s wait slot', async (t) => {
  const m = await Machine.boot({ lockdep: true });
  const d = m.lockdep.domain()!;
  const slotsTaken = (): number => {
    let n = 0;
    for (let i = 0; i < d.i32[CAP_ALIVE]!; i++) if (Atomics.load(d.i32, d.waitBase + i * WAIT_WORDS + W_OWNER) !== 0) n++;
    return n;
  };
  try {
    const base = slotsTaken(); // the broker's and the main thread's
    const ps = [];
    for (let i = 0; i < 4; i++) ps.push(await m.spawn(sockFixture, { name: `early${i}` }));
    t.is(slotsTaken(), base + 4);
    for (const p of ps.slice(0, 2)) await p.kill();
    t.is(slotsTaken(), base + 2, 'the killed processes\' slots are free again');
    // Before the fix, a process attaching asked the kernel (SYS.owner_alive) about every taken slot before it found
    // a free one: its first syscall of its own was numbered #2 or more in origins and leak reports.
    const late = await m.spawn(sockFixture, { name: 'late' });
    t.is(slotsTaken(), base + 3, 'a freed slot is reused');
    await m.socketpair(late, ps[2]!);
    const r = await m.shutdown({ quiet: true });
    const held = r.held.find((h) => h.comm === 'late');
    t.deepEqual(held?.fds.map((f) => [f.createdBy.call, f.createdBy.seq]), [['Machine.socketpair', 0]], 'the process made no syscall before');
    noUnexpectedLockdep(t, r);
  } finally {
    await m.shutdown({ quiet: true }).catch(() => {});
  }
});

test('a report nobody expected is returned by shutdown() and fails the test helpers; an expected one is not', async (t) => {
  const m = await Machine.boot({ lockdep: true });
  const d = m.lockdep.domain()!;
  const seen: LockdepReport[] = [];
  setLockdepSink((r) => seen.push(r)); // the main thread's reports, kept off stderr
  try {
    const a = new Mutex('unexpected_a');
    const b = new Mutex('unexpected_b');
    await expectLockdepReports(d, { kind: 'circular', key: /expected_x/ }, 'a labelled inversion', () => {
      const x = new Mutex('expected_x');
      const y = new Mutex('expected_y');
      x.lock(); y.lock(); y.unlock(); x.unlock();
      y.lock(); x.lock(); x.unlock(); y.unlock();
    });
    a.lock(); b.lock(); b.unlock(); a.unlock();
    b.lock(); a.lock(); a.unlock(); b.unlock();
  } finally {
    setLockdepSink(null);
  }
  t.deepEqual(seen.map((r) => [r.key, r.expected === true]), [['circular:expected_x -> expected_y', true], ['circular:unexpected_a -> unexpected_b', false]]);
  const r = await m.shutdown({ quiet: true });
  t.deepEqual(r.lockdep.map((x) => x.key), ['circular:unexpected_a -> unexpected_b'], 'only the unexpected one');
  t.regex(formatUnexpectedLockdep(r.lockdep), /^1 unexpected lockdep report \(circular:unexpected_a -> unexpected_b\): label the ones a test provokes with expectLockdepReports$/);
  t.throws(() => throwUnexpectedLockdep(m), { message: /1 unexpected lockdep report[^]*possible circular locking dependency detected/ }, 'bootFor / bootChecked teardowns fail the test with it');
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
    noUnexpectedLockdep(t, await m.shutdown());
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
    noUnexpectedLockdep(t, await m.shutdown());
  }
});

test('watchdog off: no domain unless asked; watchdog alone makes one with the validator off; options validated', async (t) => {
  const m = await Machine.boot({ lockdep: false, watchdog: true, hungTaskTimeoutMs: 0 });
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
    noUnexpectedLockdep(t, await m.shutdown());
  }
});
