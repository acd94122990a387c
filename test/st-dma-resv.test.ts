/**
 * Port of drivers/dma-buf/st-dma-resv.c (selftest 4, "dma_resv"): the five subtests run once per usage class,
 * KERNEL to BOOKKEEP, in the kernel's order; then model-specific cases ("model:") for the slot-replacement rule,
 * reservations, queries and the shared lock across workers.
 *
 * Where the C file only prints ("get_fences returned unexpected fence", "No restart flag" without setting an
 * error), this port fails the case.
 */
import type { ExecutionContext } from 'ava';
import {
  type DmaFence,
  createAndAttachFenceTable,
  dmaFenceContextAlloc,
  dmaFenceEnableSwSignaling,
  dmaFenceInit,
  dmaFenceIsSignaled,
  dmaFencePut,
  dmaFenceSignal,
  fenceHandle,
  toDmaFenceArray,
} from '../src/fence/index.js';
import {
  DMA_RESV_USAGE_BOOKKEEP,
  DMA_RESV_USAGE_KERNEL,
  DMA_RESV_USAGE_NAMES,
  DMA_RESV_USAGE_READ,
  DMA_RESV_USAGE_WRITE,
  DmaResv,
  DmaResvIter,
  DmaResvList,
  type DmaResvUsage,
  dmaResvAddFence,
  dmaResvCopyFences,
  dmaResvDescribe,
  dmaResvEntries,
  dmaResvFini,
  dmaResvForEachFence,
  dmaResvForEachFenceUnlocked,
  dmaResvGetFences,
  dmaResvGetSingleton,
  dmaResvHandle,
  dmaResvInit,
  dmaResvIterBegin,
  dmaResvIterEnd,
  dmaResvIterIsRestarted,
  dmaResvIterUsage,
  dmaResvLock,
  dmaResvReplaceFences,
  dmaResvReserveFences,
  dmaResvTestSignaled,
  dmaResvTrylock,
  dmaResvUnlock,
  dmaResvUsageRw,
  dmaResvWaitAsync,
  dmaResvWaitTimeout,
  wwAcquireInit,
} from '../src/fence/dma-resv.js';
import { setWarningSink, takeWarnings } from '../src/bug.js';
import { E } from '../src/uapi/errno.js';
import { fenceCase, fenceSuite, joinAll, msleep, startFenceWorker, type WorkerResult } from './fence-harness.js';

const { sab: table } = createAndAttachFenceTable({ slots: 4096 });
setWarningSink(() => {});

const fenceOps = { driverName: 'selftest', timelineName: 'selftest' };
/** alloc_fence(): context 0, seqno 0, as the C test. */
const allocFence = (): DmaFence => dmaFenceInit(fenceOps, 0, 0);

const USAGES: DmaResvUsage[] = [DMA_RESV_USAGE_KERNEL, DMA_RESV_USAGE_WRITE, DMA_RESV_USAGE_READ, DMA_RESV_USAGE_BOOKKEEP];

type Subtest = (t: ExecutionContext, usage: DmaResvUsage) => void;

const sanitycheck: Subtest = (t) => {
  const f = allocFence();
  dmaFenceEnableSwSignaling(f);
  dmaFenceSignal(f);
  dmaFencePut(f);
  const resv = dmaResvInit();
  const r = dmaResvLock(resv, null);
  t.is(r, 0, 'Resv locking failed');
  if (!r) dmaResvUnlock(resv);
  dmaResvFini(resv);
};

const testSignaling: Subtest = (t, usage) => {
  const f = allocFence();
  dmaFenceEnableSwSignaling(f);
  const resv = dmaResvInit();
  try {
    t.is(dmaResvLock(resv, null), 0, 'Resv locking failed');
    try {
      t.is(dmaResvReserveFences(resv, 1), 0, 'Resv shared slot allocation failed');
      dmaResvAddFence(resv, f, usage);
      t.false(dmaResvTestSignaled(resv, usage), 'Resv unexpectedly signaled');
      dmaFenceSignal(f);
      t.true(dmaResvTestSignaled(resv, usage), 'Resv not reporting signaled');
    } finally {
      dmaResvUnlock(resv);
    }
  } finally {
    dmaResvFini(resv);
    dmaFencePut(f);
  }
};

