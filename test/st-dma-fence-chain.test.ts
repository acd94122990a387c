/**
 * Port of drivers/dma-buf/st-dma-fence-chain.c (selftest 2, "dma_fence_chain"): the kernel's subtests in order,
 * find_race and the wait_* cases across real worker threads, then model-specific cases ("model:").
 */
import type { ExecutionContext } from 'ava';
import { availableParallelism } from 'node:os';
import {
  type DmaFence,
  DmaFenceCb,
  createAndAttachFenceTable,
  dmaFenceAddCallback,
  dmaFenceChainFindSeqno,
  dmaFenceChainForEach,
  dmaFenceChainInit,
  dmaFenceContextAlloc,
  dmaFenceGet,
  dmaFenceGetStatus,
  dmaFenceInit,
  dmaFenceIsContainer,
  dmaFenceIsSignaled,
  dmaFencePut,
  dmaFenceSetError,
  dmaFenceSignal,
  dmaFenceTimestamp,
  dmaFenceWaitTimeout,
  fenceHandle,
  toDmaFenceChain,
} from '../src/fence/index.js';
import { setWarningSink } from '../src/bug.js';
import { Prng, chooseSeed } from '../src/shm/prng.js';
import { ktimeGetNs } from '../src/shm/clock.js';
import { E } from '../src/uapi/errno.js';
import { fenceSuite, joinAll, msleep, startFenceWorker, type WorkerResult } from './fence-harness.js';

const CHAIN_SZ = 4 << 10;
/** How long find_race runs (the C test: 5 s). */
const FIND_RACE_MS = Number(process.env['DMABUF_SIM_FIND_RACE_MS'] ?? 1000);

const { sab: table } = createAndAttachFenceTable({ slots: 4 * CHAIN_SZ + 1024 });
setWarningSink(() => {});

const mockOps = { driverName: 'mock', timelineName: 'mock' };
const mockFence = (): DmaFence => dmaFenceInit(mockOps, 0, 0);
/** mock_chain(prev, fence, seqno): takes new references to prev and fence. */
const mockChain = (prev: DmaFence | null, fence: DmaFence, seqno: number | bigint): DmaFence =>
  dmaFenceChainInit(dmaFenceGet(prev), dmaFenceGet(fence), seqno);

interface FenceChains {
  chainLength: number;
  fences: DmaFence[];
  chains: DmaFence[];
  tail: DmaFence | null;
}

const seqnoInc = (i: number): number => i + 1;
const seqnoInc2 = (i: number): number => 2 * i + 2;

function fenceChainsInit(count: number, seqnoFn: (i: number) => number): FenceChains {
  const fc: FenceChains = { chainLength: 0, fences: [], chains: [], tail: null };
  for (let i = 0; i < count; i++) {
    fc.fences[i] = mockFence();
    fc.chains[i] = mockChain(fc.tail, fc.fences[i]!, seqnoFn(i));
    fc.tail = fc.chains[i]!;
  }
  fc.chainLength = count;
  return fc;
}

function fenceChainsFini(fc: FenceChains): void {
  for (let i = 0; i < fc.chainLength; i++) {
    dmaFenceSignal(fc.fences[i]!);
    dmaFencePut(fc.fences[i]!);
  }
  for (let i = 0; i < fc.chainLength; i++) dmaFencePut(fc.chains[i]!);
}

const { subtest, model } = fenceSuite('dma_fence_chain', table);

subtest(1, 'sanitycheck', (t) => {
  const f = mockFence();
  const chain = mockChain(null, f, 1);
  dmaFenceSignal(f);
  dmaFencePut(f);
  dmaFencePut(chain);
  t.pass();
});

