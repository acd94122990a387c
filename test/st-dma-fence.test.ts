/**
 * Port of drivers/dma-buf/st-dma-fence.c (selftest 1, "dma_fence"): the kernel's subtests in their order and with
 * their names, run against the shared fence table — the wait and race cases across real worker threads — followed
 * by model-specific cases (prefixed "model:") for what the C file cannot see: cross-worker callbacks, zombies,
 * handles, the table allocator and the clock.
 */
import { fenceTable } from '../src/testing.js';
import { availableParallelism } from 'node:os';
import {
  DmaFenceCb,
  FenceTableFullError,
  HZ,
  attachFenceTable,
  createAndAttachFenceTable,
  createFenceTable,
  dmaFenceAddCallback,
  dmaFenceAllocatePrivateStub,
  dmaFenceContextAlloc,
  dmaFenceDeadline,
  dmaFenceDescribe,
  dmaFenceEnableSwSignaling,
  dmaFenceFromHandle,
  dmaFenceGet,
  dmaFenceGetStatus,
  dmaFenceGetStub,
  dmaFenceInit,
  dmaFenceInit64,
  dmaFenceIsLater,
  dmaFenceIsLaterOrSame,
  dmaFenceIsSignaled,
  dmaFencePut,
  dmaFenceRemoveCallback,
  dmaFenceSetDeadline,
  dmaFenceSetError,
  dmaFenceSignal,
  dmaFenceSignalTimestamp,
  dmaFenceTimestamp,
  dmaFenceWaitAnyTimeout,
  dmaFenceWaitAsync,
  dmaFenceWaitTimeout,
  fenceHandle,
  type DmaFence,
} from '../src/fence/index.js';
import { setWarningSink, takeWarnings } from '../src/bug.js';
import { ktimeGetNs } from '../src/shm/clock.js';
import { E } from '../src/uapi/errno.js';
import { benchFenceWake } from '../bench/fence.js';
import { bootChecked } from './helpers/sim.js';
import { assertNoLiveFences, fenceSuite, joinAll, msleep, startFenceWorker, type WorkerResult } from './fence-harness.js';

const { sab: table } = createAndAttachFenceTable({ slots: 8192 });
// Warnings are asserted (takeWarnings), not printed.
setWarningSink(() => {});

const mockOps = { driverName: 'mock', timelineName: 'mock' };
/** mock_fence(): context 0, seqno 0, as the C test. */
const mockFence = (): DmaFence => dmaFenceInit(mockOps, 0, 0);

/**
 * Subtests of selftest 1 (dma_fence) and model cases: each runs, then checks nothing leaked and nothing warned (a
 * model case re-attaches this thread to `table` first: some attach to a machine's table).
 */
const { subtest, model } = fenceSuite('dma_fence', table, () => attachFenceTable(table));

subtest(1, 'sanitycheck', (t) => {
  const f = mockFence();
  dmaFenceEnableSwSignaling(f);
  dmaFenceSignal(f);
  dmaFencePut(f);
  t.pass();
});

subtest(2, 'test_signaling', (t) => {
  const f = mockFence();
  try {
    dmaFenceEnableSwSignaling(f);
    t.false(dmaFenceIsSignaled(f), 'Fence unexpectedly signaled on creation');
    t.is(dmaFenceSignal(f), 0, 'Fence reported being already signaled');
    t.true(dmaFenceIsSignaled(f), 'Fence not reporting signaled');
    t.is(dmaFenceSignal(f), -E.EINVAL, 'Fence reported not being already signaled');
  } finally {
    dmaFencePut(f);
  }
});

subtest(3, 'test_add_callback', (t) => {
  const cb = new DmaFenceCb();
  let seen = false;
  const f = mockFence();
  try {
    t.is(dmaFenceAddCallback(f, cb, () => (seen = true)), 0, 'Failed to add callback, fence already signaled!');
    dmaFenceSignal(f);
    t.true(seen, 'Callback failed!');
  } finally {
    dmaFencePut(f);
  }
});

