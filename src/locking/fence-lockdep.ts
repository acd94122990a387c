/**
 * Fences are locks too: the kernel's dma_fence_map pseudo-lock (drivers/dma-buf/dma-fence.c) installed into the
 * fence library's seams (setFenceLockdepHooks), dma_resv_lockdep()'s priming of the known-good order, and the
 * fs_reclaim annotation for allocations that may reclaim.
 *
 * ## The annotations, as mainline has them
 * - dma_fence_begin_signalling: a no-op when this worker already holds dma_fence_map for read (nested) or runs in
 *   atomic context; else a *read trylock* of the map (no dependency into it, but every lock taken inside the
 *   section gets dma_fence_map → lock).
 * - dma_fence_end_signalling: releases it (unless the cookie says begin was a no-op).
 * - __dma_fence_might_wait (every dma_fence_wait_timeout, whatever the timeout — 0 too): drops a read hold this
 *   worker has, write-acquires and releases the map (recording "every lock held now → fence wait"), and takes the
 *   read hold back (a plain read, not a trylock).
 * - dma_fence_signal wraps itself in a section (the fence library does that); signalling from atomic context is
 *   not a section.
 * - Fence callbacks run in atomic context (under fence->lock in the kernel): the runtime's callback hooks enter
 *   and leave it around each one.
 * - dma_resv_lockdep primes: mmap_lock (read) → reservation_ww_class_acquire → reservation_ww_class_mutex →
 *   fs_reclaim → i_mmap_rwsem, and fs_reclaim → mmu_notifier_invalidate_range_start → dma_fence_map.
 *
 * So taking a lock that is elsewhere held across a fence wait, a reservation lock, or allocating with reclaim,
 * inside a signalling section closes a cycle through dma_fence_map — reported although nothing blocked.
 *
 * ## Threads
 * Per worker: installFenceLockdep() sets this worker's hooks (the fence library's seams are per worker); the maps
 * have fixed instance ids so every worker's dma_fence_map is the same lock.
 */
import { setFenceLockdepHooks, setFenceWaitHooks, type DmaFence } from '../fence/dma-fence.js';
import { setFenceCallbackHooks } from '../fence/runtime.js';
import { LockDomain, PRIMED, WATCHDOG } from './domain.js';
import { FLAG_PARKED, WAIT_FENCE, WAIT_SYSCALL, waitBeat, waitBegin, waitEnd } from './watchdog.js';
import { LockClass, LockMap, enterAtomic, exitAtomic, inAtomic, lockAcquire, lockIsHeld, lockRelease, mightSleep } from './lockdep.js';
import { WwAcquireCtx, WwClass, WwMutex } from './ww-mutex.js';

/** Fixed instance ids of the pseudo-locks (lock ids handed out by the domain start at 1, far below). */
const ID_FENCE_MAP = -100;
const ID_FS_RECLAIM = -101;
const ID_MMU_NOTIFIER = -102;

export const dmaFenceMapClass = new LockClass('dma_fence_map', 'map');
export const fsReclaimClass = new LockClass('fs_reclaim', 'map');
export const mmuNotifierClass = new LockClass('mmu_notifier_invalidate_range_start', 'map');
/** The reservation objects' class (dma-resv.c: reservation_ww_class, Wait-Die). */
export const reservationWwClass = new WwClass('reservation_ww_class');

interface FenceMaps {
  readonly fence: LockMap;
  readonly reclaim: LockMap;
  readonly mmu: LockMap;
}
const maps = new WeakMap<LockDomain, FenceMaps>();

function mapsOf(d: LockDomain): FenceMaps {
  let m = maps.get(d);
  if (!m) {
    m = { fence: new LockMap(d, dmaFenceMapClass, ID_FENCE_MAP), reclaim: new LockMap(d, fsReclaimClass, ID_FS_RECLAIM), mmu: new LockMap(d, mmuNotifierClass, ID_MMU_NOTIFIER) };
    maps.set(d, m);
  }
  return m;
}

/** dma_fence_map of `d` (to assert it held, or to hold it in a test). */
export function dmaFenceMap(d: LockDomain = LockDomain.current()): LockMap {
  return mapsOf(d).fence;
}

/**
 * dma_fence_begin_signalling in `d`: returns the cookie for dmaFenceEndSignallingIn (true = nothing was taken:
 * nested, or atomic context).
 */
export function beginSignalling(d: LockDomain): boolean {
  const m = mapsOf(d).fence;
  if (lockIsHeldStrict(d, m, 1)) return true;
  if (inAtomic(d)) return true;
  lockAcquire(m, 0, true, 1, null);
  return false;
}

/** dma_fence_end_signalling in `d`. */
export function endSignalling(d: LockDomain, cookie: boolean): void {
  if (cookie) return;
  lockRelease(mapsOf(d).fence);
}

/** __dma_fence_might_wait in `d`: every lock held now → dma_fence_map (a wait in atomic context is reported). */
export function fenceMightWait(d: LockDomain): void {
  if (!d.enabled) return;
  mightSleep(d, 'dma_fence_wait');
  const m = mapsOf(d).fence;
  const tmp = lockIsHeldStrict(d, m, 1);
  if (tmp) lockRelease(m);
  lockAcquire(m, 0, false, 0, null);
  lockRelease(m);
  if (tmp) lockAcquire(m, 0, false, 1, null);
}

