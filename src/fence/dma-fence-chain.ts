/**
 * dma_fence_chain (drivers/dma-buf/dma-fence-chain.c): timeline links, each holding a fence and a reference to
 * the previous link, on the shared fence table.
 *
 * A link's `prev` is an i64 handle word in its slot, so any worker can walk the chain; dma_fence_chain_walk's
 * garbage collection (unlinking links whose fence signaled) swaps it with compareExchange exactly as the kernel's
 * cmpxchg does, and dma_fence_get_rcu_safe (generation-checked get_unless_zero) takes the place of RCU.
 *
 * A chain link signals when its own fence and every earlier link's fence have signaled. As with arrays there are
 * no per-link callbacks: ops->signaled walks the chain whenever someone asks (dma_fence_is_signaled, a wait, a
 * pump with callbacks on it) and the first unsignaled link fence found is what a waiter sleeps on — the kernel's
 * "re-arm on the next unsignaled fence" done by the waiter itself. A chain signals with no error (the kernel does
 * not propagate errors through chains) and is timestamped when found complete. Chains use 64-bit seqnos.
 */
import { E } from '../uapi/errno.js';
import { F_SEQNO64, KIND_CHAIN, NAME_ID_CHAIN, S64_FENCE, S64_PREV, S64_PREV_SEQNO } from './table.js';
import { ktimeGetNs } from '../shm/clock.js';
import {
  type CompositeDone,
  DmaFence,
  type FenceRuntime,
  dmaFenceContextAlloc,
  dmaFenceGet,
  dmaFenceGetRcuSafe,
  dmaFenceIsSignaled,
  dmaFencePut,
  dmaFenceSeqnoIsLater,
  dmaFenceSetDeadline,
  fenceRuntime,
  fenceToI64,
  isSignaledCollect,
  registerFenceKind,
} from './dma-fence.js';

/** struct dma_fence_chain, as one worker sees it. */
export class DmaFenceChain extends DmaFence {
  /** chain->prev_seqno: the previous link's seqno when this link continues its timeline, else 0. */
  get prevSeqno(): bigint {
    return this.rt.table.u64[this.base64 + S64_PREV_SEQNO]!;
  }

  /** chain->fence (borrowed: the link holds the reference). */
  get fence(): DmaFence {
    return this.rt.fromI64(this.rt.table.i64[this.base64 + S64_FENCE]!)!;
  }

  /** The raw prev word (it changes under garbage collection): for debugging only, use the walk. */
  get prevHandle(): bigint {
    return Atomics.load(this.rt.table.i64, this.base64 + S64_PREV);
  }
}

/** to_dma_fence_chain: the chain view, or null when `f` is not a chain link. */
export function toDmaFenceChain(f: DmaFence | null): DmaFenceChain | null {
  return f instanceof DmaFenceChain ? f : null;
}

export function dmaFenceIsChain(f: DmaFence): f is DmaFenceChain {
  return f instanceof DmaFenceChain;
}

/** dma_fence_chain_contained: the link's fence for a chain, else the fence itself (borrowed). */
export function dmaFenceChainContained(f: DmaFence): DmaFence {
  const chain = toDmaFenceChain(f);
  return chain ? chain.fence : f;
}

/** dma_fence_chain_get_prev: a reference to the previous link, or null. */
function chainGetPrev(chain: DmaFenceChain): DmaFence | null {
  return dmaFenceGetRcuSafe(chain.rt.table.i64, chain.base64 + S64_PREV, chain.rt);
}

/**
 * The loop of dma_fence_chain_walk on `chain` (whose reference the caller keeps): unlinks the previous links whose
 * fence signaled and returns a reference to the first previous link that has not (or null at the chain's end).
 * Runs concurrently with walks in other workers; the compareExchange on prev makes each unlink happen once.
 */
function chainWalkFrom(chain: DmaFenceChain): DmaFence | null {
  const rt = chain.rt;
  const i64 = rt.table.i64;
  const w = chain.base64 + S64_PREV;
  let prev: DmaFence | null;
  // Bounded: prev words are shared, and a cycle written into them must end in a BUG, not a hang.
  for (let steps = 0; (prev = chainGetPrev(chain)); steps = rt.walkStep(steps, 'dma_fence_chain walk')) {
    const prevChain = toDmaFenceChain(prev);
    let replacement: DmaFence | null;
    if (prevChain) {
      if (!dmaFenceIsSignaled(prevChain.fence)) break;
      replacement = chainGetPrev(prevChain);
    } else {
      if (!dmaFenceIsSignaled(prev)) break;
      replacement = null;
    }
    const expect = fenceToI64(prev);
    const tmp = Atomics.compareExchange(i64, w, expect, fenceToI64(replacement));
    // On success the chain's reference to prev is ours to drop and ours to replacement is now the chain's.
    if (tmp === expect) dmaFencePut(prev);
    else dmaFencePut(replacement);
    dmaFencePut(prev);
  }
  return prev;
}

/**
 * dma_fence_chain_walk: consumes the reference to `fence` and returns a reference to the next link to look at
 * (null at the end, or when `fence` is not a chain), garbage-collecting signaled links on the way.
 */