subtest(4, 'test_late_add_callback', (t) => {
  const cb = new DmaFenceCb();
  let seen = false;
  const f = mockFence();
  try {
    dmaFenceEnableSwSignaling(f);
    dmaFenceSignal(f);
    t.is(dmaFenceAddCallback(f, cb, () => (seen = true)), -E.ENOENT, 'Added callback, but fence was already signaled!');
    dmaFenceSignal(f);
    t.false(seen, 'Callback called after failed attachment !');
  } finally {
    dmaFencePut(f);
  }
});

subtest(5, 'test_rm_callback', (t) => {
  const cb = new DmaFenceCb();
  let seen = false;
  const f = mockFence();
  try {
    t.is(dmaFenceAddCallback(f, cb, () => (seen = true)), 0, 'Failed to add callback, fence already signaled!');
    t.true(dmaFenceRemoveCallback(f, cb), 'Failed to remove callback!');
    dmaFenceSignal(f);
    t.false(seen, 'Callback still signaled after removal!');
  } finally {
    dmaFencePut(f);
  }
});

subtest(6, 'test_late_rm_callback', (t) => {
  const cb = new DmaFenceCb();
  let seen = false;
  const f = mockFence();
  try {
    t.is(dmaFenceAddCallback(f, cb, () => (seen = true)), 0, 'Failed to add callback, fence already signaled!');
    dmaFenceSignal(f);
    t.true(seen, 'Callback failed!');
    t.false(dmaFenceRemoveCallback(f, cb), 'Callback removal succeed after being executed!');
  } finally {
    dmaFencePut(f);
  }
});

subtest(7, 'test_status', (t) => {
  const f = mockFence();
  try {
    dmaFenceEnableSwSignaling(f);
    t.is(dmaFenceGetStatus(f), 0, 'Fence unexpectedly has signaled status on creation');
    dmaFenceSignal(f);
    t.is(dmaFenceGetStatus(f), 1, 'Fence not reporting signaled status');
  } finally {
    dmaFencePut(f);
  }
});

subtest(8, 'test_error', (t) => {
  const f = mockFence();
  try {
    dmaFenceEnableSwSignaling(f);
    dmaFenceSetError(f, -E.EIO);
    t.is(dmaFenceGetStatus(f), 0, 'Fence unexpectedly has error status before signal');
    dmaFenceSignal(f);
    t.is(dmaFenceGetStatus(f), -E.EIO, `Fence not reporting error status, got ${dmaFenceGetStatus(f)}`);
  } finally {
    dmaFencePut(f);
  }
});

// The C selftest's mock_wait returned -ETIME / 0; the model has the kernel's default wait only, so the values are
// dma_fence_default_wait's (0 before the signal, 1 after, for a zero timeout) — as the later KUnit version checks.
// The same checks are made from a second worker, whose blocking wait is woken by this thread's signal.
subtest(9, 'test_wait', async (t) => {
  const f = mockFence();
  try {
    dmaFenceEnableSwSignaling(f);
    t.is(dmaFenceWaitTimeout(f, false, 0), 0, 'Wait reported complete before being signaled');
    const w = startFenceWorker<WorkerResult & { before: number; blocking: number; after: number }>(
      'waitZeroThenOne',
      table,
      { fence: fenceHandle(f) },
    );
    await w.ready;
    await msleep(5);
    dmaFenceSignal(f);
    t.is(dmaFenceWaitTimeout(f, false, 0), 1, 'Wait reported incomplete after being signaled');
    const r = await w.done;
    t.is(r.before, 0, 'Wait reported complete before being signaled (other worker)');
    t.true(r.blocking > 0, `Blocking wait in the other worker returned ${r.blocking}`);
    t.is(r.after, 1, 'Wait reported incomplete after being signaled (other worker)');
    t.deepEqual(r.warnings, []);
  } finally {
    dmaFenceSignal(f);
    dmaFencePut(f);
  }
});