const testForEach: Subtest = (t, usage) => {
  const f = allocFence();
  dmaFenceEnableSwSignaling(f);
  const resv = dmaResvInit();
  try {
    t.is(dmaResvLock(resv, null), 0, 'Resv locking failed');
    try {
      t.is(dmaResvReserveFences(resv, 1), 0, 'Resv shared slot allocation failed');
      dmaResvAddFence(resv, f, usage);
      let r = -E.ENOENT;
      const cursor = new DmaResvIter(resv, usage);
      for (const fence of dmaResvForEachFence(cursor, resv, usage)) {
        if (!r) {
          t.fail('More than one fence found');
          break;
        }
        t.is(fence, f, 'Unexpected fence');
        t.is(dmaResvIterUsage(cursor), usage, 'Unexpected fence usage');
        r = 0;
      }
      t.is(r, 0, 'No fence found');
      dmaFenceSignal(f);
    } finally {
      dmaResvUnlock(resv);
    }
  } finally {
    dmaResvFini(resv);
    dmaFencePut(f);
  }
};

const testForEachUnlocked: Subtest = (t, usage) => {
  const f = allocFence();
  dmaFenceEnableSwSignaling(f);
  const resv = dmaResvInit();
  try {
    t.is(dmaResvLock(resv, null), 0, 'Resv locking failed');
    t.is(dmaResvReserveFences(resv, 1), 0, 'Resv shared slot allocation failed');
    dmaResvAddFence(resv, f, usage);
    dmaResvUnlock(resv);
    let r = -E.ENOENT;
    const cursor = new DmaResvIter(resv, usage);
    dmaResvIterBegin(cursor, resv, usage);
    try {
      for (const fence of dmaResvForEachFenceUnlocked(cursor)) {
        if (!r) {
          t.fail('More than one fence found');
          r = -E.EINVAL;
          break;
        }
        if (!dmaResvIterIsRestarted(cursor)) {
          t.fail('No restart flag');
          break;
        }
        t.is(fence, f, 'Unexpected fence');
        t.is(dmaResvIterUsage(cursor), usage, 'Unexpected fence usage');
        // We use r as state here.
        if (r === -E.ENOENT) {
          r = -E.EINVAL;
          // That should trigger a restart.
          cursor.fences = new DmaResvList(0);
        } else if (r === -E.EINVAL) {
          r = 0;
        }
      }
      t.is(r, 0, 'No fence found');
    } finally {
      dmaResvIterEnd(cursor);
      dmaFenceSignal(f);
    }
  } finally {
    dmaResvFini(resv);
    dmaFencePut(f);
  }
};

const testGetFences: Subtest = (t, usage) => {
  const f = allocFence();
  dmaFenceEnableSwSignaling(f);
  const resv = dmaResvInit();
  const out = { numFences: 0, fences: [] as DmaFence[] };
  try {
    t.is(dmaResvLock(resv, null), 0, 'Resv locking failed');
    t.is(dmaResvReserveFences(resv, 1), 0, 'Resv shared slot allocation failed');
    dmaResvAddFence(resv, f, usage);
    dmaResvUnlock(resv);
    t.is(dmaResvGetFences(resv, usage, out), 0, 'get_fences failed');
    t.true(out.numFences === 1 && out.fences[0] === f, 'get_fences returned unexpected fence');
    dmaFenceSignal(f);
  } finally {
    for (let i = out.numFences; i--; ) dmaFencePut(out.fences[i]!);
    dmaResvFini(resv);
    dmaFencePut(f);
  }
};

const SUBTESTS: [string, Subtest][] = [
  ['sanitycheck', sanitycheck],
  ['test_signaling', testSignaling],
  ['test_for_each', testForEach],
  ['test_for_each_unlocked', testForEachUnlocked],
  ['test_get_fences', testGetFences],
];

for (const usage of USAGES) {
  for (const [i, [name, fn]] of SUBTESTS.entries()) {
    fenceCase(`dma_resv ${i + 1}: ${name} (usage ${usage} ${DMA_RESV_USAGE_NAMES[usage]})`, table, (t) => fn(t, usage));
  }
}

// ---- model-specific cases -------------------------------------------------------------------------------------------

const { model } = fenceSuite('dma_resv', table);

