/**
 * dma_fence (drivers/dma-buf/dma-fence.c) as real cross-thread synchronisation: every fence is a slot of the
 * shared fence table (src/fence/table.ts), and any worker attached to the table can create, signal, query,
 * reference and wait on any fence with Atomics — no broker round trip on the hot path.
 *
 * ## Threads
 * Every function here may be called from any worker attached to the table (attachFenceTable() in index.ts),
 * including the broker. A DmaFence object is a per-worker view (runtime, slot index, generation) of shared state;
 * fences travel between workers as FenceHandles (index, gen) together with a reference the sender gives up.
 *
 * ## Signalling and waiting
 * Signalling is compareExchange(S_SIGNAL, 0 → 1) — the winner installs the timestamp, sets F_TIMESTAMP, notifies the
 * word and rings the doorbell of every worker bucket in S_WAITERS. A synchronous wait spins briefly (bounded,
 * shared spinner budget, src/shm/spin.ts) and then Atomics.waits on the fence's signal word. Event-loop threads
 * (the broker) use dmaFenceWaitAsync(), an Atomics.waitAsync that holds a ref'd handle so the worker stays alive.
 *
 * ## Callbacks run in the worker that registered them
 * A dma_fence_cb is a function: it can only run in the worker that owns it. add_callback() counts it in the slot
 * (S_CB_PENDING, so a release in any worker sees it), queues it in this worker (FIFO per fence) and sets this
 * worker's bit in S_WAITERS. The callbacks run:
 *   1. synchronously inside dma_fence_signal() when this worker is the signaller (as in the kernel);
 *   2. in this worker's runFenceCallbacks() pump, which a signal elsewhere makes due by ringing this worker's
 *      doorbell. The pump runs automatically after every wait this worker does (dmaFenceWait*, dmaResvWait*),
 *      promptly from an Atomics.waitAsync watcher in event-loop workers (attach with { eventLoop: true }: the
 *      broker), and whenever the worker calls runFenceCallbacks() itself;
 *   3. inside remove_callback() when the fence turned out to be signaled already (so `false` still means "the
 *      callback was, or is being, called").
 * FIFO holds per fence among one worker's callbacks; callbacks of different workers run concurrently, each in its
 * own worker.
 *
 * ## Composite fences (arrays, chains) signal lazily
 * A composite's state is a pure function of its components' shared words, so no particular thread has to be
 * responsive for it to signal: whoever asks — dma_fence_is_signaled(), get_status, a wait, a pump that has
 * callbacks on it — evaluates the components (the kernel's ops->signaled) and, when complete, signals the composite
 * itself (a compareExchange on S_SIGNAL picks one winner; the error is settled with a compareExchange from
 * PENDING_ERROR first). Waiting on a composite waits on the leaf fences blocking it: on the first unsignaled leaf's
 * word for "all" semantics (arrays, chains), or on this worker's doorbell after registering interest in every
 * candidate leaf for signal-on-any arrays (one word per waiter, so still a real Atomics.wait). Callbacks on a
 * composite re-arm interest on its current blockers in each pump, the way the kernel re-arms chain callbacks.
 * Consequence: a composite's S_SIGNAL word is authoritative only once it is 1 — never Atomics.wait on it directly.
 *
 * ## Lifetimes
 * Explicit get/put, never GC. The last put releases the slot unless callbacks are still pending somewhere: then,
 * if the fence is unsignaled, it is signaled with -EDEADLK and a warning (dma_fence_release), and the slot lives
 * on as a zombie until the last pending callback ran or was removed. Composite components are put at release.
 */
import { E } from '../uapi/errno.js';
import { ktimeGetNs } from '../shm/clock.js';
import {
  F_ENABLE_SIGNAL,
  F_HAS_DEADLINE,
  F_SEQNO64,
  F_SIGNALED,
  F_STUB,
  F_TIMESTAMP,
  KIND_ARRAY,
  KIND_CHAIN,
  KIND_MASK,
  KIND_NAMES,
  KIND_PLAIN,
  KIND_SHIFT,
  NAME_ID_STUB,
  PENDING_ERROR,
  S64_CONTEXT,
  S64_DEADLINE,
  S64_SEQNO,
  S64_TIMESTAMP,
  S_CB_PENDING,
  S_ERROR,
  S_FLAGS,
  S_GEN,
  S_REFCOUNT,
  S_SIGNAL,
  S_WAITERS,
} from './table.js';
import { warn, warnOn } from '../bug.js';
import { FAULT_FENCE_SIGNAL, faultArmed, faultPoint } from '../fault-inject.js';
import { fenceRuntime, type FenceRuntime } from './runtime.js';

export { FenceRuntime, fenceRuntime, fenceRuntimeAttached, setFenceRuntime, type FenceAttachOptions } from './runtime.js';

/** Timeouts are in jiffies of 1 ms (HZ = 1000); MAX_SCHEDULE_TIMEOUT waits forever. */
export const HZ = 1000;
export const MAX_SCHEDULE_TIMEOUT = Number.MAX_SAFE_INTEGER;
export const MAX_ERRNO = 4095;

/** A fence as it travels between workers: slot index and generation (plus a reference, by convention). */
export interface FenceHandle {
  readonly index: number;
  readonly gen: number;
}

/**
 * dma_fence_ops. The names go to the shared names table (every worker can print them); the hooks are functions and
 * so exist only in workers that registered these ops (by creating a fence with them, or registerFenceOps()).
 * Cross-thread, a fence is signaled explicitly with dma_fence_signal(); the hooks are local conveniences.
 */