// The timer is another worker, armed through a shared word: it signals the fence 1 jiffy (ms) after arming.
subtest(10, 'test_wait_timeout', async (t) => {
  const ctl = new Int32Array(new SharedArrayBuffer(8));
  const f = mockFence();
  const w = startFenceWorker<WorkerResult & { fired: boolean; signalRet: number }>('timer', table, {
    fence: fenceHandle(f),
    ctl: ctl.buffer,
    delayMs: 1,
  });
  try {
    dmaFenceEnableSwSignaling(f);
    await w.ready;
    t.is(dmaFenceWaitTimeout(f, false, 1), 0, 'Wait reported complete before being signaled');
    Atomics.store(ctl, 0, 1); // mod_timer(jiffies + 1)
    Atomics.notify(ctl, 0);
    const ret = dmaFenceWaitTimeout(f, false, HZ);
    if (ret === 0) {
      if (Atomics.load(ctl, 1) === 0) t.log('Timer did not fire within on HZ!');
      else t.fail('Wait reported incomplete after timeout');
    } else {
      t.true(ret > 0 && ret <= HZ, `remaining jiffies ${ret}`);
    }
  } finally {
    if (Atomics.compareExchange(ctl, 0, 0, 2) === 0) Atomics.notify(ctl, 0); // timer_delete_sync if never armed
    const r = await w.done;
    t.deepEqual(r.warnings, []);
    dmaFenceSignal(f);
    dmaFencePut(f);
  }
});

subtest(11, 'test_stub', (t) => {
  const f: DmaFence[] = [];
  try {
    for (let i = 0; i < 64; i++) {
      f.push(dmaFenceGetStub());
      if (!dmaFenceIsSignaled(f[i]!)) {
        t.fail('Obtained unsignaled stub fence!');
        break;
      }
    }
    t.is(f.length, 64);
  } finally {
    for (let i = f.length; i--; ) dmaFencePut(f[i]!);
  }
});

// Two workers each publish a fence, grab the other's (dma_fence_get_rcu_safe on shared handle words), add a
// callback to it and signal their own — before (pass 1) or after (pass 0) adding the callback — for 50 ms a pass.
// A callback that never ran after the fence's signal and the worker's pump is a failure in that worker, which
// fails the test.
subtest(12, 'race_signal_callback', async (t) => {
  if (availableParallelism() < 2) {
    t.log('requires at least 2 CPUs');
    return;
  }
  for (let pass = 0; pass <= 1; pass++) {
    const slots = new SharedArrayBuffer(16);
    const ctl = new SharedArrayBuffer(4);
    const workers = [0, 1].map((id) =>
      startFenceWorker<WorkerResult & { pass: number; miss: number }>('raceSignalCallback', table, {
        id,
        before: pass === 1,
        slots,
        ctl,
        maxPasses: 1_000_000,
      }),
    );
    await Promise.all(workers.map((w) => w.ready));
    await msleep(50);
    Atomics.store(new Int32Array(ctl), 0, 1);
    const ptrs = new BigInt64Array(slots);
    Atomics.notify(ptrs, 0);
    Atomics.notify(ptrs, 1);
    const results = await joinAll(workers);
    for (const [id, r] of results.entries()) {
      t.log(`thread_signal_callback[${id}] (before=${pass === 1}) completed ${r.pass} passes, ${r.miss} misses`);
      t.true(r.pass > 0, `thread ${id} made no pass`);
      t.deepEqual(r.warnings, []);
    }
  }
});

// ---- model-specific cases -------------------------------------------------------------------------------------------

model('dma_fence_signal and set_error edge cases return and warn like the kernel', (t) => {
  t.is(dmaFenceSignal(null), -E.EINVAL);
  const f = mockFence();
  t.is(dmaFenceSignal(f), 0);
  t.is(dmaFenceSignal(f), -E.EINVAL, 'already signaled: -EINVAL returned, not thrown');
  dmaFenceSetError(f, -E.EIO);
  t.deepEqual(
    takeWarnings().map((w) => w.message.split(' after')[0]),
    [`dma_fence_set_error(${-E.EIO})`],
    'set_error after the signal warns',
  );
  t.is(dmaFenceGetStatus(f), -E.EIO, 'and, as WARN_ON does not return, still stores the error');
  const g = mockFence();
  dmaFenceSetError(g, 5);
  t.is(takeWarnings().length, 1, 'a positive error warns');
  dmaFenceSignal(g);
  dmaFencePut(g);
  dmaFencePut(f);
});