/** A locked resv with room for `n` fences. */
function lockedResv(n: number): DmaResv {
  const resv = dmaResvInit();
  dmaResvLock(resv, null);
  dmaResvReserveFences(resv, n);
  return resv;
}

const entries = (resv: DmaResv): string[] =>
  dmaResvEntries(resv).map((e) => `${e.fence.context}:${e.fence.seqno}:${DMA_RESV_USAGE_NAMES[e.usage]}`);

model('usage_rw: a write waits for READ (everything), a read for WRITE', (t) => {
  t.is(dmaResvUsageRw(true), DMA_RESV_USAGE_READ);
  t.is(dmaResvUsageRw(false), DMA_RESV_USAGE_WRITE);
});

model('add_fence: the slot-replacement rule', (t) => {
  const ctx = dmaFenceContextAlloc(2);
  const a1 = dmaFenceInit(fenceOps, ctx, 1);
  const a2 = dmaFenceInit(fenceOps, ctx, 2);
  const a3 = dmaFenceInit(fenceOps, ctx, 3);
  const b1 = dmaFenceInit(fenceOps, ctx + 1, 1);
  const resv = lockedResv(4);
  dmaResvAddFence(resv, a1, DMA_RESV_USAGE_READ);
  dmaResvAddFence(resv, a2, DMA_RESV_USAGE_READ); // same context, later, old usage >= new: replaces
  t.deepEqual(entries(resv), [`${ctx}:2:read`]);
  t.is(a1.refcount, 1, 'the replaced fence was put');
  dmaResvAddFence(resv, a2, DMA_RESV_USAGE_WRITE); // same fence, stronger usage: replaces (later-or-same)
  t.deepEqual(entries(resv), [`${ctx}:2:write`]);
  dmaResvAddFence(resv, a3, DMA_RESV_USAGE_READ); // weaker usage than the WRITE entry: appended, two entries
  t.deepEqual(entries(resv), [`${ctx}:2:write`, `${ctx}:3:read`]);
  dmaResvAddFence(resv, a1, DMA_RESV_USAGE_BOOKKEEP); // earlier seqno: neither entry replaced
  t.deepEqual(entries(resv), [`${ctx}:2:write`, `${ctx}:3:read`, `${ctx}:1:bookkeep`]);
  dmaFenceSignal(a2);
  dmaResvAddFence(resv, b1, DMA_RESV_USAGE_KERNEL); // any signaled slot is reused
  t.deepEqual(entries(resv), [`${ctx + 1}:1:kernel`, `${ctx}:3:read`, `${ctx}:1:bookkeep`]);
  dmaResvUnlock(resv);
  dmaResvFini(resv);
  for (const f of [a1, a2, a3, b1]) {
    dmaFenceSignal(f);
    dmaFencePut(f);
  }
});

model('reserve_fences(0) is -EINVAL; adding without room is a BUG; unlocking forgets reservations', (t) => {
  const resv = dmaResvInit();
  dmaResvLock(resv, null);
  t.is(dmaResvReserveFences(resv, 0), -E.EINVAL);
  t.is(takeWarnings().length, 1);
  const f = allocFence();
  t.throws(() => dmaResvAddFence(resv, f, DMA_RESV_USAGE_READ), { message: /BUG: dma_resv_add_fence without/ });
  t.is(dmaResvReserveFences(resv, 1), 0);
  t.is(resv.fences!.maxFences, 5, 'max(4, 1) rounded up by the kmalloc bucket (64 bytes)');
  dmaResvUnlock(resv); // CONFIG_DEBUG_MUTEXES: max_fences = num_fences
  dmaResvLock(resv, null);
  t.throws(() => dmaResvAddFence(resv, f, DMA_RESV_USAGE_READ), { message: /BUG: .*without a reserved slot/ });
  dmaResvUnlock(resv);
  dmaResvFini(resv);
  dmaFencePut(f);
});

model('reserve_fences compacts: signaled fences are dropped, pending ones keep their order', (t) => {
  const ctx = dmaFenceContextAlloc(3);
  const f = [0, 1, 2].map((i) => dmaFenceInit(fenceOps, ctx + i, 1));
  const resv = lockedResv(3);
  for (const x of f) dmaResvAddFence(resv, x, DMA_RESV_USAGE_READ);
  dmaFenceSignal(f[1]!);
  t.is(dmaResvReserveFences(resv, 8), 0);
  t.deepEqual(entries(resv), [`${ctx}:1:read`, `${ctx + 2}:1:read`]);
  t.is(f[1]!.refcount, 1);
  dmaResvUnlock(resv);
  dmaResvFini(resv);
  for (const x of f) {
    dmaFenceSignal(x);
    dmaFencePut(x);
  }
});