export interface DmaFenceOps {
  readonly driverName: string;
  readonly timelineName: string;
  /** ops->use_64bit_seqno: seqnos compare as u64 instead of with 32-bit wrap-around. */
  readonly use64bitSeqno?: boolean;
  /** ops->signaled: polled by dma_fence_is_signaled(); true makes it signal the fence. */
  readonly signaled?: (f: DmaFence) => boolean;
  /** ops->enable_signaling: false means "already signaled" and the fence is signaled at once. */
  readonly enableSignaling?: (f: DmaFence) => boolean;
  /** ops->set_deadline. */
  readonly setDeadline?: (f: DmaFence, deadlineNs: number) => void;
}

/** What a composite's ops->signaled found when it is complete. */
export interface CompositeDone {
  /** 0 or the −errno the composite signals with. */
  readonly error: number;
  readonly timestampNs: number;
}

/**
 * Kernel-internal ops of a fence kind (arrays, chains), registered by their modules. All of them may run in any
 * worker, concurrently with the same calls in other workers.
 */
export interface FenceKindOps {
  readonly name: string;
  readonly container: boolean;
  /** The per-worker view object for a slot of this kind. */
  wrap(rt: FenceRuntime, index: number, gen: number): DmaFence;
  /**
   * ops->signaled, side-effect free except the chain's garbage collection: the result when complete, else null
   * after appending to `blockers` (when given) the leaf fences whose signal would let it progress.
   */
  signaled(f: DmaFence, blockers: DmaFence[] | null): CompositeDone | null;
  /** ops->release: appends the slot indexes of the references the fence holds; frees its extension slots. */
  release(rt: FenceRuntime, index: number, puts: number[]): void;
  setDeadline?(f: DmaFence, deadlineNs: number): void;
}

const kinds: (FenceKindOps | undefined)[] = [];

/** Registers a composite kind's ops (dma-fence-array.ts, dma-fence-chain.ts do this when imported). */
export function registerFenceKind(kind: number, ops: FenceKindOps): void {
  if (kinds[kind] && kinds[kind] !== ops) throw new Error(`fence kind ${kind} registered twice`);
  kinds[kind] = ops;
}

export function kindOps(kind: number): FenceKindOps {
  const k = kinds[kind];
  if (!k) {
    throw new Error(
      `dmabuf-sim: fence kind '${KIND_NAMES[kind] ?? kind}' is not loaded in this worker: attach with ` +
        `attachFenceTable() from src/fence/index.ts, which loads every kind`,
    );
  }
  return k;
}


/** A dma_fence_cb: the function and where it is queued (this worker only). */
export type DmaFenceFunc = (fence: DmaFence, cb: DmaFenceCb) => void;

export class DmaFenceCb {
  func: DmaFenceFunc | null = null;
  /** The fence this callback is queued on in this worker, or null when it is not pending. */
  fence: DmaFence | null = null;
}

/**
 * struct dma_fence, as one worker sees it: a view of slot `index` for the fence of generation `gen`. Views are
 * cached per worker, so within a worker the same fence is always the same object (pointer comparison works).
 */
export class DmaFence {
  /** Int32 index of the slot's first word. */
  readonly base: number;
  /** Index of the slot's first 64-bit word. */
  readonly base64: number;

  constructor(
    readonly rt: FenceRuntime,
    readonly index: number,
    readonly gen: number,
  ) {
    this.base = rt.table.base(index);
    this.base64 = this.base >> 1;
  }

  get context(): number {
    return Number(this.rt.table.u64[this.base64 + S64_CONTEXT]);
  }
  get seqno(): bigint {
    return this.rt.table.u64[this.base64 + S64_SEQNO]!;
  }
  /** fence->error: 0, −errno, or PENDING_ERROR for an unsignaled array. */
  get error(): number {
    return Atomics.load(this.rt.i32, this.base + S_ERROR);
  }
  get flags(): number {
    return Atomics.load(this.rt.i32, this.base + S_FLAGS);
  }
  get kind(): number {
    return (Atomics.load(this.rt.i32, this.base + S_FLAGS) >> KIND_SHIFT) & KIND_MASK;
  }
  get nameId(): number {
    return this.rt.table.slotNameId(this.index);
  }
  /** dma_fence_driver_name(). */
  get driverName(): string {
    return this.rt.table.names(this.nameId)[0];
  }
  /** dma_fence_timeline_name(). */
  get timelineName(): string {
    return this.rt.table.names(this.nameId)[1];
  }
  get refcount(): number {
    return Atomics.load(this.rt.i32, this.base + S_REFCOUNT);
  }
  get handle(): FenceHandle {
    return { index: this.index, gen: this.gen };
  }
  toString(): string {
    return `${this.driverName}:${this.timelineName}:${this.context}:${this.seqno} (slot ${this.index}.${this.gen})`;
  }
}

// ---- lockdep seams ----------------------------------------------------------------------------------------------

/**
 * Hooks the lock validator will install (lockdep.md, "Fences are locks too"): begin/end of a signalling section
 * (read-acquire / release of the dma_fence_map pseudo-lock) and every fence wait (write acquire+release).
 */
export interface FenceLockdepHooks {
  beginSignalling(): void;
  endSignalling(): void;
  mightWait(): void;
}

let lockdepHooks: FenceLockdepHooks | null = null;
let signallingHeld = false;

export function setFenceLockdepHooks(hooks: FenceLockdepHooks | null): void {
  lockdepHooks = hooks;
}

