/**
 * Port of drivers/dma-buf/st-dma-fence-unwrap.c (selftest 3, "dma_fence_unwrap"): the kernel's subtests in order,
 * then model-specific cases ("model:") for merging edge cases and dma_fence_array signalling across workers.
 *
 * Differences from the C file, on purpose: references the C tests leak (a1 and c2 in unwrap_merge_order, the stub
 * passed to the merge in unwrap_merge_complex) are put here, since this port checks for leaks after every case;
 * and "Unexpected order!", only printed by the C test, fails the case.
 */
import type { ExecutionContext } from 'ava';
import {
  type DmaFence,
  DmaFenceUnwrap,
  createAndAttachFenceTable,
  dmaFenceArrayCreate,
  dmaFenceChainInit,
  dmaFenceContextAlloc,
  dmaFenceEnableSwSignaling,
  dmaFenceGet,
  dmaFenceGetStatus,
  dmaFenceGetStub,
  dmaFenceInit,
  dmaFenceIsSignaled,
  dmaFencePut,
  dmaFenceSetError,
  dmaFenceSignal,
  dmaFenceSignalTimestamp,
  dmaFenceTimestamp,
  dmaFenceUnwrapForEach,
  dmaFenceUnwrapMerge,
  dmaFenceDedupArray,
  dmaFenceIsStub,
  dmaFenceWaitTimeout,
  fenceHandle,
  toDmaFenceArray,
} from '../src/fence/index.js';
import { setWarningSink, takeWarnings } from '../src/bug.js';
import { PENDING_ERROR } from '../src/fence/table.js';
import { E } from '../src/uapi/errno.js';
import { fenceSuite, msleep, startFenceWorker, type WorkerResult } from './fence-harness.js';

const { sab: table } = createAndAttachFenceTable({ slots: 4096 });
setWarningSink(() => {});

const mockOps = { driverName: 'mock', timelineName: 'mock' };
const __mockFence = (context: number, seqno: number): DmaFence => dmaFenceInit(mockOps, context, seqno);
/** mock_fence(): a fence on a new context, seqno 1. */
const mockFence = (): DmaFence => __mockFence(dmaFenceContextAlloc(1), 1);
/** mock_array(n, ...): takes over the references passed. */
const mockArray = (...fences: DmaFence[]): DmaFence =>
  dmaFenceArrayCreate(fences.length, fences, dmaFenceContextAlloc(1), 1, false);
/** mock_chain(prev, fence): takes over the references passed. */
const mockChain = (prev: DmaFence | null, fence: DmaFence): DmaFence => dmaFenceChainInit(prev, fence, 1);

const { subtest, model } = fenceSuite('dma_fence_unwrap', table);

/** Tracks which of the expected fences an unwrap visits (the C tests NULL their pointers as they go). */
function expectEach(t: ExecutionContext, head: DmaFence, expected: DmaFence[]): DmaFence[] {
  const left = [...expected];
  const order: DmaFence[] = [];
  for (const fence of dmaFenceUnwrapForEach(head, new DmaFenceUnwrap())) {
    const i = left.indexOf(fence);
    if (i < 0) t.fail('Unexpected fence!');
    else left.splice(i, 1);
    order.push(fence);
  }
  t.is(left.length, 0, 'Not all fences seen!');
  return order;
}

subtest(1, 'sanitycheck', (t) => {
  const f = mockFence();
  dmaFenceEnableSwSignaling(f);
  const array = mockArray(f);
  const chain = mockChain(null, array);
  dmaFencePut(chain);
  t.pass();
});

subtest(2, 'unwrap_array', (t) => {
  const f1 = mockFence();
  dmaFenceEnableSwSignaling(f1);
  const f2 = mockFence();
  dmaFenceEnableSwSignaling(f2);
  const array = mockArray(f1, f2);
  expectEach(t, array, [f1, f2]);
  dmaFencePut(array);
});

subtest(3, 'unwrap_chain', (t) => {
  const f1 = mockFence();
  dmaFenceEnableSwSignaling(f1);
  const f2 = mockFence();
  dmaFenceEnableSwSignaling(f2);
  const chain = mockChain(f1, f2);
  expectEach(t, chain, [f1, f2]);
  dmaFencePut(chain);
});

subtest(4, 'unwrap_chain_array', (t) => {
  const f1 = mockFence();
  dmaFenceEnableSwSignaling(f1);
  const f2 = mockFence();
  dmaFenceEnableSwSignaling(f2);
  const array = mockArray(f1, f2);
  const chain = mockChain(null, array);
  expectEach(t, chain, [f1, f2]);
  dmaFencePut(chain);
});

subtest(5, 'unwrap_merge', (t) => {
  const f1 = mockFence();
  dmaFenceEnableSwSignaling(f1);
  const f2 = mockFence();
  dmaFenceEnableSwSignaling(f2);
  const f3 = dmaFenceUnwrapMerge(f1, f2);
  t.truthy(f3);
  expectEach(t, f3!, [f1, f2]);
  dmaFencePut(f3);
  dmaFencePut(f2);
  dmaFencePut(f1);
});