subtest(2, 'find_seqno', (t) => {
  const fc = fenceChainsInit(64, seqnoInc);
  try {
    const box = { fence: dmaFenceGet(fc.tail) };
    let err = dmaFenceChainFindSeqno(box, 0);
    dmaFencePut(box.fence);
    t.is(err, 0, `Reported ${err} for find_seqno(0)!`);
    for (let i = 0; i < fc.chainLength; i++) {
      box.fence = dmaFenceGet(fc.tail);
      err = dmaFenceChainFindSeqno(box, i + 1);
      dmaFencePut(box.fence);
      t.is(err, 0, `Reported ${err} for find_seqno(${fc.chainLength + 1}:${i + 1})!`);
      t.is(box.fence, fc.chains[i]!, `Incorrect fence reported by find_seqno(${fc.chainLength + 1}:${i + 1})`);

      dmaFenceGet(box.fence);
      err = dmaFenceChainFindSeqno(box, i + 1);
      dmaFencePut(box.fence);
      t.is(err, 0, 'Error reported for finding self');
      t.is(box.fence, fc.chains[i]!, 'Incorrect fence reported by find self');

      dmaFenceGet(box.fence);
      err = dmaFenceChainFindSeqno(box, i + 2);
      dmaFencePut(box.fence);
      t.is(err, -E.EINVAL, `Error not reported for future fence: find_seqno(${i + 1}:${i + 2})!`);

      dmaFenceGet(box.fence);
      err = dmaFenceChainFindSeqno(box, i);
      dmaFencePut(box.fence);
      t.is(err, 0, 'Error reported for previous fence!');
      if (i > 0) t.is(box.fence, fc.chains[i - 1]!, `Incorrect fence reported by find_seqno(${i + 1}:${i})`);
    }
  } finally {
    fenceChainsFini(fc);
  }
});

subtest(3, 'find_signaled', (t) => {
  const fc = fenceChainsInit(2, seqnoInc);
  try {
    dmaFenceSignal(fc.fences[0]!);
    const box = { fence: dmaFenceGet(fc.tail) };
    const err = dmaFenceChainFindSeqno(box, 1);
    dmaFencePut(box.fence);
    t.is(err, 0, `Reported ${err} for find_seqno()!`);
    t.true(
      box.fence === null || box.fence === fc.chains[0],
      `Incorrect chain-fence.seqno:${box.fence?.seqno} reported for completed seqno:1`,
    );
  } finally {
    fenceChainsFini(fc);
  }
});

subtest(4, 'find_out_of_order', (t) => {
  const fc = fenceChainsInit(3, seqnoInc);
  try {
    dmaFenceSignal(fc.fences[1]!);
    const box = { fence: dmaFenceGet(fc.tail) };
    const err = dmaFenceChainFindSeqno(box, 2);
    dmaFencePut(box.fence);
    t.is(err, 0, `Reported ${err} for find_seqno()!`);
    // We signaled the middle fence (2) of the 1-2-3 chain: fence 1 is still pending, so that is what we get
    // (fence 2 being garbage collected during the traversal).
    t.is(box.fence, fc.chains[0]!, `Incorrect chain-fence.seqno:${box.fence?.seqno ?? 0} reported for completed seqno:2`);
  } finally {
    fenceChainsFini(fc);
  }
});

subtest(5, 'find_gap', (t) => {
  const fc = fenceChainsInit(64, seqnoInc2);
  try {
    for (let i = 0; i < fc.chainLength; i++) {
      const box = { fence: dmaFenceGet(fc.tail) };
      let err = dmaFenceChainFindSeqno(box, 2 * i + 1);
      dmaFencePut(box.fence);
      t.is(err, 0, `Reported ${err} for find_seqno(${fc.chainLength + 1}:${2 * i + 1})!`);
      t.is(
        box.fence,
        fc.chains[i]!,
        `Incorrect fence.seqno:${box.fence?.seqno} reported by find_seqno(${fc.chainLength + 1}:${2 * i + 1})`,
      );
      dmaFenceGet(box.fence);
      err = dmaFenceChainFindSeqno(box, 2 * i + 2);
      dmaFencePut(box.fence);
      t.is(err, 0, 'Error reported for finding self');
      t.is(box.fence, fc.chains[i]!, 'Incorrect fence reported by find self');
    }
  } finally {
    fenceChainsFini(fc);
  }
});