/**
 * dma_fence_begin_signalling: opens a signalling section in this worker. Returns the cookie for
 * dma_fence_end_signalling: true when a section was already open (nested begins are no-ops).
 */
export function dmaFenceBeginSignalling(): boolean {
  if (signallingHeld) return true;
  signallingHeld = true;
  lockdepHooks?.beginSignalling();
  return false;
}

/** dma_fence_end_signalling(cookie). */
export function dmaFenceEndSignalling(cookie: boolean): void {
  if (cookie) return;
  signallingHeld = false;
  lockdepHooks?.endSignalling();
}

/** __dma_fence_might_wait: records "locks held → fence wait" for the validator (a no-op unless it is installed). */
export function dmaFenceMightWait(): void {
  lockdepHooks?.mightWait();
}

/**
 * Hooks of the lock watchdog (src/locking/watchdog.ts), installed per worker with the validator's: a sleeping
 * fence wait publishes what it waits for. sleep() runs right before every Atomics.wait of a wait — after the
 * bounded spin, so a wait the spin ends never publishes (FenceRuntime.sleepOn's beforeWait): with gen 0 it may publish and
 * returns the publication's number (0: nothing published); later it refreshes it and returns −gen when the
 * watchdog condemned the wait (the wait then fails with -EDEADLK). end() runs once when the wait ends.
 */
export interface FenceWaitHooks {
  sleep(gen: number, f: DmaFence, blockers: readonly DmaFence[], any: boolean): number;
  end(gen: number): void;
  /**
   * A process's syscall that waits for fences inside the kernel (`what`: DMA_BUF_IOCTL_SYNC, poll) has been parked
   * for a slice: with gen 0 it may publish the wait (returns its number, 0: nothing published), later it refreshes
   * it. Such a wait cannot be failed from here (the kernel holds it): hung reports only.
   */
  parked(gen: number, what: string): number;
}

let waitHooks: FenceWaitHooks | null = null;

export function setFenceWaitHooks(hooks: FenceWaitHooks | null): void {
  waitHooks = hooks;
}

/**
 * Runs `call` (a syscall that may park in the kernel waiting for fences) with its parked slices published through
 * the watchdog hooks (`runtime.sliceHook`: the process C library's per-slice hook). Costs nothing unless the call
 * stays parked a whole slice.
 */
export function fenceParkedCall<R>(runtime: { sliceHook: (() => void) | null }, what: string, call: () => R): R {
  const hooks = waitHooks;
  if (hooks === null) return call();
  let gen = 0;
  runtime.sliceHook = () => {
    gen = hooks.parked(gen, what);
  };
  try {
    return call();
  } finally {
    runtime.sliceHook = null;
    if (gen !== 0) hooks.end(gen);
  }
}

/**
 * Annotates who will signal `f` (an owner token: a worker's FenceRuntime.owner; default this worker's, 0 =
 * unknown), so the lock watchdog can follow a wait on `f` to that worker: a driver for its job fences, sw_sync for
 * its timeline's points, a test for the fences it plays the device of. Kernel-side workers only (the annotation is
 * kernel state); it lives as long as the fence.
 */
export function dmaFenceSetSignaller(f: DmaFence, owner: number = f.rt.owner): void {
  f.rt.checkLive(f, 'dma_fence_set_signaller');
  f.rt.table.setSlotSignaller(f.index, owner);
}

/** The owner token annotated as `f`'s signaller (0: none, or this worker cannot read kernel state). */
export function dmaFenceSignaller(f: DmaFence): number {
  return f.rt.table.slotSignaller(f.index);
}

// ---- contexts, init, stubs -----------------------------------------------------------------------------------------

/** dma_fence_context_alloc(num): the first of `num` new contexts, from the machine-wide counter starting at 1. */
export function dmaFenceContextAlloc(num: number): number {
  warnOn(!num, 'dma_fence_context_alloc(0)');
  return fenceRuntime().table.contextAlloc(num);
}

/**
 * dma_fence_init (allocation included): a new unsignaled fence with one reference, on this worker's table.
 * Throws FenceTableFullError when the table is full.
 */
export function dmaFenceInit(ops: DmaFenceOps, context: number, seqno: number | bigint): DmaFence {
  const rt = fenceRuntime();
  const flags = ops.use64bitSeqno ? F_SEQNO64 : 0;
  return rt.publish(rt.createSlot(KIND_PLAIN, rt.nameIdFor(ops), context, BigInt(seqno), flags));
}

/** dma_fence_init64: as dmaFenceInit, with 64-bit seqno semantics (DMA_FENCE_FLAG_SEQNO64_BIT). */
export function dmaFenceInit64(ops: DmaFenceOps, context: number, seqno: number | bigint): DmaFence {
  const rt = fenceRuntime();
  return rt.publish(rt.createSlot(KIND_PLAIN, rt.nameIdFor(ops), context, BigInt(seqno), F_SEQNO64));
}

/** Registers ops' hooks in this worker for fences created elsewhere with the same names. */
export function registerFenceOps(ops: DmaFenceOps): void {
  fenceRuntime().registerOps(ops);
}

/** dma_fence_get_stub: a new reference to the machine's global signaled stub (context 0, names "stub"). */
export function dmaFenceGetStub(): DmaFence {
  const rt = fenceRuntime();
  const idx = rt.table.stubIndex;
  const f = rt.wrap(idx, Atomics.load(rt.i32, rt.table.base(idx) + S_GEN));
  rt.get(f);
  return f;
}