subtest(6, 'unwrap_merge_duplicate', (t) => {
  const f1 = mockFence();
  dmaFenceEnableSwSignaling(f1);
  const f2 = dmaFenceUnwrapMerge(f1, f1);
  t.truthy(f2);
  expectEach(t, f2!, [f1]);
  dmaFencePut(f2);
  dmaFencePut(f1);
});

subtest(7, 'unwrap_merge_seqno', (t) => {
  const ctx = [dmaFenceContextAlloc(1), dmaFenceContextAlloc(1)];
  const f1 = __mockFence(ctx[1]!, 1);
  dmaFenceEnableSwSignaling(f1);
  const f2 = __mockFence(ctx[1]!, 2);
  dmaFenceEnableSwSignaling(f2);
  const f3 = __mockFence(ctx[0]!, 1);
  dmaFenceEnableSwSignaling(f3);
  const f4 = dmaFenceUnwrapMerge(f1, f2, f3);
  t.truthy(f4);
  // f3 (context 0) first, then f2 (the later of context 1); f1 is dropped.
  t.deepEqual(expectEach(t, f4!, [f3, f2]), [f3, f2], 'Unexpected fence!');
  for (const f of [f4, f3, f2, f1]) dmaFencePut(f);
});

subtest(8, 'unwrap_merge_order', (t) => {
  const f1 = mockFence();
  dmaFenceEnableSwSignaling(f1);
  const f2 = mockFence();
  dmaFenceEnableSwSignaling(f2);
  const a1 = mockArray(f1, f2);
  const c1 = mockChain(null, dmaFenceGet(f1));
  const c2 = mockChain(c1, dmaFenceGet(f2));
  // The fences in the chain are the same as in a1 but in opposite order; the merge must handle that.
  const a2 = dmaFenceUnwrapMerge(a1, c2);
  t.truthy(a2);
  const order = expectEach(t, a2!, [f1, f2]);
  t.deepEqual(order, [f1, f2], 'Unexpected order!');
  dmaFencePut(a2);
  dmaFencePut(c2);
  dmaFencePut(a1);
});

subtest(9, 'unwrap_merge_complex', (t) => {
  const f1 = mockFence();
  dmaFenceEnableSwSignaling(f1);
  const f2 = mockFence();
  dmaFenceEnableSwSignaling(f2);
  const f3 = dmaFenceUnwrapMerge(f1, f2)!;
  // The resulting array has the fences in reverse.
  const f4 = mockArray(dmaFenceGet(f2), dmaFenceGet(f1));
  // Signaled fences should be filtered, the two arrays merged.
  const stub = dmaFenceGetStub();
  const f5 = dmaFenceUnwrapMerge(f3, f4, stub);
  t.truthy(f5);
  expectEach(t, f5!, [f1, f2]);
  for (const f of [f5, stub, f4, f3, f2, f1]) dmaFencePut(f);
});

subtest(10, 'unwrap_merge_complex_seqno', (t) => {
  const ctx = [dmaFenceContextAlloc(1), dmaFenceContextAlloc(1)];
  const f1 = __mockFence(ctx[0]!, 2);
  dmaFenceEnableSwSignaling(f1);
  const f2 = __mockFence(ctx[1]!, 1);
  dmaFenceEnableSwSignaling(f2);
  const f3 = __mockFence(ctx[0]!, 1);
  dmaFenceEnableSwSignaling(f3);
  const f4 = __mockFence(ctx[1]!, 2);
  dmaFenceEnableSwSignaling(f4);
  const f5 = mockArray(dmaFenceGet(f1), dmaFenceGet(f2));
  const f6 = mockArray(dmaFenceGet(f3), dmaFenceGet(f4));
  const f7 = dmaFenceUnwrapMerge(f5, f6);
  t.truthy(f7);
  t.deepEqual(expectEach(t, f7!, [f1, f4]), [f1, f4], 'Unexpected fence!');
  for (const f of [f7, f6, f5, f4, f3, f2, f1]) dmaFencePut(f);
});

// ---- model-specific cases -------------------------------------------------------------------------------------------

model('merge: nothing pending gives a private stub at the latest timestamp; one pending gives itself', (t) => {
  const a = mockFence();
  const b = mockFence();
  dmaFenceSignalTimestamp(a, 1000);
  dmaFenceSignalTimestamp(b, 5000);
  const s = dmaFenceUnwrapMerge(a, b)!;
  t.true(dmaFenceIsStub(s));
  t.not(s, dmaFenceGetStubNoRef(), 'a private stub, not the global one');
  t.is(s.context, 0);
  t.is(dmaFenceGetStatus(s), 1);
  t.is(dmaFenceTimestamp(s), 5000);
  const c = mockFence();
  const one = dmaFenceUnwrapMerge(a, c, b);
  t.is(one, c, 'the single unsignaled fence itself, with a new reference');
  t.is(c.refcount, 2);
  for (const f of [one, s, c, b, a]) dmaFencePut(f);
});