export function dmaFenceChainWalk(fence: DmaFence): DmaFence | null {
  const chain = toDmaFenceChain(fence);
  if (!chain) {
    dmaFencePut(fence);
    return null;
  }
  const prev = chainWalkFrom(chain);
  dmaFencePut(fence);
  return prev;
}

/**
 * dma_fence_chain_for_each(iter, head): yields head and every earlier link still pending, holding a reference to
 * the current one. Breaking out of the loop drops that reference (unlike the C macro, where the caller inherits
 * it): take your own with dma_fence_get before breaking if you keep the fence.
 */
export function* dmaFenceChainForEach(head: DmaFence): Generator<DmaFence, void, undefined> {
  let iter: DmaFence | null = dmaFenceGet(head);
  try {
    for (let steps = 0; iter; steps = head.rt.walkStep(steps, 'dma_fence_chain_for_each')) {
      yield iter;
      iter = dmaFenceChainWalk(iter);
    }
  } finally {
    if (iter) dmaFencePut(iter);
  }
}

/**
 * dma_fence_chain_find_seqno: advances `pfence.fence` (a chain link the caller holds a reference to) to the link
 * that will signal `seqno`, or to null when that point already signaled; the reference moves with it. seqno 0 is a
 * no-op. Returns 0, or -EINVAL when the fence is not a chain or the timeline has not reached `seqno` yet.
 */
export function dmaFenceChainFindSeqno(pfence: { fence: DmaFence | null }, seqno: number | bigint): number {
  const s = BigInt(seqno);
  if (s === 0n) return 0;
  const chain = toDmaFenceChain(pfence.fence);
  if (!chain || chain.seqno < s) return -E.EINVAL;
  let iter: DmaFence | null = dmaFenceGet(chain as DmaFence);
  for (; iter; iter = dmaFenceChainWalk(iter)) {
    const c = toDmaFenceChain(iter);
    if (iter.context !== chain.context || !c || c.prevSeqno < s) break;
  }
  pfence.fence = iter;
  dmaFencePut(chain);
  return 0;
}

/**
 * dma_fence_chain_init (allocation included): a new link with one reference, taking over the caller's references
 * to `prev` (may be null) and `fence`. It continues prev's timeline (same context, prev_seqno = prev's seqno) when
 * prev is a chain and `seqno` is later; otherwise it starts a new context, with seqno raised to prev's if prev is
 * a chain. Throws FenceTableFullError when the table is full (references not consumed).
 */
export function dmaFenceChainInit(prev: DmaFence | null, fence: DmaFence, seqno: number | bigint): DmaFenceChain {
  const rt = fenceRuntime();
  const prevChain = toDmaFenceChain(prev);
  let s = BigInt.asUintN(64, BigInt(seqno));
  let context: number;
  let prevSeqno = 0n;
  if (prevChain && dmaFenceSeqnoIsLater(prevChain, s, prevChain.seqno)) {
    context = prevChain.context;
    prevSeqno = prevChain.seqno;
  } else {
    context = dmaFenceContextAlloc(1);
    if (prevChain && prevChain.seqno > s) s = prevChain.seqno;
  }
  const index = rt.createSlot(KIND_CHAIN, NAME_ID_CHAIN, context, s, F_SEQNO64);
  const b64 = rt.table.base64(index);
  rt.table.u64[b64 + S64_PREV_SEQNO] = prevSeqno;
  rt.table.i64[b64 + S64_FENCE] = fenceToI64(fence);
  Atomics.store(rt.table.i64, b64 + S64_PREV, fenceToI64(prev));
  return rt.publish(index) as DmaFenceChain;
}

/** ops->signaled: the head's fence and every earlier link's fence signaled (see the file comment). */
function chainSignaled(f: DmaFence, blockers: DmaFence[] | null): CompositeDone | null {
  const head = f as DmaFenceChain;
  if (!isSignaledCollect(head.fence, blockers)) return null;
  let iter = chainWalkFrom(head);
  for (let steps = 0; iter; steps = head.rt.walkStep(steps, 'dma_fence_chain signaled')) {
    const c = toDmaFenceChain(iter);
    if (!isSignaledCollect(c ? c.fence : iter, blockers)) {
      dmaFencePut(iter);
      return null;
    }
    iter = dmaFenceChainWalk(iter);
  }
  return { error: 0, timestampNs: ktimeGetNs() };
}

/** ops->release: the references to prev (if still linked) and to the fence. */
function chainRelease(rt: FenceRuntime, index: number, puts: number[]): void {
  const i64 = rt.table.i64;
  const b64 = rt.table.base64(index);
  const prev = Atomics.load(i64, b64 + S64_PREV);
  if (prev !== 0n) puts.push(Number(prev & 0xffffffffn));
  const fence = i64[b64 + S64_FENCE]!;
  if (fence !== 0n) puts.push(Number(fence & 0xffffffffn));
}

registerFenceKind(KIND_CHAIN, {
  name: 'chain',
  container: true,
  wrap: (rt, index, gen) => new DmaFenceChain(rt, index, gen),
  signaled: chainSignaled,
  release: chainRelease,
  setDeadline(f, deadlineNs) {
    for (const link of dmaFenceChainForEach(f)) dmaFenceSetDeadline(dmaFenceChainContained(link), deadlineNs);
  },
});