/** dma_fence_allocate_private_stub(timestamp): a new fence, already signaled at `timestampNs`. */
export function dmaFenceAllocatePrivateStub(timestampNs: number): DmaFence {
  const rt = fenceRuntime();
  const f = rt.publish(rt.createSlot(KIND_PLAIN, NAME_ID_STUB, 0, 0n, F_STUB | F_ENABLE_SIGNAL));
  signalInner(f, timestampNs);
  return f;
}

// ---- handles ------------------------------------------------------------------------------------------------------

/** The handle to send a fence to another worker (send a reference with it, or keep yours until it is done). */
export function fenceHandle(f: DmaFence): FenceHandle {
  return { index: f.index, gen: f.gen };
}

/** The i64 handle word form: (gen << 32) | index; 0n for null. */
export function fenceToI64(f: DmaFence | null): bigint {
  if (!f) return 0n;
  return BigInt.asIntN(64, (BigInt(f.gen >>> 0) << 32n) | BigInt(f.index));
}

/**
 * The fence a handle names, as a view in this worker. Takes no reference: the caller must own one (sent with the
 * handle) or know someone keeps the fence alive. Throws on a stale handle.
 */
export function dmaFenceFromHandle(h: FenceHandle, rt: FenceRuntime = fenceRuntime()): DmaFence {
  const b = rt.table.base(h.index);
  const ref = Atomics.load(rt.i32, b + S_REFCOUNT);
  const zombie = ref === 0 && Atomics.load(rt.i32, b + S_CB_PENDING) > 0;
  if (Atomics.load(rt.i32, b + S_GEN) !== h.gen || (ref <= 0 && !zombie)) {
    throw new Error(`dmabuf-sim: stale fence handle ${h.index}.${h.gen}`);
  }
  return rt.wrap(h.index, h.gen);
}

/**
 * dma_fence_get_rcu_safe: a new reference to the fence a shared handle word points at, or null when it is 0.
 * Safe against the word being repointed and the fence released concurrently: it takes the reference only while
 * the refcount is non-zero, checks the slot generation, and retries when the word changed meanwhile.
 */
export function dmaFenceGetRcuSafe(
  word: BigInt64Array,
  at: number,
  rt: FenceRuntime = fenceRuntime(),
): DmaFence | null {
  for (;;) {
    const h = Atomics.load(word, at);
    if (h === 0n) return null;
    const f = rt.tryGet(Number(h & 0xffffffffn), Number(h >> 32n) | 0);
    if (f) {
      if (Atomics.load(word, at) === h) return f;
      rt.putIndex(f.index);
    }
  }
}

// ---- get / put ---------------------------------------------------------------------------------------------------

/** dma_fence_get: a new reference (null passes through). */
export function dmaFenceGet<T extends DmaFence | null | undefined>(f: T): T {
  if (f) f.rt.get(f);
  return f;
}

/** dma_fence_put: drops a reference (null is fine); the last one releases the fence. */
export function dmaFencePut(f: DmaFence | null | undefined): void {
  if (f) f.rt.put(f);
}

// ---- signalling -------------------------------------------------------------------------------------------------

/**
 * The signal itself: claims S_SIGNAL, publishes the timestamp, wakes waiters, rings interested workers and runs
 * this worker's callbacks on the fence. Returns -EINVAL when the fence was signaled already.
 *
 * A signaller may die (a killed worker) anywhere after its compareExchange. Everything after it is therefore
 * repairable by others: the timestamp is installed with a compareExchange from "unset" that a reader may win first
 * (dmaFenceTimestamp), and the notify and doorbell ring it would have done are covered by every sleeper waking
 * at least every FENCE_SLICE_MS to re-check S_SIGNAL. The fault seam below is where a test stops a signaller dead.
 */
export function signalInner(f: DmaFence, timestampNs: number): number {
  const rt = f.rt;
  const i32 = rt.i32;
  const b = f.base;
  if (Atomics.compareExchange(i32, b + S_SIGNAL, 0, 1) !== 0) return -E.EINVAL;
  if (faultArmed !== 0) faultPoint(FAULT_FENCE_SIGNAL);
  publishTimestamp(f, timestampNs);
  Atomics.notify(i32, b + S_SIGNAL);
  const mask = Atomics.load(i32, b + S_WAITERS);
  if (mask !== 0) rt.table.ring(mask);
  rt.runList(f.index);
  return 0;
}

/**
 * dma_fence_signal_timestamp: signals `f` as of `timestampNs` (machine clock), waking every waiter in every worker
 * and running this worker's callbacks on it now (others run in their workers). Any worker may call it.
 * Returns 0, or -EINVAL when `f` is null or already signaled (returned, not thrown, as the kernel does).
 */
export function dmaFenceSignalTimestamp(f: DmaFence | null, timestampNs: number): number {
  if (!f) return -E.EINVAL;
  f.rt.checkLive(f, 'dma_fence_signal');
  const cookie = dmaFenceBeginSignalling();
  try {
    return signalInner(f, timestampNs);
  } finally {
    dmaFenceEndSignalling(cookie);
  }
}

/** dma_fence_signal: dmaFenceSignalTimestamp at ktime_get(). */
export function dmaFenceSignal(f: DmaFence | null): number {
  return dmaFenceSignalTimestamp(f, ktimeGetNs());
}

/**
 * Signals a composite its ops->signaled found complete: settles the error first (compareExchange from
 * PENDING_ERROR, so the first observer's verdict wins), then the signal (compareExchange, one winner).
 */