/** might_alloc(GFP_KERNEL) / fs_reclaim_acquire+release: this allocation may reclaim. */
export function mightAlloc(d: LockDomain = LockDomain.current()): void {
  if (!d.enabled) return;
  const m = mapsOf(d).reclaim;
  lockAcquire(m, 0, false, 0, null);
  lockRelease(m);
}

/** fs_reclaim_acquire / release (a shrinker or reclaim path running). */
export function fsReclaimAcquire(d: LockDomain = LockDomain.current()): void {
  lockAcquire(mapsOf(d).reclaim, 0, false, 0, null);
}
export function fsReclaimRelease(d: LockDomain = LockDomain.current()): void {
  lockRelease(mapsOf(d).reclaim);
}

/** lock_is_held_type that answers false while the validator is off (begin/might_wait must not act then). */
function lockIsHeldStrict(d: LockDomain, m: LockMap, read: number): boolean {
  return d.enabled && lockIsHeld(m, read);
}

/**
 * dma_resv_lockdep(): primes `d` once (the first caller wins a compareExchange on PRIMED) with the order every
 * driver must respect, so an inversion against it is reported the first time it happens in any worker.
 */
export function dmaResvLockdep(d: LockDomain = LockDomain.current()): void {
  if (Atomics.compareExchange(d.i32, PRIMED, 0, 1) !== 0) return;
  const m = mapsOf(d);
  const mmap = new LockMap(d, new LockClass('mmap_lock', 'sleep'));
  const iMmap = new LockMap(d, new LockClass('i_mmap_rwsem', 'sleep'));
  lockAcquire(mmap, 0, false, 1, null);
  const ctx = new WwAcquireCtx(reservationWwClass, { domain: d });
  const obj = new WwMutex(reservationWwClass, { domain: d });
  obj.lock(ctx);
  lockAcquire(m.reclaim, 0, false, 0, null);
  lockAcquire(iMmap, 0, false, 0, null);
  lockRelease(iMmap);
  lockAcquire(m.mmu, 0, false, 0, null);
  fenceMightWait(d);
  lockRelease(m.mmu);
  lockRelease(m.reclaim);
  obj.unlock();
  ctx.fini();
  lockRelease(mmap);
}

/**
 * Installs this worker's fence hooks against `d` (default: the current domain) and primes it. The fence library
 * keeps its own nesting flag; the hook keeps the cookie of the outermost begin.
 */
export function installFenceLockdep(d: LockDomain = LockDomain.current()): void {
  dmaResvLockdep(d);
  const cookies: boolean[] = [];
  setFenceLockdepHooks({
    beginSignalling: () => {
      cookies.push(beginSignalling(d));
    },
    endSignalling: () => {
      const c = cookies.pop();
      if (c !== undefined) endSignalling(d, c);
    },
    mightWait: () => fenceMightWait(d),
  });
  // Fence callbacks run in atomic context (the kernel runs them under fence->lock): a sleeping lock or a fence
  // wait inside one is reported ('wait-context'), and a signal from inside one is no signalling section.
  setFenceCallbackHooks({ enter: () => enterAtomic(d), exit: () => exitAtomic(d) });
  setFenceWaitHooks({
    sleep: (gen, f, blockers, any) => fenceWaitSleep(d, gen, f, blockers, any),
    end: (gen) => waitEnd(d, gen),
    parked: (gen, what) => {
      if (gen === 0) return waitBegin(d, WAIT_SYSCALL, -1, 0, 0, what, 0, 0, FLAG_PARKED);
      waitBeat(d, gen, 0);
      return gen;
    },
  });
}

/**
 * A fence wait of this worker is about to sleep (the watchdog's publication, watchdog.ts): the leaf it sleeps on
 * and that leaf's annotated signaller are its wait-for edge. An any-of wait on several leaves has no single edge
 * (any signaller could end it): it is published without one (hung reports only). Returns as FenceWaitHooks.sleep.
 */
function fenceWaitSleep(d: LockDomain, gen: number, f: DmaFence, blockers: readonly DmaFence[], any: boolean): number {
  if (gen === 0 && d.i32[WATCHDOG] === 0) return 0;
  const leaf = blockers.length === 1 || (!any && blockers.length > 0) ? blockers[0]! : null;
  const holder = leaf !== null ? leaf.rt.table.slotSignaller(leaf.index) : 0;
  const obj = leaf !== null ? leaf.index : -1;
  const obj2 = leaf !== null ? leaf.gen : 0;
  if (gen === 0) return waitBegin(d, WAIT_FENCE, obj, obj2, holder, `${f.driverName}:${f.timelineName}`, f.context, Number(BigInt.asUintN(32, f.seqno)) | 0);
  return waitBeat(d, gen, holder, obj, obj2) ? -gen : gen;
}

/** Removes this worker's fence hooks. */
export function uninstallFenceLockdep(): void {
  setFenceLockdepHooks(null);
  setFenceCallbackHooks(null);
  setFenceWaitHooks(null);
}
