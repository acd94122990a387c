/**
 * dma_resv (drivers/dma-buf/dma-resv.c): a buffer's reservation object — its lock and its list of fences, each
 * with a usage class (KERNEL < WRITE < READ < BOOKKEEP; a query for usage U sees every fence with usage ≤ U).
 *
 * ## Threads and the seams left open
 * - The lock is a mutex word in shared memory (`lockSab`, layout below), so the lock protocol already works
 *   between workers, and every function may run in any worker. ww_mutex semantics (acquire contexts, wound/die,
 *   -EDEADLK backoff) and lockdep come later: dmaResvLock() takes the `ctx` argument and returns the kernel's
 *   codes, but today a context only makes a second lock by the same context return -EALREADY.
 * - The fence list itself lives in the memory of the thread that created the object (normally the broker, for
 *   dma-bufs): only that thread may touch it, and a call from another thread throws. Moving it into shared memory
 *   (handle words in fence-table extension slots) is the seam; the API would not change.
 * - "RCU" readers (the unlocked iterator) and writers are the same thread here, so an unlocked iteration can
 *   only be "restarted" by the caller itself changing the object between steps — the restart protocol is kept
 *   exactly (dma_resv_iter_is_restarted) so callers written against it stay right.
 *
 * ## Lock word layout (Int32, Atomics)
 *   RL_STATE  0 unlocked, else the holder's owner token (src/shm/alive.ts: its fence runtime's token, or an
 *             untracked id for a thread with no fence table) | LOCK_WAITERS while a waiter may sleep — a robust
 *             futex word: the lock names its owner, so a waiter can tell a dead holder from a slow one
 *   RL_OWNER  unused (the owner is in RL_STATE, stored by the same compareExchange that takes the lock)
 *   RL_CTX    acquire-context stamp of the holder (0 = locked without a context)
 *
 * ## A holder that dies
 * A worker killed while holding the lock leaves its token in RL_STATE. Waiters sleep in bounded slices and ask the
 * alive table about the holder after each; the first to find it dead takes the lock over (a compareExchange from
 * the dead holder's exact word) and dmaResvLock returns -EOWNERDEAD with the lock held, as
 * pthread_mutex_lock does on a robust mutex, after a warning. What the lock protects stays consistent: the fence
 * list can only be changed by its owner thread, which is not the dead one unless the object died with it. The
 * broker's dma-bufs never hand their lockSab to a process, so no process can make the broker wait on this lock.
 */
import { threadId } from 'node:worker_threads';
import { E } from '../uapi/errno.js';
import { dmaFenceArrayCreate } from './dma-fence-array.js';
import {
  type DmaFence,
  dmaFenceContextAlloc,
  dmaFenceDescribe,
  dmaFenceGet,
  dmaFenceIsContainer,
  dmaFenceIsLaterOrSame,
  dmaFenceIsSignaled,
  dmaFencePut,
  dmaFenceSetDeadline,
  dmaFenceWaitAsync,
  dmaFenceWaitTimeout,
  fenceRuntimeAttached,
  fenceRuntime,
} from './dma-fence.js';
import { BUG, warn, warnOn } from '../bug.js';
import { TOKEN_MASK } from '../shm/alive.js';
import { robustLock, robustUnlock, untrackedOwner } from './table.js';

export const DMA_RESV_USAGE_KERNEL = 0;
export const DMA_RESV_USAGE_WRITE = 1;
export const DMA_RESV_USAGE_READ = 2;
export const DMA_RESV_USAGE_BOOKKEEP = 3;
export type DmaResvUsage = 0 | 1 | 2 | 3;
export const DMA_RESV_USAGE_NAMES = ['kernel', 'write', 'read', 'bookkeep'] as const;

/**
 * dma_resv_usage_rw: the usage to wait for before a new access — a write waits for every reader and writer
 * (READ), a read only for writers (WRITE).
 */
export function dmaResvUsageRw(write: boolean): DmaResvUsage {
  return write ? DMA_RESV_USAGE_READ : DMA_RESV_USAGE_WRITE;
}

export const RL_STATE = 0;
export const RL_OWNER = 1;
export const RL_CTX = 2;
const RL_WORDS = 4;

/** The seam for ww_acquire_ctx: today only its identity (stamp) is used. */
export interface WwAcquireCtx {
  readonly stamp: number;
}