// One worker per CPU: find random seqnos (checking the link found really is the one that signals it) while
// signaling random fences, for FIND_RACE_MS; each worker's PRNG is seeded from the printed seed.
subtest(6, 'find_race', async (t) => {
  const seed = chooseSeed();
  t.log(`seed ${seed} (DMABUF_SIM_SEED to replay)`);
  const fc = fenceChainsInit(CHAIN_SZ, seqnoInc);
  try {
    const ctl = new SharedArrayBuffer(4);
    const ncpus = availableParallelism();
    const workers = Array.from({ length: ncpus }, (_, i) =>
      startFenceWorker<WorkerResult & { cycles: number }>(
        'findRace',
        table,
        {
          chains: fc.chains.map(fenceHandle),
          fences: fc.fences.map(fenceHandle),
          ctl,
          seed: (seed + i * 0x9e3779b9) >>> 0,
          maxIters: 10_000_000,
        },
        FIND_RACE_MS + 30_000,
      ),
    );
    await Promise.all(workers.map((w) => w.ready));
    await msleep(FIND_RACE_MS);
    Atomics.store(new Int32Array(ctl), 0, 1);
    let results: (WorkerResult & { cycles: number })[];
    try {
      results = await joinAll(workers);
    } catch (e) {
      t.log(`seed ${seed}`);
      throw e;
    }
    for (const r of results) t.deepEqual(r.warnings, []);
    let count = 0;
    for (let i = 0; i < fc.chainLength; i++) if (dmaFenceIsSignaled(fc.fences[i]!)) count++;
    t.log(`Completed ${count} cycles (${results.map((r) => r.cycles).join(' + ')} iterations)`);
    t.true(results.every((r) => r.cycles > 0), 'every worker made progress');
  } finally {
    fenceChainsFini(fc);
  }
});

subtest(7, 'signal_forward', (t) => {
  const fc = fenceChainsInit(64, seqnoInc);
  try {
    for (let i = 0; i < fc.chainLength; i++) {
      dmaFenceSignal(fc.fences[i]!);
      t.true(dmaFenceIsSignaled(fc.chains[i]!), `chain[${i}] not signaled!`);
      if (i + 1 < fc.chainLength) t.false(dmaFenceIsSignaled(fc.chains[i + 1]!), `chain[${i}] is signaled!`);
    }
  } finally {
    fenceChainsFini(fc);
  }
});

subtest(8, 'signal_backward', (t) => {
  const fc = fenceChainsInit(64, seqnoInc);
  try {
    for (let i = fc.chainLength; i--; ) {
      dmaFenceSignal(fc.fences[i]!);
      if (i > 0) t.false(dmaFenceIsSignaled(fc.chains[i]!), `chain[${i}] is signaled!`);
    }
    for (let i = 0; i < fc.chainLength; i++) t.true(dmaFenceIsSignaled(fc.chains[i]!), `chain[${i}] was not signaled!`);
  } finally {
    fenceChainsFini(fc);
  }
});

/** wait_forward / wait_backward / wait_random: a worker waits on the tail while this thread signals in `order`. */
async function waitChains(t: ExecutionContext, order: (fc: FenceChains) => void, seed?: number): Promise<void> {
  const fc = fenceChainsInit(CHAIN_SZ, seqnoInc);
  try {
    const w = startFenceWorker<WorkerResult & { ret: number; signaled: boolean }>('waitChain', table, {
      tail: fenceHandle(fc.tail!),
    });
    await w.ready; // yield_to(tsk): the waiter is about to sleep on the tail
    await msleep(2);
    order(fc);
    const r = await w.done.catch((e: unknown) => {
      if (seed !== undefined) t.log(`seed ${seed}`);
      throw e;
    });
    t.is(r.ret, 0);
    t.true(r.signaled, 'the tail is signaled once the wait returned');
    t.deepEqual(r.warnings, []);
  } finally {
    fenceChainsFini(fc);
  }
}

subtest(9, 'wait_forward', (t) =>
  waitChains(t, (fc) => {
    for (let i = 0; i < fc.chainLength; i++) dmaFenceSignal(fc.fences[i]!);
  }),
);

subtest(10, 'wait_backward', (t) =>
  waitChains(t, (fc) => {
    for (let i = fc.chainLength; i--; ) dmaFenceSignal(fc.fences[i]!);
  }),
);

subtest(11, 'wait_random', (t) => {
  const seed = chooseSeed();
  t.log(`seed ${seed} (DMABUF_SIM_SEED to replay)`);
  const prng = new Prng(seed);
  return waitChains(
    t,
    (fc) => {
      // randomise_fences: Fisher-Yates shuffle courtesy of Knuth (of the signal order only; fini still puts all).
      const order = [...fc.fences];
      let count = order.length;
      while (--count) {
        const swp = prng.below(count + 1);
        if (swp === count) continue;
        [order[count], order[swp]] = [order[swp]!, order[count]!];
      }
      for (const f of order) dmaFenceSignal(f);
    },
    seed,
  );
});

// ---- model-specific cases -------------------------------------------------------------------------------------------