model('callbacks run in FIFO order, and a remove after the signal reports false', (t) => {
  const f = mockFence();
  const order: number[] = [];
  const cbs = [0, 1, 2, 3].map(() => new DmaFenceCb());
  for (const [i, cb] of cbs.entries()) t.is(dmaFenceAddCallback(f, cb, () => order.push(i)), 0);
  t.true(dmaFenceRemoveCallback(f, cbs[2]!));
  dmaFenceSignal(f);
  t.deepEqual(order, [0, 1, 3]);
  t.false(dmaFenceRemoveCallback(f, cbs[0]!));
  dmaFencePut(f);
});

model('releasing a fence with a callback pending signals it with -EDEADLK and warns', (t) => {
  const f = mockFence();
  let status = 0;
  const cb = new DmaFenceCb();
  t.is(dmaFenceAddCallback(f, cb, (fence) => (status = dmaFenceGetStatus(fence))), 0);
  dmaFencePut(f);
  const w = takeWarnings().map((x) => x.message);
  t.deepEqual(w, ['Fence mock:mock:0:0 released with pending signals!']);
  t.is(status, -E.EDEADLK, 'the callback ran (the releasing worker registered it) and saw -EDEADLK');
});

model('a callback registered in an event-loop worker runs there, promptly, when another thread signals', async (t) => {
  const f = mockFence();
  const w = startFenceWorker<WorkerResult & { ran: boolean; status: number }>('eventLoopCallback', table, {
    fence: fenceHandle(f),
    eventLoop: true,
    timeoutMs: 10_000,
  });
  await w.ready;
  dmaFenceSetError(f, -E.ECANCELED);
  dmaFenceSignal(f);
  const r = await w.done;
  t.true(r.ran, 'callback ran through the waitAsync watcher, without any explicit pump');
  t.is(r.status, -E.ECANCELED);
  t.deepEqual(r.warnings, []);
  dmaFencePut(f);
});

model('a fence released here while another worker has a callback on it lives on until that callback ran', async (t) => {
  const f = mockFence();
  const w = startFenceWorker<WorkerResult & { ran: boolean; status: number }>('eventLoopCallback', table, {
    fence: fenceHandle(f),
    eventLoop: true,
    timeoutMs: 10_000,
  });
  await w.ready;
  dmaFencePut(f); // last reference, callback pending in the worker: -EDEADLK, zombie slot
  t.deepEqual(
    takeWarnings().map((x) => x.message),
    ['Fence mock:mock:0:0 released with pending signals!'],
  );
  const r = await w.done;
  t.true(r.ran);
  t.is(r.status, -E.EDEADLK, 'the worker saw the error on the zombie slot');
  t.deepEqual(r.warnings, []);
});

model('dma_fence_wait_any_timeout: zero timeout, bad arguments, and a wait across workers', async (t) => {
  const fences = [mockFence(), mockFence(), mockFence()];
  const idx = { value: -1 };
  t.is(dmaFenceWaitAnyTimeout(fences, false, 0, idx), 0);
  t.is(dmaFenceWaitAnyTimeout([], false, 10), -E.EINVAL);
  t.is(takeWarnings().length, 1);
  const w = startFenceWorker<WorkerResult & { ret: number; idx: number }>('waitAny', table, {
    fences: fences.map(fenceHandle),
    timeout: 10_000,
  });
  await w.ready;
  await msleep(5);
  dmaFenceSignal(fences[2]!);
  const r = await w.done;
  t.true(r.ret > 0);
  t.is(r.idx, 2);
  t.is(dmaFenceWaitAnyTimeout(fences, false, 0, idx), 1);
  t.is(idx.value, 2);
  t.is(dmaFenceWaitAnyTimeout(fences.slice(0, 2), false, 3), 0, 'times out');
  for (const f of fences) {
    dmaFenceSignal(f);
    dmaFencePut(f);
  }
});

model('dma_fence_wait_timeout: -EINVAL for a negative timeout; the error never leaks into the return', (t) => {
  const f = mockFence();
  t.is(dmaFenceWaitTimeout(f, true, -1), -E.EINVAL);
  t.is(takeWarnings().length, 1);
  dmaFenceSetError(f, -E.EIO);
  dmaFenceSignal(f);
  t.is(dmaFenceWaitTimeout(f, true, 100), 100, 'signaled: the whole timeout remains');
  t.is(dmaFenceWaitTimeout(f, true, 0), 1);
  dmaFencePut(f);
});