/** The global stub without keeping a reference (for identity comparisons). */
function dmaFenceGetStubNoRef(): DmaFence {
  const s = dmaFenceGetStub();
  dmaFencePut(s);
  return s;
}

model('merge keeps the later seqno per context with 32-bit wrap; dedup_array sorts by context', (t) => {
  const ctx = dmaFenceContextAlloc(1);
  const old = __mockFence(ctx, 0xfffffffe);
  const wrapped = __mockFence(ctx, 3);
  const other = mockFence();
  const m = dmaFenceUnwrapMerge(old, other, wrapped)!;
  const order = expectEach(t, m, [wrapped, other]);
  t.deepEqual(order, [wrapped, other], 'the earlier context first, the wrapped (later) seqno kept');
  const arr = [dmaFenceGet(other), dmaFenceGet(old), dmaFenceGet(wrapped)];
  t.is(dmaFenceDedupArray(arr), 2);
  t.deepEqual(arr, [wrapped, other]);
  for (const f of [...arr, m, old, wrapped, other]) dmaFencePut(f);
});

model('array (all): signals after its last component, first error wins, timestamp of the last', (t) => {
  const f = [mockFence(), mockFence(), mockFence()];
  const array = mockArray(...f.map((x) => dmaFenceGet(x)));
  t.is(array.error, PENDING_ERROR, 'PENDING_ERROR until signaled');
  t.is(dmaFenceGetStatus(array), 0);
  t.is(array.driverName, 'dma_fence_array');
  t.is(array.timelineName, 'unbound');
  dmaFenceSetError(f[2]!, -E.EIO);
  dmaFenceSignalTimestamp(f[2]!, 100);
  dmaFenceSetError(f[0]!, -E.ENOMEM);
  dmaFenceSignalTimestamp(f[0]!, 200);
  t.false(dmaFenceIsSignaled(array));
  dmaFenceSignalTimestamp(f[1]!, 300);
  t.true(dmaFenceIsSignaled(array));
  t.is(dmaFenceGetStatus(array), -E.EIO, 'the error of the component that signaled first');
  t.is(dmaFenceTimestamp(array), 300);
  for (const x of [array, ...f]) dmaFencePut(x);
});

model('array (signal on any): waited for across several words, from another worker', async (t) => {
  const f = [mockFence(), mockFence(), mockFence()];
  const any = dmaFenceArrayCreate(3, f.map((x) => dmaFenceGet(x)), dmaFenceContextAlloc(1), 1, true);
  t.true(toDmaFenceArray(any)!.signalOnAny);
  const w = startFenceWorker<WorkerResult & { ret: number; status: boolean }>('timedWait', table, {
    fence: fenceHandle(any),
    timeout: 10_000,
  });
  await w.ready;
  await msleep(5);
  dmaFenceSetError(f[1]!, -E.ETIME);
  dmaFenceSignal(f[1]!);
  const r = await w.done;
  t.true(r.ret > 0, 'woken through its doorbell when one component signaled');
  t.true(r.status);
  t.is(dmaFenceGetStatus(any), -E.ETIME);
  t.deepEqual(r.warnings, []);
  for (const x of f) {
    dmaFenceSignal(x);
    dmaFencePut(x);
  }
  dmaFencePut(any);
});

model('array (all) with 40 components (extension slots) evaluated from another worker', async (t) => {
  const f = Array.from({ length: 40 }, () => mockFence());
  const array = mockArray(...f.map((x) => dmaFenceGet(x)));
  t.is(toDmaFenceArray(array)!.numFences, 40);
  t.deepEqual(toDmaFenceArray(array)!.fences, f);
  const w = startFenceWorker<WorkerResult & { rets: number[] }>('signaller', table, {
    fences: f.map(fenceHandle),
    delayMs: 2,
  });
  await w.ready;
  t.true(dmaFenceWaitTimeout(array, false, 10_000) > 0, 'the wait followed the first pending component each time');
  t.deepEqual((await w.done).rets, f.map(() => 0));
  t.is(dmaFenceGetStatus(array), 1);
  for (const x of [array, ...f]) dmaFencePut(x);
});

model('arrays warn about containers inside them and about being empty', (t) => {
  const f = mockFence();
  const inner = mockArray(dmaFenceGet(f));
  const outer = mockArray(dmaFenceGet(inner));
  t.deepEqual(takeWarnings().length, 1, 'a container inside an array');
  const empty = dmaFenceArrayCreate(0, [], dmaFenceContextAlloc(1), 1, false);
  t.is(takeWarnings().length, 1);
  t.true(dmaFenceIsSignaled(empty), 'an empty "all" array is complete at once');
  dmaFenceSignal(f);
  t.true(dmaFenceIsSignaled(outer));
  for (const x of [outer, inner, empty, f]) dmaFencePut(x);
});
