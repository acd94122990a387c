/**
 * dma_fence_array (drivers/dma-buf/dma-fence-array.c): a fence that signals when all of its component fences
 * have signaled — or, with signal_on_any, when one has — on the shared fence table.
 *
 * The component list lives in shared memory (extension slots of the fence table, EXT_HANDLES handles each), so
 * any worker can evaluate an array. There is no per-component callback machinery: the array's ops->signaled
 * evaluates the components whenever someone asks (see dma-fence.ts, "Composite fences signal lazily"):
 *   - all:  complete when every component is; error = that of the errored component that signaled first
 *           (earliest timestamp) — "the first error wins", as the kernel's cmpxchg on PENDING_ERROR makes it;
 *           timestamp = the last component's.
 *   - any:  complete when one component is; error and timestamp = those of the first component to signal.
 * Until then the array's error is PENDING_ERROR (1), as in the kernel. A waiter on an "all" array sleeps on the
 * first unsignaled component's word; on an "any" array, on its doorbell with interest in every component.
 */
import { KernelError } from '../errors.js';
import { E } from '../uapi/errno.js';
import {
  EXT_HANDLES,
  F_SIGNAL_ON_ANY,
  KIND_ARRAY,
  KIND_EXT,
  KIND_MASK,
  KIND_NAMES,
  KIND_SHIFT,
  S_FLAGS,
  NAME_ID_ARRAY,
  PENDING_ERROR,
  S64_EXT_FIRST,
  S_ERROR,
  S_EXT_COUNT,
  S_LINK,
  S_NUM_FENCES,
} from './table.js';
import {
  type CompositeDone,
  DmaFence,
  type FenceRuntime,
  dmaFenceIsContainer,
  dmaFenceSetDeadline,
  dmaFenceTimestamp,
  fenceRuntime,
  fenceToI64,
  isSignaledCollect,
  registerFenceKind,
} from './dma-fence.js';
import { BUG, warnOn } from '../bug.js';

/** struct dma_fence_array, as one worker sees it. Components are borrowed views (the array holds the references). */
export class DmaFenceArray extends DmaFence {
  /** array->num_fences. */
  get numFences(): number {
    return Atomics.load(this.rt.i32, this.base + S_NUM_FENCES);
  }

  get signalOnAny(): boolean {
    return (this.flags & F_SIGNAL_ON_ANY) !== 0;
  }

  /** array->fences[i] (borrowed). */
  fence(i: number): DmaFence {
    const rt = this.rt;
    const t = rt.table;
    // Links and handles are shared words: every index is checked before use (slotIndex), the walk is bounded.
    let ext = extSlot(rt, Atomics.load(rt.i32, this.base + S_LINK));
    let k = i;
    for (let steps = 0; k >= EXT_HANDLES; steps = rt.walkStep(steps, 'dma_fence_array extensions')) {
      ext = extSlot(rt, Atomics.load(rt.i32, t.base(ext) + S_LINK));
      k -= EXT_HANDLES;
    }
    return rt.fromI64(t.i64[t.base64(ext) + S64_EXT_FIRST + k]!)!;
  }

  /** array->fences (borrowed views, in order). */
  get fences(): DmaFence[] {
    const rt = this.rt;
    const t = rt.table;
    const out: DmaFence[] = [];
    let steps = 0;
    for (let ext = Atomics.load(rt.i32, this.base + S_LINK); ext >= 0; ext = Atomics.load(rt.i32, t.base(ext) + S_LINK)) {
      extSlot(rt, ext);
      steps = rt.walkStep(steps, 'dma_fence_array extensions');
      const n = extCount(rt, ext);
      const b64 = t.base64(ext) + S64_EXT_FIRST;
      for (let k = 0; k < n; k++) out.push(rt.fromI64(t.i64[b64 + k]!)!);
    }
    return out;
  }
}

/** to_dma_fence_array: the array view, or null when `f` is not an array. */
export function toDmaFenceArray(f: DmaFence | null): DmaFenceArray | null {
  return f instanceof DmaFenceArray ? f : null;
}

/** dma_fence_is_array. */
export function dmaFenceIsArray(f: DmaFence): f is DmaFenceArray {
  return f instanceof DmaFenceArray;
}

/**
 * dma_fence_array_create: a new array fence (one reference) over `fences`, on timeline (`context`, `seqno`).
 * Takes over the caller's references to the components (they are put when the array is released). Like the
 * kernel it warns on an empty list and on containers among the components (arrays must be flat). Throws
 * FenceTableFullError when the table is full — then the references are NOT consumed (the kernel's NULL return).
 * Any worker may call it.
 */