model('dmaFenceWaitAsync: an event-loop wait woken by another worker, and its timeout', async (t) => {
  const f = mockFence();
  const g = mockFence();
  const w = startFenceWorker<WorkerResult & { rets: number[] }>('signaller', table, {
    fences: [fenceHandle(f)],
    delayMs: 5,
  });
  await w.ready;
  const ret = await dmaFenceWaitAsync(f, 10_000);
  t.true(ret > 0);
  t.deepEqual((await w.done).rets, [0]);
  t.is(await dmaFenceWaitAsync(g, 20), 0);
  t.is(await dmaFenceWaitAsync(f, 0), 1);
  dmaFenceSignal(g);
  dmaFencePut(g);
  dmaFencePut(f);
});

model('dma_fence_is_later: 32-bit wrap, 64-bit seqnos, different contexts', (t) => {
  const ctx = dmaFenceContextAlloc(1);
  const a = dmaFenceInit(mockOps, ctx, 0xfffffff0);
  const b = dmaFenceInit(mockOps, ctx, 0x10); // wrapped past 2^32: later on a 32-bit timeline
  t.true(dmaFenceIsLater(b, a));
  t.false(dmaFenceIsLater(a, b));
  t.true(dmaFenceIsLaterOrSame(a, a));
  const c = dmaFenceInit64(mockOps, ctx, 0xfffffff0);
  const d = dmaFenceInit64(mockOps, ctx, 0x1_0000_0010n);
  const e = dmaFenceInit64(mockOps, ctx, 0x10);
  t.true(dmaFenceIsLater(d, c));
  t.false(dmaFenceIsLater(e, c), '64-bit timelines do not wrap');
  const other = dmaFenceInit(mockOps, dmaFenceContextAlloc(1), 1);
  t.false(dmaFenceIsLater(other, a));
  t.is(takeWarnings().length, 1, 'different contexts warn');
  for (const f of [a, b, c, d, e, other]) dmaFencePut(f);
});

model('contexts come from a machine-wide counter; stubs are context 0', (t) => {
  const c1 = dmaFenceContextAlloc(3);
  const c2 = dmaFenceContextAlloc(1);
  t.is(c2, c1 + 3);
  t.true(c1 >= 1);
  const stub = dmaFenceGetStub();
  t.is(stub.context, 0);
  t.is(stub.seqno, 0n);
  t.is(dmaFenceDescribe(stub), 'stub stub seq 0 signalled\n');
  const p = dmaFenceAllocatePrivateStub(12345);
  t.is(p.context, 0);
  t.is(dmaFenceGetStatus(p), 1);
  t.is(dmaFenceTimestamp(p), 12345);
  t.not(p, stub);
  dmaFencePut(p);
  dmaFencePut(stub);
});

model('timestamps come from the shared clock: a worker signal lands between two local readings', async (t) => {
  const f = mockFence();
  const w = startFenceWorker<WorkerResult & { rets: number[] }>('signaller', table, { fences: [fenceHandle(f)] });
  const t0 = ktimeGetNs();
  await w.ready;
  t.true(dmaFenceWaitTimeout(f, false, 10_000) > 0);
  const t1 = ktimeGetNs();
  await w.done;
  const ts = dmaFenceTimestamp(f);
  // Clocks of two workers agree to timeOrigin's precision: allow 1 ms of skew.
  t.true(ts >= t0 - 1e6 && ts <= t1 + 1e6, `timestamp ${ts} outside [${t0}, ${t1}]`);
  t.is(dmaFenceSignalTimestamp(f, 1), -E.EINVAL);
  dmaFencePut(f);
});