function completeComposite(f: DmaFence, done: CompositeDone): void {
  const i32 = f.rt.i32;
  Atomics.compareExchange(i32, f.base + S_ERROR, PENDING_ERROR, done.error < 0 ? done.error : 0);
  const cookie = dmaFenceBeginSignalling();
  try {
    signalInner(f, done.timestampNs);
  } finally {
    dmaFenceEndSignalling(cookie);
  }
}

/**
 * The slow half of dma_fence_is_signaled (S_SIGNAL still 0): runs ops->signaled — a composite's evaluation, or a
 * plain fence's local hook — signalling the fence when it reports complete. When it is not, appends the leaves
 * blocking it to `blockers` (a plain fence blocks on itself).
 */
export function evaluateSlow(f: DmaFence, blockers: DmaFence[] | null): boolean {
  const kind = f.kind;
  if (kind === KIND_PLAIN) {
    const hook = f.rt.opsOf(f.nameId)?.signaled;
    if (hook && hook(f)) {
      dmaFenceSignal(f);
      return true;
    }
    if (Atomics.load(f.rt.i32, f.base + S_SIGNAL) !== 0) return true;
    blockers?.push(f);
    return false;
  }
  const done = kindOps(kind).signaled(f, blockers);
  if (!done) return false;
  completeComposite(f, done);
  return true;
}

/** dma_fence_is_signaled, collecting what blocks it when it is not (see evaluateSlow). */
export function isSignaledCollect(f: DmaFence, blockers: DmaFence[] | null): boolean {
  return Atomics.load(f.rt.i32, f.base + S_SIGNAL) !== 0 || evaluateSlow(f, blockers);
}

/**
 * dma_fence_is_signaled: true once signaled. For composites (and plain fences with a local ops->signaled) it
 * evaluates completion and signals the fence when complete, as the kernel's ops->signaled path does.
 */
export function dmaFenceIsSignaled(f: DmaFence): boolean {
  return Atomics.load(f.rt.i32, f.base + S_SIGNAL) !== 0 || evaluateSlow(f, null);
}

/** dma_fence_test_signaled_flag: only the flag, no evaluation. */
export function dmaFenceTestSignaledFlag(f: DmaFence): boolean {
  return Atomics.load(f.rt.i32, f.base + S_SIGNAL) !== 0;
}

/** dma_fence_get_status: 0 pending, 1 signaled, −errno signaled with an error. */
export function dmaFenceGetStatus(f: DmaFence): number {
  if (!dmaFenceIsSignaled(f)) return 0;
  return f.error || 1;
}

/**
 * dma_fence_set_error: only meaningful before the signal. Like the kernel, a call after the signal (or with an
 * error that is not a negative errno) warns and still stores the value.
 */
export function dmaFenceSetError(f: DmaFence, error: number): void {
  warnOn(Atomics.load(f.rt.i32, f.base + S_SIGNAL) !== 0, `dma_fence_set_error(${error}) after the signal of ${f}`);
  warnOn(error >= 0 || error < -MAX_ERRNO, `dma_fence_set_error(${error}): not a negative errno`);
  Atomics.store(f.rt.i32, f.base + S_ERROR, error);
}

/**
 * Installs the signal timestamp (S64_TIMESTAMP holds ns + 1, 0 while unset) unless someone did already, then sets
 * F_SIGNALED | F_TIMESTAMP. Returns the timestamp that won. Called by the signaller, and by a reader repairing a
 * signal whose signaller stopped after its S_SIGNAL compareExchange: one compareExchange from 0 decides, so the two
 * cannot conflict, and both then see the same value.
 */
function publishTimestamp(f: DmaFence, timestampNs: number): number {
  const i64 = f.rt.table.i64;
  const w = f.base64 + S64_TIMESTAMP;
  const mine = encodeTimestamp(timestampNs);
  const old = Atomics.compareExchange(i64, w, 0n, mine);
  // seq-cst: whoever sees F_TIMESTAMP also sees the installed value.
  Atomics.or(f.rt.i32, f.base + S_FLAGS, F_SIGNALED | F_TIMESTAMP);
  return decodeTimestamp(old === 0n ? mine : old);
}

/** S64_TIMESTAMP's encoding: never 0 (= unset): t + 1 for t ≥ 0, t itself for the (odd) negative ktime. */
function encodeTimestamp(ns: number): bigint {
  const t = BigInt(Math.round(ns));
  return t >= 0n ? t + 1n : t;
}
function decodeTimestamp(v: bigint): number {
  return Number(v > 0n ? v - 1n : v);
}

/** How long dmaFenceTimestamp lets a signaller finish publishing before it repairs the signal itself (ms). */
const TIMESTAMP_GRACE_MS = 1;

/**
 * dma_fence_timestamp: when the fence signaled (ns, machine clock); an unsignaled fence warns and gives "now".
 *
 * Bounded: the kernel spins while the signaller is between its test_and_set and its timestamp store, which on a
 * real CPU lasts nanoseconds. Here the signaller is a worker that may be killed right there, so we spin for at most
 * TIMESTAMP_GRACE_MS and then complete the signal ourselves: install "now" as the timestamp (a compareExchange the
 * signaller, if it is alive after all, merely loses), set the flags, notify the word and ring the waiters, and
 * report it as a kernel warning. "now" is after the real signal (S_SIGNAL was already 1), so it is a valid,
 * slightly late timestamp.
 */