let nextStamp = 1;
/** ww_acquire_init (seam): a new acquire context. */
export function wwAcquireInit(): WwAcquireCtx {
  return { stamp: (threadId + 1) * 0x10000 + nextStamp++ };
}

interface ResvEntry {
  fence: DmaFence;
  usage: DmaResvUsage;
}

/** struct dma_resv_list: the table, how many entries are used, how many were reserved. */
export class DmaResvList {
  readonly table: ResvEntry[] = [];
  numFences = 0;
  constructor(public maxFences: number) {}
}

/** Bytes of struct dma_resv_list before its table (rcu_head + two u32) on a 64-bit kernel. */
const LIST_HEADER_BYTES = 24;
const KMALLOC_SIZES = [8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192];

/** kmalloc_size_roundup: the size of the slab bucket (or page-order allocation) a request lands in. */
function kmallocSizeRoundup(size: number): number {
  for (const s of KMALLOC_SIZES) if (size <= s) return s;
  let pages = 4096;
  while (pages < size) pages *= 2;
  return pages;
}

/** dma_resv_list_alloc: max_fences is recomputed from the bucket size, as the kernel does. */
function listAlloc(maxFences: number): DmaResvList {
  const size = kmallocSizeRoundup(LIST_HEADER_BYTES + 8 * maxFences);
  return new DmaResvList(Math.floor((size - LIST_HEADER_BYTES) / 8));
}

/** dma_resv_list_free: puts every fence of the list. */
function listFree(list: DmaResvList | null): void {
  if (!list) return;
  for (let i = 0; i < list.numFences; i++) dmaFencePut(list.table[i]!.fence);
  list.numFences = 0;
  list.table.length = 0;
}