model('stale handles and use after the last put are caught', (t) => {
  const f = mockFence();
  const h = fenceHandle(f);
  t.is(dmaFenceFromHandle(h), f);
  dmaFenceSignal(f);
  dmaFencePut(f);
  t.throws(() => dmaFenceFromHandle(h), { message: /stale fence handle/ });
  t.throws(() => dmaFenceGet(f), { message: /BUG: dma_fence_get on a released fence/ });
  t.throws(() => dmaFencePut(f), { message: /BUG: dma_fence_put on a released fence/ });
  const g = mockFence(); // may reuse the slot: a new generation
  if (g.index === h.index) t.not(g.gen, h.gen);
  t.throws(() => dmaFenceFromHandle(h));
  dmaFencePut(g);
});

model('a full fence table is a loud error, never silent', (t) => {
  const small = createFenceTable({ slots: 8 });
  attachFenceTable(small);
  const got: DmaFence[] = [];
  const saved = process.stderr.write;
  let printed = '';
  process.stderr.write = ((s: string) => {
    printed += s;
    return true;
  }) as typeof process.stderr.write;
  try {
    t.throws(
      () => {
        for (;;) got.push(mockFence());
      },
      { instanceOf: FenceTableFullError, message: /fence table full: all 8 slots in use/ },
    );
  } finally {
    process.stderr.write = saved;
  }
  t.is(got.length, 7, 'slot 0 is the stub');
  t.regex(printed, /fence table full/);
  for (const f of got) dmaFencePut(f);
  assertNoLiveFences(t, small);
});

model('set_deadline keeps the earliest deadline and reaches a local ops hook', (t) => {
  const seen: number[] = [];
  const ops = { driverName: 'dl', timelineName: 'dl', setDeadline: (_f: DmaFence, ns: number) => seen.push(ns) };
  const f = dmaFenceInit(ops, dmaFenceContextAlloc(1), 1);
  t.is(dmaFenceDeadline(f), null);
  dmaFenceSetDeadline(f, 5000);
  dmaFenceSetDeadline(f, 9000);
  dmaFenceSetDeadline(f, 3000);
  t.is(dmaFenceDeadline(f), 3000);
  t.deepEqual(seen, [5000, 9000, 3000]);
  dmaFenceSignal(f);
  dmaFenceSetDeadline(f, 1);
  t.deepEqual(seen, [5000, 9000, 3000], 'no deadline once signaled');
  dmaFencePut(f);
});

model('benchFenceWake runs (small counts) and reports both latencies', async (t) => {
  const r = await benchFenceWake({ iterations: 200, warmup: 20 });
  t.is(r.name, 'fence-wake');
  for (const k of ['p50_us', 'p99_us', 'raw_p50_us', 'raw_p99_us', 'ratio_p50'] as const) {
    t.true(Number.isFinite(r[k]) && r[k] > 0, `${k} = ${r[k]}`);
  }
  t.log(`fence wake p50 ${r.p50_us} µs p99 ${r.p99_us} µs; raw p50 ${r.raw_p50_us} µs p99 ${r.raw_p99_us} µs; ratio ${r.ratio_p50}`);
});

model("the machine's fence table: a process signals a fence through it; a leaked fence is in the shutdown report", async (t) => {
  const m = await bootChecked(t);
  let leaked: DmaFence | null = null;
  let down = false;
  try {
    attachFenceTable(await fenceTable(m));
    const f = dmaFenceInit(mockOps, dmaFenceContextAlloc(1), 1);
    try {
      const p = await m.spawn(new URL('./fixtures/fence-proc.js', import.meta.url), { name: 'fencer', kernelFences: true });
      t.is(await p.call<number>('signalFence', fenceHandle(f)), 0);
      t.is(dmaFenceWaitTimeout(f, false, 5000), 5000, 'already signaled by the process');
    } finally {
      dmaFencePut(f);
    }
    leaked = dmaFenceInit(mockOps, dmaFenceContextAlloc(1), 7);
    down = true;
    const report = await m.shutdown({ quiet: true });
    t.deepEqual(
      report.leaks.map((l) => `${l.kind}: ${l.what}`),
      [`dma_fence: fence mock:mock ctx ${leaked.context} seq 7 unsignaled refcount 1`],
    );
    t.deepEqual(report.oopses, []);
  } finally {
    dmaFencePut(leaked);
    if (!down) await m.shutdown({ quiet: true });
    attachFenceTable(table);
  }
});