model('queries by usage: test_signaled, get_fences, get_singleton, describe (BOOKKEEP hidden)', (t) => {
  const ctx = dmaFenceContextAlloc(3);
  const w = dmaFenceInit(fenceOps, ctx, 7);
  const r = dmaFenceInit(fenceOps, ctx + 1, 8);
  const bk = dmaFenceInit(fenceOps, ctx + 2, 9);
  const resv = lockedResv(3);
  dmaResvAddFence(resv, w, DMA_RESV_USAGE_WRITE);
  dmaResvAddFence(resv, r, DMA_RESV_USAGE_READ);
  dmaResvAddFence(resv, bk, DMA_RESV_USAGE_BOOKKEEP);
  t.is(
    dmaResvDescribe(resv),
    '\twrite fence:selftest selftest seq 7 unsignalled\n\tread fence:selftest selftest seq 8 unsignalled\n',
  );
  t.true(dmaResvTestSignaled(resv, DMA_RESV_USAGE_KERNEL));
  t.false(dmaResvTestSignaled(resv, DMA_RESV_USAGE_WRITE));
  const out = { numFences: 0, fences: [] as DmaFence[] };
  dmaResvGetFences(resv, DMA_RESV_USAGE_READ, out);
  t.deepEqual(out.fences, [w, r]);
  for (const x of out.fences) dmaFencePut(x);
  const single = { fence: null as DmaFence | null };
  dmaResvGetSingleton(resv, DMA_RESV_USAGE_KERNEL, single);
  t.is(single.fence, null);
  dmaResvGetSingleton(resv, DMA_RESV_USAGE_WRITE, single);
  t.is(single.fence, w);
  dmaFencePut(single.fence);
  dmaResvGetSingleton(resv, DMA_RESV_USAGE_BOOKKEEP, single);
  t.deepEqual(toDmaFenceArray(single.fence)?.fences, [w, r, bk]);
  dmaFencePut(single.fence);
  dmaFenceSignal(w);
  t.true(dmaResvTestSignaled(resv, DMA_RESV_USAGE_WRITE));
  t.false(dmaResvTestSignaled(resv, DMA_RESV_USAGE_READ));
  dmaResvUnlock(resv);
  dmaResvFini(resv);
  for (const x of [w, r, bk]) {
    dmaFenceSignal(x);
    dmaFencePut(x);
  }
});

model('copy_fences snapshots the pending fences; replace_fences swaps a context', (t) => {
  const ctx = dmaFenceContextAlloc(2);
  const a = dmaFenceInit(fenceOps, ctx, 1);
  const b = dmaFenceInit(fenceOps, ctx + 1, 1);
  const done = dmaFenceInit(fenceOps, ctx + 1, 2);
  const src = lockedResv(3);
  dmaResvAddFence(src, a, DMA_RESV_USAGE_WRITE);
  dmaResvAddFence(src, b, DMA_RESV_USAGE_READ);
  const dst = lockedResv(1);
  dmaResvAddFence(dst, done, DMA_RESV_USAGE_KERNEL);
  t.is(dmaResvCopyFences(dst, src), 0);
  t.deepEqual(entries(dst), [`${ctx}:1:write`, `${ctx + 1}:1:read`]);
  t.is(done.refcount, 1, "dst's old fences were put");
  dmaResvReplaceFences(src, ctx + 1, done, DMA_RESV_USAGE_BOOKKEEP);
  t.deepEqual(entries(src), [`${ctx}:1:write`, `${ctx + 1}:2:bookkeep`]);
  for (const r of [src, dst]) {
    dmaResvUnlock(r);
    dmaResvFini(r);
  }
  for (const x of [a, b, done]) {
    dmaFenceSignal(x);
    dmaFencePut(x);
  }
});