function roundupPowOfTwo(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/** struct dma_resv. */
export class DmaResv {
  /** The lock's shared words (RL_*). Hand this to another worker to let it take the lock. */
  readonly lockSab: SharedArrayBuffer;
  readonly lockWord: Int32Array;
  /** obj->fences (owner thread's memory, see the file comment). */
  fences: DmaResvList | null = null;
  /** The thread whose memory holds the fence list. */
  readonly ownerThread: number = threadId;
  /** dma_resv_locking_ctx (the holder's context object, when the holder is this thread). */
  ctx: WwAcquireCtx | null = null;

  constructor(lockSab?: SharedArrayBuffer) {
    this.lockSab = lockSab ?? new SharedArrayBuffer(RL_WORDS * 4);
    this.lockWord = new Int32Array(this.lockSab);
  }
}

/** This thread's owner id in lock words: its fence runtime's alive token, or an untracked id. */
function ownerId(): number {
  return fenceRuntimeAttached() ? fenceRuntime().owner : untrackedOwner();
}

function ownerOnly(obj: DmaResv, what: string): void {
  if (threadId !== obj.ownerThread) {
    throw new Error(
      `dmabuf-sim: ${what}: this dma_resv's fence list lives in thread ${obj.ownerThread}'s memory ` +
        `(called from thread ${threadId}); only its lock is shared so far`,
    );
  }
}

function checkUsage(usage: number): asserts usage is DmaResvUsage {
  if (!(usage === 0 || usage === 1 || usage === 2 || usage === 3)) throw new RangeError(`bad dma_resv_usage ${usage}`);
}

// ---- init / fini -------------------------------------------------------------------------------------------------

/** dma_resv_init: a new reservation object (no fences, unlocked). */
export function dmaResvInit(): DmaResv {
  return new DmaResv();
}

/** dma_resv_fini: puts every fence; the object must be dead (a locked one warns, as mutex_destroy does). */
export function dmaResvFini(obj: DmaResv): void {
  ownerOnly(obj, 'dma_resv_fini');
  warnOn(Atomics.load(obj.lockWord, RL_STATE) !== 0, 'dma_resv_fini of a locked reservation object');
  const list = obj.fences;
  obj.fences = null;
  listFree(list);
}

// ---- the lock ----------------------------------------------------------------------------------------------------

/**
 * dma_resv_lock(obj, ctx): takes the reservation lock, sleeping while another worker holds it. Returns 0;
 * -EALREADY when `ctx` already holds it (ww_mutex); -EOWNERDEAD, with the lock held, when its previous holder died
 * holding it (see "A holder that dies" above; a warning reports it). Locking it again without a context in the
 * holding thread is a self-deadlock: a BUG (thrown) rather than a hang. Deadlock avoidance between contexts
 * (-EDEADLK) is the ww_mutex seam, not implemented yet.
 *
 * Bounded and race-free sleep: robustLock in table.ts (waiters bit set before sleeping, sleeps only while the
 * word still holds that exact value, never longer than LOCK_SLICE_MS before re-checking the holder's liveness).
 */
export function dmaResvLock(obj: DmaResv, ctx: WwAcquireCtx | null = null): number {
  const w = obj.lockWord;
  const me = ownerId();
  let ownerDied = false;
  const v = Atomics.compareExchange(w, RL_STATE, 0, me);
  if (v !== 0) {
    // Only this thread can store its own id, so this read cannot race with our own acquisition.
    if ((v & TOKEN_MASK) === me) {
      if (ctx && Atomics.load(w, RL_CTX) === ctx.stamp) return -E.EALREADY;
      BUG('recursive dma_resv_lock in one thread (AA deadlock)');
    }
    const rt = fenceRuntimeAttached() ? fenceRuntime() : null;
    rt?.spin.spinWhileEquals(w, RL_STATE, v);
    ownerDied = robustLock(w, RL_STATE, me, rt ? rt.table.alive : null);
    if (ownerDied) warn(`dma_resv_lock: the holder (owner ${v & TOKEN_MASK}) died holding the lock; taken over (EOWNERDEAD)`);
  }
  Atomics.store(w, RL_CTX, ctx ? ctx.stamp : 0);
  obj.ctx = ctx;
  return ownerDied ? -E.EOWNERDEAD : 0;
}

/** dma_resv_lock_interruptible: as dmaResvLock (nothing interrupts a worker, so never -EINTR). */
export function dmaResvLockInterruptible(obj: DmaResv, ctx: WwAcquireCtx | null = null): number {
  return dmaResvLock(obj, ctx);
}

/** dma_resv_lock_slow (seam): after -EDEADLK, which is not produced yet. */
export function dmaResvLockSlow(obj: DmaResv, ctx: WwAcquireCtx): void {
  dmaResvLock(obj, ctx);
}

/** dma_resv_trylock: true when the lock was taken. */
export function dmaResvTrylock(obj: DmaResv): boolean {
  const w = obj.lockWord;
  if (Atomics.compareExchange(w, RL_STATE, 0, ownerId()) !== 0) return false;
  Atomics.store(w, RL_CTX, 0);
  obj.ctx = null;
  return true;
}

/**
 * dma_resv_unlock: releases the lock. With CONFIG_DEBUG_MUTEXES semantics always on, the slots reserved but not
 * used are forgotten (dma_resv_reset_max_fences), so a reservation must be redone after any unlock. Unlocking a
 * lock this thread does not hold is a BUG.
 */
export function dmaResvUnlock(obj: DmaResv): void {
  const w = obj.lockWord;
  if ((Atomics.load(w, RL_STATE) & TOKEN_MASK) !== ownerId()) {
    BUG('dma_resv_unlock of a lock this thread does not hold');
  }
  if (threadId === obj.ownerThread) dmaResvResetMaxFences(obj);
  obj.ctx = null;
  Atomics.store(w, RL_CTX, 0);
  robustUnlock(w, RL_STATE);
}

/** dma_resv_is_locked: locked by anyone. */
export function dmaResvIsLocked(obj: DmaResv): boolean {
  return Atomics.load(obj.lockWord, RL_STATE) !== 0;
}

/** dma_resv_held: locked by this thread (lockdep_is_held). */
export function dmaResvHeld(obj: DmaResv): boolean {
  const v = Atomics.load(obj.lockWord, RL_STATE);
  return v !== 0 && (v & TOKEN_MASK) === ownerId();
}

/** dma_resv_assert_held: warns (lockdep_assert_held) when this thread does not hold the lock. */
export function dmaResvAssertHeld(obj: DmaResv): void {
  warnOn(!dmaResvHeld(obj), 'dma_resv_assert_held: reservation lock not held');
}

/** dma_resv_locking_ctx: the context the lock was taken with, or null. */
export function dmaResvLockingCtx(obj: DmaResv): WwAcquireCtx | null {
  return dmaResvHeld(obj) ? obj.ctx : null;
}

/** dma_resv_reset_max_fences (CONFIG_DEBUG_MUTEXES): forgets reserved but unused slots. */
export function dmaResvResetMaxFences(obj: DmaResv): void {
  const list = obj.fences;
  if (list) list.maxFences = list.numFences;
}

// ---- adding and replacing ----------------------------------------------------------------------------------------

/**
 * dma_resv_reserve_fences: makes room for `numFences` more fences (lock held). Returns 0, or -EINVAL (with a
 * warning) for 0, which always points at a bug in the caller's count. Growing compacts: signaled fences are
 * dropped (put) and the pending ones keep their order.
 */
export function dmaResvReserveFences(obj: DmaResv, numFences: number): number {
  ownerOnly(obj, 'dma_resv_reserve_fences');
  dmaResvAssertHeld(obj);
  if (warnOn(!numFences, 'dma_resv_reserve_fences(0)')) return -E.EINVAL;
  const old = obj.fences;
  let max: number;
  if (old && old.maxFences) {
    if (old.numFences + numFences <= old.maxFences) return 0;
    max = Math.max(old.numFences + numFences, old.maxFences * 2);
  } else {
    max = Math.max(4, roundupPowOfTwo(numFences));
  }
  const list = listAlloc(max);
  const signaled: DmaFence[] = [];
  let j = 0;
  for (let i = 0; i < (old ? old.numFences : 0); i++) {
    const e = old!.table[i]!;
    if (dmaFenceIsSignaled(e.fence)) signaled.push(e.fence);
    else list.table[j++] = { fence: e.fence, usage: e.usage };
  }
  list.numFences = j;
  obj.fences = list;
  if (old) {
    old.numFences = 0;
    old.table.length = 0;
  }
  for (const f of signaled) dmaFencePut(f);
  return 0;
}

/**
 * dma_resv_add_fence: adds `fence` with `usage` (lock held, room reserved), taking a new reference. It replaces
 * the first entry that is either of the same context with usage ≥ `usage` and not later than `fence`, or already
 * signaled (the replaced fence is put); otherwise it appends. Containers warn (add their components instead).
 * Appending without reserved room is a BUG (thrown).
 */
export function dmaResvAddFence(obj: DmaResv, fence: DmaFence, usage: DmaResvUsage): void {
  ownerOnly(obj, 'dma_resv_add_fence');
  checkUsage(usage);
  dmaFenceGet(fence);
  dmaResvAssertHeld(obj);
  warnOn(dmaFenceIsContainer(fence), `dma_resv_add_fence of a container (${fence})`);
  const fobj = obj.fences;
  if (!fobj) {
    dmaFencePut(fence);
    BUG('dma_resv_add_fence without dma_resv_reserve_fences');
  }
  const count = fobj.numFences;
  for (let i = 0; i < count; i++) {
    const e = fobj.table[i]!;
    const old = e.fence;
    if ((old.context === fence.context && e.usage >= usage && dmaFenceIsLaterOrSame(fence, old)) || dmaFenceIsSignaled(old)) {
      fobj.table[i] = { fence, usage };
      dmaFencePut(old);
      return;
    }
  }
  if (fobj.numFences >= fobj.maxFences) {
    dmaFencePut(fence);
    BUG(`dma_resv_add_fence without a reserved slot (num_fences ${fobj.numFences} >= max_fences ${fobj.maxFences})`);
  }
  fobj.table[count] = { fence, usage };
  fobj.numFences = count + 1;
}

/**
 * dma_resv_replace_fences: every fence of `context` becomes `replacement` with `usage` (lock held). Only valid
 * when the replaced operations no longer access the buffer once `replacement` signals.
 */
export function dmaResvReplaceFences(obj: DmaResv, context: number, replacement: DmaFence, usage: DmaResvUsage): void {
  ownerOnly(obj, 'dma_resv_replace_fences');
  checkUsage(usage);
  dmaResvAssertHeld(obj);
  const list = obj.fences;
  for (let i = 0; list && i < list.numFences; i++) {
    const old = list.table[i]!.fence;
    if (old.context !== context) continue;
    list.table[i] = { fence: dmaFenceGet(replacement), usage };
    dmaFencePut(old);
  }
}

// ---- iterators ---------------------------------------------------------------------------------------------------

/** struct dma_resv_iter (fields public as in C; `fences` is private to the iterator — tests poke it). */
export class DmaResvIter {
  fence: DmaFence | null = null;
  fenceUsage: DmaResvUsage = DMA_RESV_USAGE_KERNEL;
  index = 0;
  fences: DmaResvList | null = null;
  numFences = 0;
  isRestarted = false;
  constructor(
    public obj: DmaResv,
    public usage: DmaResvUsage,
  ) {}
}

/** dma_resv_iter_begin. */
export function dmaResvIterBegin(cursor: DmaResvIter, obj: DmaResv, usage: DmaResvUsage): void {
  checkUsage(usage);
  cursor.obj = obj;
  cursor.usage = usage;
  cursor.fence = null;
}

/** dma_resv_iter_end: drops the unlocked iterator's reference to the current fence. */
export function dmaResvIterEnd(cursor: DmaResvIter): void {
  dmaFencePut(cursor.fence);
  cursor.fence = null;
}

/** dma_resv_iter_usage: the usage of the current fence. */
export function dmaResvIterUsage(cursor: DmaResvIter): DmaResvUsage {
  return cursor.fenceUsage;
}

/** dma_resv_iter_is_restarted: true on the first fence after a (re)start. */
export function dmaResvIterIsRestarted(cursor: DmaResvIter): boolean {
  return cursor.isRestarted;
}

function iterRestartUnlocked(cursor: DmaResvIter): void {
  cursor.index = 0;
  cursor.numFences = 0;
  cursor.fences = cursor.obj.fences;
  if (cursor.fences) cursor.numFences = cursor.fences.numFences;
  cursor.isRestarted = true;
}

/** Walks to the next unsignaled fence of a usage ≤ cursor.usage and takes a reference to it. */
function iterWalkUnlocked(cursor: DmaResvIter): void {
  if (!cursor.fences) return;
  for (;;) {
    dmaFencePut(cursor.fence);
    cursor.fence = null;
    if (cursor.index >= cursor.numFences) break;
    const e = cursor.fences.table[cursor.index++];
    if (!e) {
      iterRestartUnlocked(cursor);
      continue;
    }
    // dma_fence_get_rcu: fails only if the entry's fence is being released (the list changed under us).
    cursor.fence = e.fence.rt.tryGet(e.fence.index, e.fence.gen);
    cursor.fenceUsage = e.usage;
    if (!cursor.fence) {
      iterRestartUnlocked(cursor);
      continue;
    }
    if (!dmaFenceIsSignaled(cursor.fence) && cursor.usage >= cursor.fenceUsage) break;
  }
}

/** dma_resv_iter_first_unlocked: the first pending fence (the cursor holds a reference to it), or null. */
export function dmaResvIterFirstUnlocked(cursor: DmaResvIter): DmaFence | null {
  ownerOnly(cursor.obj, 'dma_resv_iter_first_unlocked');
  do {
    iterRestartUnlocked(cursor);
    iterWalkUnlocked(cursor);
  } while (cursor.obj.fences !== cursor.fences);
  return cursor.fence;
}

/** dma_resv_iter_next_unlocked: the next pending fence, restarting when the object's list changed. */
export function dmaResvIterNextUnlocked(cursor: DmaResvIter): DmaFence | null {
  ownerOnly(cursor.obj, 'dma_resv_iter_next_unlocked');
  cursor.isRestarted = false;
  let restart = cursor.obj.fences !== cursor.fences;
  do {
    if (restart) iterRestartUnlocked(cursor);
    iterWalkUnlocked(cursor);
    restart = true;
  } while (cursor.obj.fences !== cursor.fences);
  return cursor.fence;
}

/** dma_resv_iter_first (lock held): the first fence of a usage ≤ cursor.usage, signaled or not (no reference). */
export function dmaResvIterFirst(cursor: DmaResvIter): DmaFence | null {
  ownerOnly(cursor.obj, 'dma_resv_iter_first');
  dmaResvAssertHeld(cursor.obj);
  cursor.index = 0;
  cursor.fences = cursor.obj.fences;
  const fence = dmaResvIterNext(cursor);
  cursor.isRestarted = true;
  return fence;
}

/** dma_resv_iter_next (lock held). */
export function dmaResvIterNext(cursor: DmaResvIter): DmaFence | null {
  dmaResvAssertHeld(cursor.obj);
  cursor.isRestarted = false;
  let fence: DmaFence;
  do {
    if (!cursor.fences || cursor.index >= cursor.fences.numFences) return null;
    const e = cursor.fences.table[cursor.index++]!;
    cursor.fenceUsage = e.usage;
    fence = e.fence;
  } while (cursor.fenceUsage > cursor.usage);
  return fence;
}

/** dma_resv_for_each_fence(cursor, obj, usage, fence): locked iteration (fences borrowed, no references). */
export function* dmaResvForEachFence(cursor: DmaResvIter, obj: DmaResv, usage: DmaResvUsage): Generator<DmaFence> {
  dmaResvIterBegin(cursor, obj, usage);
  for (let f = dmaResvIterFirst(cursor); f; f = dmaResvIterNext(cursor)) yield f;
}

/**
 * dma_resv_for_each_fence_unlocked(cursor, fence): unsignaled fences, each referenced by the cursor while it is
 * current. Initialise with dmaResvIterBegin and finish with dmaResvIterEnd (also after breaking out).
 */
export function* dmaResvForEachFenceUnlocked(cursor: DmaResvIter): Generator<DmaFence> {
  for (let f = dmaResvIterFirstUnlocked(cursor); f; f = dmaResvIterNextUnlocked(cursor)) yield f;
}

// ---- queries -----------------------------------------------------------------------------------------------------

/**
 * dma_resv_copy_fences: dst's fences become a snapshot of src's unsignaled fences (all usages), each with a new
 * reference; dst's old fences are put. dst locked. Returns 0.
 */
export function dmaResvCopyFences(dst: DmaResv, src: DmaResv): number {
  ownerOnly(dst, 'dma_resv_copy_fences');
  dmaResvAssertHeld(dst);
  let list: DmaResvList | null = null;
  const cursor = new DmaResvIter(src, DMA_RESV_USAGE_BOOKKEEP);
  dmaResvIterBegin(cursor, src, DMA_RESV_USAGE_BOOKKEEP);
  for (const f of dmaResvForEachFenceUnlocked(cursor)) {
    if (dmaResvIterIsRestarted(cursor)) {
      listFree(list);
      list = listAlloc(cursor.numFences);
      list.numFences = 0;
    }
    list!.table[list!.numFences++] = { fence: dmaFenceGet(f), usage: dmaResvIterUsage(cursor) };
  }
  dmaResvIterEnd(cursor);
  const old = dst.fences;
  dst.fences = list;
  listFree(old);
  return 0;
}

/**
 * dma_resv_get_fences: every unsignaled fence of usage ≤ `usage`, each with a new reference the caller puts, in
 * `out` (num_fences, fences). No lock needed. Returns 0.
 */
export function dmaResvGetFences(
  obj: DmaResv,
  usage: DmaResvUsage,
  out: { numFences: number; fences: DmaFence[] },
): number {
  out.numFences = 0;
  out.fences = [];
  const cursor = new DmaResvIter(obj, usage);
  dmaResvIterBegin(cursor, obj, usage);
  for (const fence of dmaResvForEachFenceUnlocked(cursor)) {
    if (dmaResvIterIsRestarted(cursor)) {
      while (out.numFences) dmaFencePut(out.fences[--out.numFences]!);
      out.fences.length = 0;
    }
    out.fences[out.numFences++] = dmaFenceGet(fence);
  }
  dmaResvIterEnd(cursor);
  return 0;
}

/**
 * dma_resv_get_singleton: one fence for all unsignaled fences of usage ≤ `usage` in `out.fence` — null for none,
 * the fence itself for one, a new array (new context, seqno 1, signal when all) for more. The caller puts it.
 * Returns 0. (Do not add the array back to a reservation object: containers do not belong there.)
 */
export function dmaResvGetSingleton(obj: DmaResv, usage: DmaResvUsage, out: { fence: DmaFence | null }): number {
  const got = { numFences: 0, fences: [] as DmaFence[] };
  const r = dmaResvGetFences(obj, usage, got);
  if (r) return r;
  if (got.numFences === 0) {
    out.fence = null;
    return 0;
  }
  if (got.numFences === 1) {
    out.fence = got.fences[0]!;
    return 0;
  }
  try {
    out.fence = dmaFenceArrayCreate(got.numFences, got.fences, dmaFenceContextAlloc(1), 1, false);
  } catch (e) {
    for (const f of got.fences) dmaFencePut(f);
    throw e;
  }
  return 0;
}

/**
 * dma_resv_wait_timeout: waits (synchronously) for every unsignaled fence of usage ≤ `usage`. Returns > 0 (the
 * time left; 1 for timeout 0 when nothing is pending), 0 on timeout. No lock needed. Do not call it on an
 * event-loop thread whose progress a signaller needs (the broker): use dmaResvWaitAsync or callbacks there.
 */
export function dmaResvWaitTimeout(obj: DmaResv, usage: DmaResvUsage, intr: boolean, timeout: number): number {
  let ret = timeout ? timeout : 1;
  const cursor = new DmaResvIter(obj, usage);
  dmaResvIterBegin(cursor, obj, usage);
  for (const fence of dmaResvForEachFenceUnlocked(cursor)) {
    ret = dmaFenceWaitTimeout(fence, intr, ret);
    if (ret <= 0) {
      dmaResvIterEnd(cursor);
      return ret;
    }
  }
  dmaResvIterEnd(cursor);
  return ret;
}

/** The event-loop twin of dmaResvWaitTimeout (Atomics.waitAsync per fence; the worker is kept alive meanwhile). */
export async function dmaResvWaitAsync(obj: DmaResv, usage: DmaResvUsage, timeout: number): Promise<number> {
  let ret = timeout ? timeout : 1;
  const got = { numFences: 0, fences: [] as DmaFence[] };
  dmaResvGetFences(obj, usage, got);
  try {
    for (const f of got.fences) {
      ret = await dmaFenceWaitAsync(f, ret);
      if (ret <= 0) return ret;
    }
    return ret;
  } finally {
    for (const f of got.fences) dmaFencePut(f);
  }
}

/** dma_resv_set_deadline: sets `deadlineNs` on every unsignaled fence of usage ≤ `usage`. */
export function dmaResvSetDeadline(obj: DmaResv, usage: DmaResvUsage, deadlineNs: number): void {
  const cursor = new DmaResvIter(obj, usage);
  dmaResvIterBegin(cursor, obj, usage);
  for (const fence of dmaResvForEachFenceUnlocked(cursor)) dmaFenceSetDeadline(fence, deadlineNs);
  dmaResvIterEnd(cursor);
}

/** dma_resv_test_signaled: true when every fence of usage ≤ `usage` has signaled. No lock needed. */
export function dmaResvTestSignaled(obj: DmaResv, usage: DmaResvUsage): boolean {
  const cursor = new DmaResvIter(obj, usage);
  dmaResvIterBegin(cursor, obj, usage);
  for (const fence of dmaResvForEachFenceUnlocked(cursor)) {
    void fence;
    dmaResvIterEnd(cursor);
    return false;
  }
  dmaResvIterEnd(cursor);
  return true;
}

/**
 * dma_resv_describe: "\t<usage> fence:<driver> <timeline> seq <n> [un]signalled\n" for every fence of usage ≤
 * READ (BOOKKEEP is never shown) — what debugfs bufinfo prints under a buffer. Lock held.
 */
export function dmaResvDescribe(obj: DmaResv): string {
  let s = '';
  const cursor = new DmaResvIter(obj, DMA_RESV_USAGE_READ);
  for (const fence of dmaResvForEachFence(cursor, obj, DMA_RESV_USAGE_READ)) {
    s += `\t${DMA_RESV_USAGE_NAMES[dmaResvIterUsage(cursor)]} fence:${dmaFenceDescribe(fence)}`;
  }
  return s;
}

/** Every fence with its usage, signaled or not (debugging and tests; owner thread). */
export function dmaResvEntries(obj: DmaResv): { fence: DmaFence; usage: DmaResvUsage }[] {
  ownerOnly(obj, 'dma_resv_entries');
  const l = obj.fences;
  if (!l) return [];
  return l.table.slice(0, l.numFences).map((e) => ({ fence: e.fence, usage: e.usage }));
}