export function dmaFenceTimestamp(f: DmaFence): number {
  const rt = f.rt;
  const i32 = rt.i32;
  if (warnOn(Atomics.load(i32, f.base + S_SIGNAL) === 0, `dma_fence_timestamp of unsignaled ${f}`)) {
    return ktimeGetNs();
  }
  const w = f.base64 + S64_TIMESTAMP;
  let v = Atomics.load(rt.table.i64, w);
  if (v !== 0n) return decodeTimestamp(v);
  const deadline = performance.now() + TIMESTAMP_GRACE_MS;
  for (let i = 0; v === 0n; i++) {
    if ((i & 63) === 63 && performance.now() > deadline) break;
    v = Atomics.load(rt.table.i64, w);
  }
  if (v !== 0n) return decodeTimestamp(v);
  const ts = repairSignal(f);
  warn(`dma_fence_timestamp: ${f} was signaled but its signaller never published the timestamp (died mid-signal?); completed by the reader`);
  return ts;
}

/**
 * Completes a signal whose signaller stopped after claiming S_SIGNAL (see dmaFenceTimestamp): timestamp, flags,
 * the notify and doorbell rings it owed. This worker's own callbacks on the fence run at its next pump.
 */
function repairSignal(f: DmaFence): number {
  const rt = f.rt;
  const ts = publishTimestamp(f, ktimeGetNs());
  Atomics.notify(rt.i32, f.base + S_SIGNAL);
  const mask = Atomics.load(rt.i32, f.base + S_WAITERS);
  if (mask !== 0) rt.table.ring(mask);
  return ts;
}

/**
 * dma_fence_enable_sw_signaling: sets ENABLE_SIGNAL; the first time, a local ops->enable_signaling may report the
 * fence done (then it is signaled). Composites need nothing more: they signal lazily.
 */
export function dmaFenceEnableSwSignaling(f: DmaFence): void {
  const i32 = f.rt.i32;
  const old = Atomics.or(i32, f.base + S_FLAGS, F_ENABLE_SIGNAL);
  if (old & F_ENABLE_SIGNAL || Atomics.load(i32, f.base + S_SIGNAL) !== 0) return;
  if (f.kind !== KIND_PLAIN) return;
  const hook = f.rt.opsOf(f.nameId)?.enableSignaling;
  if (hook && !hook(f)) dmaFenceSignal(f);
}

// ---- callbacks ----------------------------------------------------------------------------------------------------

/**
 * dma_fence_add_callback: queues `func` to run once `fence` signals — in THIS worker (see the file comment for
 * when). Returns 0, -ENOENT when the fence is signaled already (the callback is not called), -EINVAL without a
 * function. A composite found complete here is signaled and gives -ENOENT, as enable_signaling returning false
 * does in the kernel.
 */
export function dmaFenceAddCallback(fence: DmaFence, cb: DmaFenceCb, func: DmaFenceFunc): number {
  if (warnOn(!fence || !func, 'dma_fence_add_callback without fence or function')) return -E.EINVAL;
  const rt = fence.rt;
  rt.checkLive(fence, 'dma_fence_add_callback');
  const i32 = rt.i32;
  const b = fence.base;
  if (Atomics.load(i32, b + S_SIGNAL) !== 0) {
    cb.fence = null;
    return -E.ENOENT;
  }
  Atomics.or(i32, b + S_FLAGS, F_ENABLE_SIGNAL);
  const blockers: DmaFence[] | null = fence.kind === KIND_PLAIN ? null : [];
  if (evaluateSlow(fence, blockers)) {
    cb.fence = null;
    return -E.ENOENT;
  }
  cb.func = func;
  cb.fence = fence;
  Atomics.add(i32, b + S_CB_PENDING, 1);
  Atomics.or(i32, b + S_WAITERS, rt.bit);
  rt.queue(fence, cb);
  if (blockers) rt.arm(blockers);
  // A signal between our first check and the S_WAITERS bit may not have rung us: it is queued now, so make sure
  // our next pump looks (seq-cst: we see its S_SIGNAL store, or it saw our bit).
  if (Atomics.load(i32, b + S_SIGNAL) !== 0) rt.selfRing();
  return 0;
}

/**
 * dma_fence_remove_callback: true when `cb` was still pending on `fence` (it will never run); false when it was
 * not queued or the fence is signaled — then this worker's pending callbacks on the fence run now, so a false
 * return always means the callback has been called. As in the kernel, the caller holds a reference to `fence`.
 */
export function dmaFenceRemoveCallback(fence: DmaFence, cb: DmaFenceCb): boolean {
  const rt = fence.rt;
  if (cb.fence !== fence) return false;
  if (Atomics.load(rt.i32, fence.base + S_SIGNAL) === 0) return rt.unqueue(fence, cb);
  rt.runList(fence.index);
  return false;
}

/** runFenceCallbacks(): runs this worker's due callbacks now (see the file comment). Returns how many ran. */
export function runFenceCallbacks(rt: FenceRuntime = fenceRuntime()): number {
  return rt.runFenceCallbacks();
}

// ---- waiting ------------------------------------------------------------------------------------------------------

function remaining(deadline: number, timeout: number): number {
  if (timeout >= MAX_SCHEDULE_TIMEOUT) return MAX_SCHEDULE_TIMEOUT;
  return Math.max(1, Math.ceil(deadline - performance.now()));
}