model('chain_init: context reuse when the seqno moves forward, else a new context and seqno = max', (t) => {
  const f = [mockFence(), mockFence(), mockFence()];
  const c1 = mockChain(null, f[0]!, 5);
  const c2 = mockChain(c1, f[1]!, 7);
  const c3 = mockChain(c2, f[2]!, 3);
  const l2 = toDmaFenceChain(c2)!;
  const l3 = toDmaFenceChain(c3)!;
  t.is(c2.context, c1.context);
  t.is(l2.prevSeqno, 5n);
  t.not(c3.context, c2.context);
  t.is(c3.seqno, 7n, 'seqno raised to the previous link');
  t.is(l3.prevSeqno, 0n);
  t.true(dmaFenceIsContainer(c1));
  t.is(c1.driverName, 'dma_fence_chain');
  t.is(c1.timelineName, 'unbound');
  const big = mockChain(c2, f[0]!, 0x1_0000_0001n);
  t.is(big.context, c2.context, '64-bit seqnos: no 32-bit wrap');
  for (const x of [big, c3, c2, c1, ...f]) {
    dmaFenceSignal(x);
    dmaFencePut(x);
  }
});

model('a chain signals with no error (errors do not propagate) and a timestamp after its last link', (t) => {
  const a = mockFence();
  const b = mockFence();
  const c1 = mockChain(null, a, 1);
  const c2 = mockChain(c1, b, 2);
  dmaFenceSetError(a, -E.EIO);
  dmaFenceSignal(a);
  dmaFenceSignal(b);
  const t0 = Math.max(dmaFenceTimestamp(a), dmaFenceTimestamp(b));
  t.is(dmaFenceGetStatus(c2), 1);
  t.true(dmaFenceTimestamp(c2) >= t0 && dmaFenceTimestamp(c2) <= ktimeGetNs());
  for (const x of [c2, c1, a, b]) dmaFencePut(x);
});

model('dma_fence_chain_for_each visits the pending links and drops its reference on break', (t) => {
  const fc = fenceChainsInit(8, seqnoInc);
  try {
    dmaFenceSignal(fc.fences[3]!);
    const seen: bigint[] = [];
    for (const link of dmaFenceChainForEach(fc.tail!)) seen.push(link.seqno);
    t.deepEqual(seen, [8n, 7n, 6n, 5n, 3n, 2n, 1n], 'link 4 collected');
    for (const link of dmaFenceChainForEach(fc.tail!)) if (link.seqno === 6n) break;
  } finally {
    fenceChainsFini(fc);
  }
});

model('a callback on a chain in an event-loop worker runs when this thread signals the last pending link', async (t) => {
  const fc = fenceChainsInit(16, seqnoInc);
  try {
    const w = startFenceWorker<WorkerResult & { ran: boolean; status: number }>('eventLoopCallback', table, {
      fence: fenceHandle(fc.tail!),
      eventLoop: true,
      timeoutMs: 10_000,
    });
    await w.ready;
    for (let i = fc.chainLength; i--; ) {
      dmaFenceSignal(fc.fences[i]!);
      if (i % 5 === 0) await msleep(1); // let the worker's pump re-arm on the next blocker now and then
    }
    const r = await w.done;
    t.true(r.ran, 'the worker re-armed on each blocking link and ran its callback');
    t.is(r.status, 1);
    t.deepEqual(r.warnings, []);
  } finally {
    fenceChainsFini(fc);
  }
});

model('a callback on a chain in this thread runs from the pump after a wait', (t) => {
  const fc = fenceChainsInit(4, seqnoInc);
  try {
    const cb = new DmaFenceCb();
    let ran = false;
    t.is(dmaFenceAddCallback(fc.tail!, cb, () => (ran = true)), 0);
    for (const f of fc.fences) dmaFenceSignal(f);
    t.false(ran, 'no pump yet: nobody evaluated the chain');
    t.true(dmaFenceWaitTimeout(fc.tail!, false, 1000) > 0);
    t.true(ran, 'the wait evaluated the chain, signaled it, and ran our callback');
  } finally {
    fenceChainsFini(fc);
  }
});

model('find_seqno on a fence that is not a chain is -EINVAL', (t) => {
  const f = dmaFenceInit(mockOps, dmaFenceContextAlloc(1), 3);
  const box = { fence: f as DmaFence | null };
  t.is(dmaFenceChainFindSeqno(box, 1), -E.EINVAL);
  t.is(box.fence, f);
  dmaFencePut(f);
});