model('wait_timeout(usage) waits for the right fences, signaled from another worker; the async wait too', async (t) => {
  const ctx = dmaFenceContextAlloc(2);
  const w = dmaFenceInit(fenceOps, ctx, 1);
  const bk = dmaFenceInit(fenceOps, ctx + 1, 1);
  const resv = lockedResv(2);
  dmaResvAddFence(resv, w, DMA_RESV_USAGE_WRITE);
  dmaResvAddFence(resv, bk, DMA_RESV_USAGE_BOOKKEEP);
  dmaResvUnlock(resv);
  t.is(dmaResvWaitTimeout(resv, DMA_RESV_USAGE_KERNEL, false, 0), 1, 'nothing of KERNEL usage');
  t.is(dmaResvWaitTimeout(resv, DMA_RESV_USAGE_WRITE, false, 0), 0);
  t.is(dmaResvWaitTimeout(resv, DMA_RESV_USAGE_READ, false, 2), 0, 'times out');
  const sig = startFenceWorker<WorkerResult & { rets: number[] }>('signaller', table, {
    fences: [fenceHandle(w)],
    delayMs: 5,
  });
  await sig.ready;
  t.true(dmaResvWaitTimeout(resv, DMA_RESV_USAGE_READ, true, 10_000) > 0, 'woken by the worker');
  await sig.done;
  t.is(await dmaResvWaitAsync(resv, DMA_RESV_USAGE_BOOKKEEP, 5), 0, 'the BOOKKEEP fence is still pending');
  dmaFenceSignal(bk);
  t.true((await dmaResvWaitAsync(resv, DMA_RESV_USAGE_BOOKKEEP, 100)) > 0);
  t.true(dmaIsAllSignaled([w, bk]));
  dmaResvFini(resv);
  dmaFencePut(w);
  dmaFencePut(bk);
});

const dmaIsAllSignaled = (fs: DmaFence[]): boolean => fs.every((f) => dmaFenceIsSignaled(f));

model('the lock: recursion is a BUG, a context relock is -EALREADY, trylock, foreign unlock is a BUG', (t) => {
  const resv = dmaResvInit();
  const ctx = wwAcquireInit();
  t.is(dmaResvLock(resv, ctx), 0);
  t.is(dmaResvLock(resv, ctx), -E.EALREADY);
  t.throws(() => dmaResvLock(resv, null), { message: /recursive dma_resv_lock/ });
  t.false(dmaResvTrylock(resv));
  dmaResvUnlock(resv);
  t.throws(() => dmaResvUnlock(resv), { message: /BUG: dma_resv_unlock/ });
  t.true(dmaResvTrylock(resv));
  dmaResvUnlock(resv);
  dmaResvAddFenceUnlockedWarns(t);
  dmaResvFini(resv);
});

function dmaResvAddFenceUnlockedWarns(t: ExecutionContext): void {
  const resv = dmaResvInit();
  dmaResvLock(resv, null);
  dmaResvReserveFences(resv, 1);
  dmaResvUnlock(resv);
  const f = allocFence();
  t.throws(() => dmaResvAddFence(resv, f, DMA_RESV_USAGE_READ));
  t.deepEqual(
    takeWarnings().map((w) => w.message),
    ['dma_resv_assert_held: reservation lock not held'],
    'adding unlocked warns as lockdep_assert_held does',
  );
  dmaResvFini(resv);
  dmaFencePut(f);
}

model('the lock is a shared mutex word: this thread and two workers never hold it at once', async (t) => {
  const resv = dmaResvInit();
  const counter = new SharedArrayBuffer(8);
  const n = 2000;
  const workers = [0, 1].map(() =>
    startFenceWorker<WorkerResult & { iterations: number }>('resvLockLoop', table, {
      resv: dmaResvHandle(resv),
      counter,
      n,
    }),
  );
  await Promise.all(workers.map((w) => w.ready));
  const c = new Int32Array(counter);
  for (let i = 0; i < n / 4; i++) {
    dmaResvLock(resv, null);
    const v = c[0]!;
    await Promise.resolve();
    c[0] = v + 1;
    dmaResvUnlock(resv);
    if (i % 50 === 0) await msleep(0);
  }
  const rs = await joinAll(workers);
  t.is(Atomics.load(c, 0), 2 * n + n / 4, 'no increment lost: mutual exclusion held');
  for (const r of rs) t.deepEqual(r.warnings, []);
  dmaResvFini(resv);
});