/**
 * dma_fence_wait_timeout: sleeps (synchronously: Atomics.wait) until `f` signals or `timeout` jiffies (ms) pass.
 * Returns the remaining timeout (≥ 1) when signaled — 1 for timeout 0 — or 0 on timeout; never the fence's
 * error. A negative timeout warns and returns -EINVAL; -EDEADLK when the lock watchdog broke a real deadlock by
 * failing this wait (src/locking/watchdog.ts). `intr` is accepted (nothing interrupts a worker, so no
 * -ERESTARTSYS). Event-loop workers should use dmaFenceWaitAsync instead. The caller holds a reference to `f`.
 */
export function dmaFenceWaitTimeout(f: DmaFence, intr: boolean, timeout: number): number {
  void intr;
  if (warnOn(timeout < 0, `dma_fence_wait_timeout(${timeout})`)) return -E.EINVAL;
  dmaFenceMightWait();
  dmaFenceEnableSwSignaling(f);
  const rt = f.rt;
  const hooks = waitHooks;
  let gen = 0;
  try {
    const steps = waitSteps(f, timeout);
    let s = steps.next();
    // The watchdog's publication runs only where the wait really sleeps (after sleepOn's spin): a wait the spin
    // ends costs nothing more with the watchdog on. Without hooks (lock validation off) no closure is made.
    let blockers: readonly DmaFence[] = [];
    const publish =
      hooks === null
        ? null
        : (): boolean => {
            gen = hooks.sleep(gen, f, blockers, false);
            return gen < 0;
          };
    while (!s.done) {
      blockers = s.value.blockers;
      rt.sleepOn(blockers, s.value.leftMs, f, publish);
      if (gen < 0) return -E.EDEADLK; // the lock watchdog broke a real deadlock through this wait
      s = steps.next();
    }
    return s.value;
  } finally {
    if (gen !== 0) hooks!.end(Math.abs(gen));
    rt.pumpIfRung();
  }
}

/** What a wait sleeps on next: the unsignaled leaves blocking it and the time left (ms). */
interface WaitSleep {
  readonly blockers: DmaFence[];
  readonly leftMs: number;
}

/**
 * The body every single-fence wait shares: yields what to sleep on until `f` is signaled or the deadline passes,
 * and returns dma_fence_wait_timeout's value (remaining ≥ 1, 1 for timeout 0, 0 on timeout). The caller does the
 * sleeping, so one body serves Atomics.wait (dmaFenceWaitTimeout) and Atomics.waitAsync (dmaFenceWaitAsync).
 */
function* waitSteps(f: DmaFence, timeout: number): Generator<WaitSleep, number, void> {
  if (isSignaledCollect(f, null)) return timeout === 0 ? 1 : timeout;
  if (timeout === 0) return 0;
  const deadline = timeout >= MAX_SCHEDULE_TIMEOUT ? Infinity : performance.now() + timeout;
  const blockers: DmaFence[] = [];
  for (;;) {
    blockers.length = 0;
    if (isSignaledCollect(f, blockers)) return remaining(deadline, timeout);
    const leftMs = deadline - performance.now();
    if (leftMs <= 0) return 0;
    yield { blockers, leftMs };
  }
}

/** dma_fence_wait: an uninterrupted-or-not wait without timeout; 0 on success (a negative value on error). */
export function dmaFenceWait(f: DmaFence, intr: boolean): number {
  const ret = dmaFenceWaitTimeout(f, intr, MAX_SCHEDULE_TIMEOUT);
  return ret < 0 ? ret : 0;
}

/**
 * dma_fence_wait_any_timeout: sleeps until any of `fences` signals. Returns as dma_fence_wait_timeout (1 for
 * timeout 0 when one is signaled); `idx.value` gets the first signaled index on a positive return. An empty list
 * or a negative timeout warns and returns -EINVAL. Several leaves are waited for through this worker's doorbell.
 */
export function dmaFenceWaitAnyTimeout(
  fences: readonly DmaFence[],
  intr: boolean,
  timeout: number,
  idx?: { value: number },
): number {
  void intr;
  if (warnOn(fences.length === 0 || timeout < 0, 'dma_fence_wait_any_timeout: no fences or negative timeout')) {
    return -E.EINVAL;
  }
  const rt = fences[0]!.rt;
  // Annotated whatever the timeout (0 too), as every other fence wait: the verdict must not depend on timing.
  dmaFenceMightWait();
  if (timeout === 0) {
    for (let i = 0; i < fences.length; i++) {
      if (dmaFenceIsSignaled(fences[i]!)) {
        if (idx) idx.value = i;
        return 1;
      }
    }
    return 0;
  }
  const deadline = timeout >= MAX_SCHEDULE_TIMEOUT ? Infinity : performance.now() + timeout;
  const blockers: DmaFence[] = [];
  const hooks = waitHooks;
  let gen = 0;
  // As in dmaFenceWaitTimeout: published only where the wait really sleeps.
  const publish =
    hooks === null
      ? null
      : (): boolean => {
          gen = hooks.sleep(gen, fences[0]!, blockers, true);
          return gen < 0;
        };
  try {
    for (;;) {
      blockers.length = 0;
      for (let i = 0; i < fences.length; i++) {
        if (isSignaledCollect(fences[i]!, blockers)) {
          if (idx) idx.value = i;
          return remaining(deadline, timeout);
        }
      }
      const left = deadline - performance.now();
      if (left <= 0) return 0;
      rt.sleepOn(blockers, left, fences.length === 1 ? fences[0]! : null, publish);
      if (gen < 0) return -E.EDEADLK;
    }
  } finally {
    if (gen !== 0) hooks!.end(Math.abs(gen));
    rt.pumpIfRung();
  }
}