export function dmaFenceArrayCreate(
  numFences: number,
  fences: readonly DmaFence[],
  context: number,
  seqno: number | bigint,
  signalOnAny: boolean,
): DmaFenceArray {
  if (numFences > fences.length) throw new KernelError(E.EINVAL, 'dma_fence_array_create: num_fences > fences.length');
  warnOn(numFences === 0, 'dma_fence_array_create with no fences');
  for (let i = 0; i < numFences; i++) {
    warnOn(dmaFenceIsContainer(fences[i]!), `dma_fence_array_create: container ${fences[i]} inside an array`);
  }
  const rt = fenceRuntime();
  const t = rt.table;
  const index = rt.createSlot(KIND_ARRAY, NAME_ID_ARRAY, context, BigInt(seqno), signalOnAny ? F_SIGNAL_ON_ANY : 0);
  const b = t.base(index);
  Atomics.store(rt.i32, b + S_NUM_FENCES, numFences);
  Atomics.store(rt.i32, b + S_ERROR, PENDING_ERROR);
  const exts: number[] = [];
  try {
    for (let i = 0; i < numFences; i += EXT_HANDLES) exts.push(t.allocSlot(KIND_EXT, rt.attachId));
  } catch (e) {
    for (const x of exts) t.freeSlot(x);
    Atomics.store(rt.i32, b + S_NUM_FENCES, 0);
    t.freeSlot(index);
    throw e;
  }
  let prev = b + S_LINK;
  for (let x = 0; x < exts.length; x++) {
    const eb = t.base(exts[x]!);
    const n = Math.min(EXT_HANDLES, numFences - x * EXT_HANDLES);
    for (let k = 0; k < n; k++) t.i64[(eb >> 1) + S64_EXT_FIRST + k] = fenceToI64(fences[x * EXT_HANDLES + k]!);
    Atomics.store(rt.i32, eb + S_EXT_COUNT, n);
    Atomics.store(rt.i32, prev, exts[x]!);
    prev = eb + S_LINK;
  }
  return rt.publish(index) as DmaFenceArray;
}

/** dma_fence_array_first: head itself when it is not an array, else its first component (null when empty). */
export function dmaFenceArrayFirst(head: DmaFence | null): DmaFence | null {
  if (!head) return null;
  const array = toDmaFenceArray(head);
  if (!array) return head;
  if (array.numFences === 0) return null;
  return array.fence(0);
}

/** dma_fence_array_next: component `index` of an array head, else null. */
export function dmaFenceArrayNext(head: DmaFence | null, index: number): DmaFence | null {
  if (!head) return null;
  const array = toDmaFenceArray(head);
  if (!array || index >= array.numFences) return null;
  return array.fence(index);
}

/** dma_fence_match_context: `fence` (or every component of an array) is on `context`. */
export function dmaFenceMatchContext(fence: DmaFence, context: number): boolean {
  const array = toDmaFenceArray(fence);
  if (!array) return fence.context === context;
  for (const f of array.fences) if (f.context !== context) return false;
  return true;
}

/** The ops->signaled evaluation described in the file comment. */
function arraySignaled(f: DmaFence, blockers: DmaFence[] | null): CompositeDone | null {
  const array = f as DmaFenceArray;
  const fences = array.fences;
  if (array.signalOnAny) {
    let first: DmaFence | null = null;
    let firstTs = Infinity;
    for (const c of fences) {
      if (isSignaledCollect(c, blockers)) {
        const ts = dmaFenceTimestamp(c);
        if (ts < firstTs) {
          firstTs = ts;
          first = c;
        }
      }
    }
    if (!first) return null;
    const err = first.error;
    return { error: err < 0 ? err : 0, timestampNs: firstTs };
  }
  let last = 0;
  let error = 0;
  let errorTs = Infinity;
  for (const c of fences) {
    if (!isSignaledCollect(c, blockers)) return null;
    const ts = dmaFenceTimestamp(c);
    if (ts > last) last = ts;
    const err = c.error;
    if (err < 0 && ts < errorTs) {
      errorTs = ts;
      error = err;
    }
  }
  return { error, timestampNs: last };
}

/** `ext`, read from a shared link word, checked to be an extension slot of the table (a BUG otherwise). */
function extSlot(rt: FenceRuntime, ext: number): number {
  rt.slotIndex(ext, 'dma_fence_array extension');
  const kind = (Atomics.load(rt.i32, rt.table.base(ext) + S_FLAGS) >> KIND_SHIFT) & KIND_MASK;
  if (kind !== KIND_EXT) BUG(`dma_fence_array extension ${ext} is a ${KIND_NAMES[kind] ?? kind} slot (a corrupted fence word?)`);
  return ext;
}

/** An extension slot's handle count, a shared word: a BUG unless it fits the slot. */
function extCount(rt: FenceRuntime, ext: number): number {
  const n = Atomics.load(rt.i32, rt.table.base(ext) + S_EXT_COUNT);
  if (!(n >= 0 && n <= EXT_HANDLES)) BUG(`dma_fence_array extension ${ext} claims ${n} handles (a corrupted fence word?)`);
  return n;
}

function arrayRelease(rt: FenceRuntime, index: number, puts: number[]): void {
  const t = rt.table;
  let ext = Atomics.load(rt.i32, t.base(index) + S_LINK);
  for (let steps = 0; ext >= 0; steps = rt.walkStep(steps, 'dma_fence_array release')) {
    const eb = t.base(extSlot(rt, ext));
    const n = extCount(rt, ext);
    for (let k = 0; k < n; k++) puts.push(Number(t.i64[(eb >> 1) + S64_EXT_FIRST + k]! & 0xffffffffn));
    const next = Atomics.load(rt.i32, eb + S_LINK);
    t.freeSlot(ext);
    ext = next;
  }
}

registerFenceKind(KIND_ARRAY, {
  name: 'array',
  container: true,
  wrap: (rt, index, gen) => new DmaFenceArray(rt, index, gen),
  signaled: arraySignaled,
  release: arrayRelease,
  setDeadline(f, deadlineNs) {
    for (const c of (f as DmaFenceArray).fences) dmaFenceSetDeadline(c, deadlineNs);
  },
});
