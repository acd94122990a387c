/**
 * dma-fence-unwrap (drivers/dma-buf/dma-fence-unwrap.c, include/linux/dma-fence-unwrap.h): iterating over the
 * leaf fences inside chains and arrays, and merging fences into the smallest equivalent fence — what
 * SYNC_IOC_MERGE and dma-buf's sync_file import/export use. Any worker attached to the fence table may call these.
 */
import { dmaFenceArrayCreate, dmaFenceArrayFirst, dmaFenceArrayNext } from './dma-fence-array.js';
import { dmaFenceChainContained, dmaFenceChainWalk } from './dma-fence-chain.js';
import {
  type DmaFence,
  dmaFenceAllocatePrivateStub,
  dmaFenceContextAlloc,
  dmaFenceGet,
  dmaFenceIsLater,
  dmaFenceIsSignaled,
  dmaFencePut,
  dmaFenceTimestamp,
} from './dma-fence.js';

/** struct dma_fence_unwrap: the cursor (holds a reference to `chain` while iterating). */
export class DmaFenceUnwrap {
  /** Potential dma_fence_chain, but can be another fence as well. */
  chain: DmaFence | null = null;
  /** Potential dma_fence_array, but can be another fence as well. */
  array: DmaFence | null = null;
  /** Last returned index if `array` really is an array. */
  index = 0;
}

function unwrapArray(cursor: DmaFenceUnwrap): DmaFence | null {
  cursor.array = cursor.chain ? dmaFenceChainContained(cursor.chain) : null;
  cursor.index = 0;
  return dmaFenceArrayFirst(cursor.array);
}

/** dma_fence_unwrap_first: the first leaf of `head` (borrowed); the cursor takes a reference to head. */
export function dmaFenceUnwrapFirst(head: DmaFence, cursor: DmaFenceUnwrap): DmaFence | null {
  cursor.chain = dmaFenceGet(head);
  return unwrapArray(cursor);
}

/** dma_fence_unwrap_next: the next leaf (borrowed), walking (and garbage-collecting) the chain as needed. */
export function dmaFenceUnwrapNext(cursor: DmaFenceUnwrap): DmaFence | null {
  ++cursor.index;
  const tmp = dmaFenceArrayNext(cursor.array, cursor.index);
  if (tmp) return tmp;
  cursor.chain = cursor.chain ? dmaFenceChainWalk(cursor.chain) : null;
  return unwrapArray(cursor);
}

/**
 * dma_fence_unwrap_for_each(fence, cursor, head): yields every leaf fence of head (borrowed views, valid while
 * the iteration holds its chain reference). Breaking out drops the cursor's reference (the C macro would leave it
 * held).
 */
export function* dmaFenceUnwrapForEach(
  head: DmaFence,
  cursor: DmaFenceUnwrap = new DmaFenceUnwrap(),
): Generator<DmaFence, void, undefined> {
  try {
    for (let f = dmaFenceUnwrapFirst(head, cursor); f; f = dmaFenceUnwrapNext(cursor)) yield f;
  } finally {
    if (cursor.chain) {
      dmaFencePut(cursor.chain);
      cursor.chain = null;
    }
  }
}

/** fence_cmp of dma-fence-unwrap.c: by context, then the later seqno first. */
function fenceCmp(a: DmaFence, b: DmaFence): number {
  const ca = a.context;
  const cb = b.context;
  if (ca < cb) return -1;
  if (ca > cb) return 1;
  if (dmaFenceIsLater(b, a)) return 1;
  if (dmaFenceIsLater(a, b)) return -1;
  return 0;
}

/**
 * dma_fence_dedup_array: sorts `fences` by context and keeps only the most recent fence per context, putting the
 * references of the others. Truncates the array in place and returns the new count.
 */
export function dmaFenceDedupArray(fences: DmaFence[], numFences: number = fences.length): number {
  if (numFences === 0) {
    fences.length = 0;
    return 0;
  }
  const sorted = fences.slice(0, numFences).sort(fenceCmp);
  let j = 0;
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.context === sorted[j]!.context) dmaFencePut(sorted[i]!);
    else sorted[++j] = sorted[i]!;
  }
  const count = j + 1;
  fences.length = 0;
  for (let i = 0; i < count; i++) fences.push(sorted[i]!);
  return count;
}

/**
 * dma_fence_unwrap_merge(...): one fence standing for all of `fences` (whose references stay with the caller):
 * flatten every chain and array, drop signaled leaves, then — 0 left: a new private stub signaled at the latest
 * dropped leaf's timestamp; exactly 1 unsignaled leaf: a new reference to it; else the leaves sorted by context,
 * the later seqno kept per context (32-bit wrap compare for 32-bit timelines), in a new array (new context,
 * seqno 1, signal when all). Returns a new reference (null only where the kernel's allocation would fail: never
 * here — a full fence table throws).
 */
export function dmaFenceUnwrapMerge(...fences: DmaFence[]): DmaFence | null {
  let count = 0;
  let timestamp = 0;
  let unsignaled: DmaFence | null = null;
  for (const head of fences) {
    for (const tmp of dmaFenceUnwrapForEach(head)) {
      if (!dmaFenceIsSignaled(tmp)) {
        dmaFencePut(unsignaled);
        unsignaled = dmaFenceGet(tmp);
        ++count;
      } else {
        const t = dmaFenceTimestamp(tmp);
        if (t > timestamp) timestamp = t;
      }
    }
  }
  // No pending fence: a private signaled fence with the last signaled one's timestamp. A single one: itself.
  if (count === 0) return dmaFenceAllocatePrivateStub(timestamp);
  if (count === 1) return unsignaled;
  dmaFencePut(unsignaled);

  const array: DmaFence[] = [];
  for (const head of fences) {
    for (const tmp of dmaFenceUnwrapForEach(head)) {
      if (!dmaFenceIsSignaled(tmp)) {
        array.push(dmaFenceGet(tmp));
      } else {
        const t = dmaFenceTimestamp(tmp);
        if (t > timestamp) timestamp = t;
      }
    }
  }
  if (array.length === 0) return dmaFenceAllocatePrivateStub(timestamp);
  if (array.length === 1) return array[0]!;
  count = dmaFenceDedupArray(array, array.length);
  if (count > 1) {
    try {
      return dmaFenceArrayCreate(count, array, dmaFenceContextAlloc(1), 1, false);
    } catch (e) {
      for (const f of array) dmaFencePut(f);
      throw e;
    }
  }
  return array[0]!;
}