/**
 * The event-loop wait: resolves like dma_fence_wait_timeout's return value, sleeping with Atomics.waitAsync (the
 * worker is kept alive while it is pending). For the broker and other event-loop workers; the caller holds a
 * reference to `f` until it settles.
 */
export async function dmaFenceWaitAsync(f: DmaFence, timeout: number = MAX_SCHEDULE_TIMEOUT): Promise<number> {
  if (warnOn(timeout < 0, `dma_fence_wait_async(${timeout})`)) return -E.EINVAL;
  dmaFenceEnableSwSignaling(f);
  const rt = f.rt;
  try {
    const steps = waitSteps(f, timeout);
    let s = steps.next();
    while (!s.done) {
      await rt.sleepOnAsync(s.value.blockers, s.value.leftMs, f);
      s = steps.next();
    }
    return s.value;
  } finally {
    rt.pumpIfRung();
  }
}

// ---- ordering -----------------------------------------------------------------------------------------------------

/**
 * __dma_fence_is_later(fence, f1, f2): seqno f1 later than f2 on `fence`'s timeline — a u64 compare for 64-bit
 * seqno fences, else `(int32)(lower_32_bits(f1) − lower_32_bits(f2)) > 0` (wrap-around).
 */
export function dmaFenceSeqnoIsLater(f: DmaFence, s1: bigint, s2: bigint): boolean {
  if (f.flags & F_SEQNO64) return BigInt.asUintN(64, s1) > BigInt.asUintN(64, s2);
  return ((Number(s1 & 0xffffffffn) - Number(s2 & 0xffffffffn)) | 0) > 0;
}

/** dma_fence_is_later: f1 after f2 on their (common) timeline; different contexts warn and give false. */
export function dmaFenceIsLater(f1: DmaFence, f2: DmaFence): boolean {
  if (warnOn(f1.context !== f2.context, `dma_fence_is_later on different contexts (${f1} vs ${f2})`)) return false;
  return dmaFenceSeqnoIsLater(f1, f1.seqno, f2.seqno);
}

/** True when a and b are the same fence (same table, slot and generation). */
export function sameFence(a: DmaFence | null, b: DmaFence | null): boolean {
  if (a === b) return true;
  if (!a || !b) return false;
  return a.index === b.index && a.gen === b.gen && a.rt.table.sab === b.rt.table.sab;
}

/** dma_fence_is_later_or_same. */
export function dmaFenceIsLaterOrSame(f1: DmaFence, f2: DmaFence): boolean {
  return sameFence(f1, f2) || dmaFenceIsLater(f1, f2);
}

/** dma_fence_later: the later of two same-context fences, or null when that one is signaled (or contexts differ). */
export function dmaFenceLater(f1: DmaFence, f2: DmaFence): DmaFence | null {
  if (warnOn(f1.context !== f2.context, `dma_fence_later on different contexts (${f1} vs ${f2})`)) return null;
  if (dmaFenceIsLater(f1, f2)) return dmaFenceIsSignaled(f1) ? null : f1;
  return dmaFenceIsSignaled(f2) ? null : f2;
}

/** dma_fence_is_container: arrays and chains. */
export function dmaFenceIsContainer(f: DmaFence): boolean {
  const k = f.kind;
  return k === KIND_ARRAY || k === KIND_CHAIN;
}

/** True for the global stub and private stubs. */
export function dmaFenceIsStub(f: DmaFence): boolean {
  return (f.flags & F_STUB) !== 0;
}

// ---- deadlines, description ---------------------------------------------------------------------------------------

/**
 * dma_fence_set_deadline: asks the signaller to finish by `deadlineNs` (machine clock). The earliest deadline is
 * kept in the slot (readable from any worker with dmaFenceDeadline, the seam for a signaller in another worker);
 * composites pass it to their components; a plain fence's local ops->set_deadline hook runs when this worker has
 * one. No-op once signaled.
 */
export function dmaFenceSetDeadline(f: DmaFence, deadlineNs: number): void {
  if (dmaFenceIsSignaled(f)) return;
  const rt = f.rt;
  const w = f.base64 + S64_DEADLINE;
  const v = BigInt(Math.round(deadlineNs)) + 1n; // stored +1: 0 means "none"
  for (;;) {
    const cur = Atomics.load(rt.table.i64, w);
    if (cur !== 0n && cur <= v) break;
    if (Atomics.compareExchange(rt.table.i64, w, cur, v) === cur) break;
  }
  Atomics.or(rt.i32, f.base + S_FLAGS, F_HAS_DEADLINE);
  const kind = f.kind;
  if (kind !== KIND_PLAIN) kindOps(kind).setDeadline?.(f, deadlineNs);
  else rt.opsOf(f.nameId)?.setDeadline?.(f, deadlineNs);
}

/** The earliest deadline set on `f` (ns), or null. */
export function dmaFenceDeadline(f: DmaFence): number | null {
  if ((f.flags & F_HAS_DEADLINE) === 0) return null;
  const v = Atomics.load(f.rt.table.i64, f.base64 + S64_DEADLINE);
  return v === 0n ? null : Number(v - 1n);
}

/** dma_fence_describe: "<driver> <timeline> seq <n> [un]signalled\n". */
export function dmaFenceDescribe(f: DmaFence): string {
  return `${f.driverName} ${f.timelineName} seq ${f.seqno} ${dmaFenceIsSignaled(f) ? '' : 'un'}signalled\n`;
}
