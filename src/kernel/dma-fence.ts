/**
 * dma_fence (drivers/dma-buf/dma-fence.c) as real cross-thread synchronisation: every fence is a slot of the
 * shared fence table (src/shm/fence-table.ts), and any worker attached to the table can create, signal, query,
 * reference and wait on any fence with Atomics — no broker round trip on the hot path.
 *
 * ## Threads
 * Every function here may be called from any worker attached to the table (attachFenceTable() in fences.ts),
 * including the broker. A DmaFence object is a per-worker view (runtime, slot index, generation) of shared state;
 * fences travel between workers as FenceHandles (index, gen) together with a reference the sender gives up.
 *
 * ## Signalling and waiting
 * Signalling is compareExchange(S_SIGNAL, 0 → 1) — the winner writes the timestamp, sets F_TIMESTAMP, notifies the
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
  FenceTable,
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
  S_NAME_ID,
  S_REFCOUNT,
  S_SIGNAL,
  S_WAITERS,
  DOORBELL_BUCKETS,
} from '../shm/fence-table.js';
import { AdaptiveSpin } from '../shm/spin.js';
import { warn, warnOn } from './warn.js';

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

function kindOps(kind: number): FenceKindOps {
  const k = kinds[kind];
  if (!k) {
    throw new Error(
      `dmabuf-sim: fence kind '${KIND_NAMES[kind] ?? kind}' is not loaded in this worker: attach with ` +
        `attachFenceTable() from src/kernel/fences.js, which loads every kind`,
    );
  }
  return k;
}

function bug(message: string): never {
  throw new Error(`BUG: ${message}`);
}

const noop = (): void => {};

/** A dma_fence_cb: the function and where it is queued (this worker only). */
export type DmaFenceFunc = (fence: DmaFence, cb: DmaFenceCb) => void;

export class DmaFenceCb {
  func: DmaFenceFunc | null = null;
  /** The fence this callback is queued on in this worker, or null when it is not pending. */
  fence: DmaFence | null = null;
}

interface PendingCallbacks {
  readonly fence: DmaFence;
  readonly cbs: DmaFenceCb[];
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
    return Atomics.load(this.rt.i32, this.base + S_NAME_ID);
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

export interface FenceAttachOptions {
  /** The machine control block: spinning then shares the machine-wide spinner budget with syscall waiters. */
  readonly control?: SharedArrayBuffer;
  /**
   * An event-loop worker (the broker): callbacks registered here run promptly, from an Atomics.waitAsync watcher
   * on this worker's doorbell, instead of only at this worker's waits and explicit pumps.
   */
  readonly eventLoop?: boolean;
}

/**
 * One worker's attachment to a fence table: views, the wrapper cache, this worker's doorbell bucket and its
 * pending callbacks. Created by attachFenceTable() (fences.ts).
 */
/** Where a sleeping wait waits (FenceRuntime.planSleep): an Int32 word index, the value it must still hold. */
interface SleepPlan {
  readonly word: number;
  readonly value: number;
  /** A single fence's signal word (spinning pays off), rather than the worker's doorbell. */
  readonly leaf: boolean;
  /** References taken for the sleep, to put afterwards. */
  readonly refs: readonly DmaFence[];
}

export class FenceRuntime {
  readonly table: FenceTable;
  readonly i32: Int32Array;
  /** This worker's creator id (≥ 1). */
  readonly attachId: number;
  /** This worker's bit in S_WAITERS masks, and the Int32 index of its doorbell word. */
  readonly bit: number;
  readonly bell: number;
  readonly spin: AdaptiveSpin;
  readonly eventLoop: boolean;
  /** ops registered in this worker, by names id (hooks are local; names are shared). */
  readonly ops = new Map<number, DmaFenceOps>();
  private readonly wrappers: (DmaFence | undefined)[] = [];
  private readonly pending = new Map<number, PendingCallbacks>();
  private pumping = false;
  private seenBell = 0;
  private watching = false;
  /** Callbacks run so far (statistics; also lets runFenceCallbacks() report how many it ran). */
  callbacksRun = 0;

  constructor(sab: SharedArrayBuffer, opts: FenceAttachOptions = {}) {
    this.table = new FenceTable(sab);
    this.i32 = this.table.i32;
    this.attachId = this.table.newAttachId();
    const bucket = this.attachId % DOORBELL_BUCKETS;
    this.bit = 1 << bucket;
    this.bell = this.table.doorbellWord(bucket);
    this.seenBell = Atomics.load(this.i32, this.bell);
    this.spin = new AdaptiveSpin(opts.control ? new Int32Array(opts.control) : this.table.spinControl);
    this.eventLoop = opts.eventLoop ?? false;
  }

  // ---- views -------------------------------------------------------------------------------------------------

  /** The (cached) view of slot `index`, generation `gen`. No validation: callers know the fence is alive. */
  wrap(index: number, gen: number): DmaFence {
    const w = this.wrappers[index];
    if (w !== undefined && w.gen === gen) return w;
    const kind = (Atomics.load(this.i32, this.table.base(index) + S_FLAGS) >> KIND_SHIFT) & KIND_MASK;
    const f = kind === KIND_PLAIN || kind === 0 ? new DmaFence(this, index, gen) : kindOps(kind).wrap(this, index, gen);
    this.wrappers[index] = f;
    return f;
  }

  /** The fence an i64 handle word names (borrowed: the holder of the word owns the reference), or null. */
  fromI64(h: bigint): DmaFence | null {
    if (h === 0n) return null;
    return this.wrap(Number(h & 0xffffffffn), Number(h >> 32n) | 0);
  }

  checkLive(f: DmaFence, what: string): void {
    if (f.rt !== this) bug(`${what}: fence of another table/worker view`);
    if (Atomics.load(this.i32, f.base + S_GEN) !== f.gen) bug(`${what} on a released fence (slot ${f.index}.${f.gen})`);
  }

  // ---- creation ----------------------------------------------------------------------------------------------

  /**
   * Allocates and initialises a slot (refcount still −1, so nobody can take a reference yet); publish() makes it a
   * live fence with one reference.
   */
  createSlot(kind: number, nameId: number, context: number, seqno: bigint, flags: number): number {
    const t = this.table;
    const index = t.allocSlot(kind, this.attachId);
    const b = t.base(index);
    const b64 = b >> 1;
    t.u64[b64 + S64_CONTEXT] = BigInt(context);
    t.u64[b64 + S64_SEQNO] = BigInt.asUintN(64, seqno);
    Atomics.store(this.i32, b + S_NAME_ID, nameId);
    Atomics.or(this.i32, b + S_FLAGS, flags);
    return index;
  }

  /** Publishes a slot from createSlot() as a fence with one reference (kref_init). */
  publish(index: number): DmaFence {
    const b = this.table.base(index);
    const gen = Atomics.load(this.i32, b + S_GEN);
    Atomics.store(this.i32, b + S_REFCOUNT, 1);
    return this.wrap(index, gen);
  }

  /** The names id for `ops`, remembering the ops' hooks in this worker. */
  nameIdFor(ops: DmaFenceOps): number {
    const id = this.table.internNames(ops.driverName, ops.timelineName);
    if (!this.ops.has(id)) this.ops.set(id, ops);
    return id;
  }

  // ---- references --------------------------------------------------------------------------------------------

  /** kref_get: BUG on a released fence (the kernel's refcount_t "addition on 0; use-after-free"). */
  get(f: DmaFence): void {
    this.checkLive(f, 'dma_fence_get');
    const old = Atomics.add(this.i32, f.base + S_REFCOUNT, 1);
    if (old <= 0) {
      Atomics.sub(this.i32, f.base + S_REFCOUNT, 1);
      bug(`dma_fence_get on a fence with refcount ${old} (${f})`);
    }
  }

  /**
   * kref_get_unless_zero plus the generation check of SLAB_TYPESAFE_BY_RCU: a reference to slot `index` if it
   * still holds generation `gen` and is not being released, else null (dropping the reference it may have taken
   * on the slot's next occupant — which can release that one, exactly as dma_fence_get_rcu_safe's put does).
   */
  tryGet(index: number, gen: number): DmaFence | null {
    const i32 = this.i32;
    const w = this.table.base(index) + S_REFCOUNT;
    for (;;) {
      const v = Atomics.load(i32, w);
      if (v <= 0) return null;
      if (Atomics.compareExchange(i32, w, v, v + 1) === v) break;
    }
    if (Atomics.load(i32, this.table.base(index) + S_GEN) !== gen) {
      this.putIndex(index);
      return null;
    }
    return this.wrap(index, gen);
  }

  put(f: DmaFence): void {
    this.checkLive(f, 'dma_fence_put');
    this.putIndex(f.index);
  }

  /** Drops one reference to slot `index`; the last one releases it (and, iteratively, what it held). */
  putIndex(index: number): void {
    if (this.dropRef(index)) this.releaseLoop(index);
  }

  /**
   * Drops one reference; returns true when it was the last and the slot is now ours to free.
   *
   * dma_fence_release's "released with pending signals" case (callbacks queued, fence unsignaled) is handled
   * *before* the count reaches 0, while our reference still pins the slot: once it is 0, a worker whose callback
   * runs could drop S_CB_PENDING to 0 and free the slot under us. The price: a get_rcu_safe racing with that last
   * put may still get the fence (then signaled with -EDEADLK) instead of failing — only ever on this already-buggy
   * path. The decrement is a compareExchange loop so the "is this the last one" test and the decrement agree.
   */
  private dropRef(index: number): boolean {
    const i32 = this.i32;
    const b = this.table.base(index);
    const w = b + S_REFCOUNT;
    const gen = Atomics.load(i32, b + S_GEN);
    for (;;) {
      const v = Atomics.load(i32, w);
      if (v <= 0) bug(`dma_fence_put: refcount underflow on slot ${index}`);
      if (v === 1) {
        if (index === this.table.stubIndex) bug('the global stub fence lost its last reference (one put too many)');
        if (Atomics.load(i32, b + S_CB_PENDING) > 0 && Atomics.load(i32, b + S_SIGNAL) === 0) {
          const f = this.wrap(index, gen);
          warn(
            `Fence ${f.driverName}:${f.timelineName}:${f.context.toString(16)}:${f.seqno.toString(16)} ` +
              `released with pending signals!`,
          );
          Atomics.store(i32, b + S_ERROR, -E.EDEADLK);
          signalInner(f, ktimeGetNs());
        }
      }
      if (Atomics.compareExchange(i32, w, v, v - 1) === v) {
        if (v > 1) return false;
        break;
      }
    }
    // Refcount 0. With callbacks still queued in other workers the slot lives on (a "zombie": refcount 0,
    // S_CB_PENDING > 0) until the last of them ran or was removed; cbDone() then frees it.
    return this.claim(index, gen);
  }

  /** Claims a slot with no references and no pending callbacks for freeing; exactly one caller wins. */
  private claim(index: number, gen: number): boolean {
    const i32 = this.i32;
    const b = this.table.base(index);
    if (Atomics.load(i32, b + S_GEN) !== gen) return false;
    if (Atomics.load(i32, b + S_REFCOUNT) !== 0 || Atomics.load(i32, b + S_CB_PENDING) !== 0) return false;
    return Atomics.compareExchange(i32, b + S_REFCOUNT, 0, -1) === 0;
  }

  /** Frees a claimed slot and puts what it held, iteratively (a 4096-link chain must not recurse 4096 deep). */
  private releaseLoop(first: number): void {
    if (((Atomics.load(this.i32, this.table.base(first) + S_FLAGS) >> KIND_SHIFT) & KIND_MASK) === KIND_PLAIN) {
      this.table.freeSlot(first); // a plain fence holds nothing: the common case, without the worklist
      return;
    }
    const stack = [first];
    const puts: number[] = [];
    while (stack.length > 0) {
      const index = stack.pop()!;
      const kind = (Atomics.load(this.i32, this.table.base(index) + S_FLAGS) >> KIND_SHIFT) & KIND_MASK;
      puts.length = 0;
      if (kind !== KIND_PLAIN) kindOps(kind).release(this, index, puts);
      this.table.freeSlot(index);
      for (const c of puts) if (this.dropRef(c)) stack.push(c);
    }
  }

  // ---- callbacks ---------------------------------------------------------------------------------------------

  /** Queues `cb` on `f` in this worker (the slot's count was raised by the caller). */
  queue(f: DmaFence, cb: DmaFenceCb): void {
    let list = this.pending.get(f.index);
    if (!list || list.fence !== f) {
      list = { fence: f, cbs: [] };
      this.pending.set(f.index, list);
    }
    list.cbs.push(cb);
    this.watch();
  }

  /** Takes `cb` off this worker's queue for `f` (remove_callback on an unsignaled fence). */
  unqueue(f: DmaFence, cb: DmaFenceCb): boolean {
    const list = this.pending.get(f.index);
    if (!list || list.fence !== f) return false;
    const i = list.cbs.indexOf(cb);
    if (i < 0) return false;
    list.cbs.splice(i, 1);
    if (list.cbs.length === 0) this.pending.delete(f.index);
    cb.fence = null;
    this.cbDone(f.index, f.gen);
    return true;
  }

  /** One pending callback fewer; the last one frees a zombie slot. */
  private cbDone(index: number, gen: number): void {
    const i32 = this.i32;
    const b = this.table.base(index);
    const left = Atomics.sub(i32, b + S_CB_PENDING, 1) - 1;
    if (left === 0 && Atomics.load(i32, b + S_REFCOUNT) === 0 && this.claim(index, gen)) this.releaseLoop(index);
  }

  /**
   * Runs, FIFO, this worker's callbacks queued on slot `index` (the fence is signaled). A throwing callback does
   * not stop the others; the first error is rethrown at the end.
   */
  runList(index: number): number {
    const list = this.pending.get(index);
    if (!list) return 0;
    this.pending.delete(index);
    const f = list.fence;
    let n = 0;
    let failed = false;
    let error: unknown;
    for (const cb of list.cbs) {
      if (cb.fence !== f) continue;
      cb.fence = null;
      const fn = cb.func;
      try {
        fn?.(f, cb);
      } catch (e) {
        if (!failed) error = e;
        failed = true;
      } finally {
        n++;
        this.callbacksRun++;
        this.cbDone(index, f.gen);
      }
    }
    if (failed) throw error;
    return n;
  }

  /** Sets this worker's interest bit on leaf fences, so their signal rings this worker's doorbell. */
  arm(leaves: readonly DmaFence[]): void {
    const i32 = this.i32;
    for (const leaf of leaves) Atomics.or(i32, leaf.base + S_WAITERS, this.bit);
    // A leaf that signaled (or was released and its slot reused) before our bit landed may not have rung us:
    // ring ourselves so the next pump re-evaluates. Seq-cst: either the signaller's S_WAITERS load saw our bit, or
    // our loads below see its S_SIGNAL store / the generation bump that precedes any reuse.
    for (const leaf of leaves) {
      if (Atomics.load(i32, leaf.base + S_SIGNAL) !== 0 || Atomics.load(i32, leaf.base + S_GEN) !== leaf.gen) {
        this.selfRing();
        return;
      }
    }
  }

  selfRing(): void {
    Atomics.add(this.i32, this.bell, 1);
    Atomics.notify(this.i32, this.bell);
  }

  /** Number of fences with callbacks queued in this worker. */
  get pendingFences(): number {
    return this.pending.size;
  }

  /**
   * runFenceCallbacks(): runs every callback of this worker whose fence is signaled (evaluating composites, which
   * signals them when complete) and re-arms interest in composites' current blockers. Not re-entrant: a callback
   * that pumps again is a no-op. Returns the number of callbacks run.
   */
  runFenceCallbacks(): number {
    if (this.pumping) return 0;
    this.pumping = true;
    const before = this.callbacksRun;
    let failed = false;
    let error: unknown;
    try {
      // Read the doorbell before looking at the fences: a ring after this load is seen by the next pump.
      this.seenBell = Atomics.load(this.i32, this.bell);
      const blockers: DmaFence[] = [];
      for (const index of [...this.pending.keys()]) {
        const list = this.pending.get(index);
        if (!list) continue;
        const f = list.fence;
        try {
          if (Atomics.load(this.i32, f.base + S_SIGNAL) !== 0) {
            this.runList(index);
            continue;
          }
          blockers.length = 0;
          // Signalling a composite here runs this worker's list on it from dma_fence_signal.
          if (evaluateSlow(f, blockers)) {
            this.runList(index);
            continue;
          }
          if (f.kind !== KIND_PLAIN) this.arm(blockers);
        } catch (e) {
          if (!failed) error = e;
          failed = true;
        }
      }
    } finally {
      this.pumping = false;
    }
    if (failed) throw error;
    return this.callbacksRun - before;
  }

  /** The pump after a wait: only when a signal rang this worker since its last pump. */
  pumpIfRung(): void {
    if (this.pending.size !== 0 && Atomics.load(this.i32, this.bell) !== this.seenBell) this.runFenceCallbacks();
  }

  /**
   * Event-loop workers: arms an Atomics.waitAsync on this worker's doorbell while callbacks are pending.
   * Race-free: it waits for the doorbell to differ from the value the last pump read before scanning, so a ring
   * at any time after that scan started resolves it (at once if it already happened). A ref'd interval keeps the
   * worker alive meanwhile (a pending waitAsync does not, in Node 20).
   */
  private watch(): void {
    if (!this.eventLoop || this.watching || this.pending.size === 0) return;
    this.watching = true;
    const keep = setInterval(noop, 1 << 30);
    const fire = (): void => {
      clearInterval(keep);
      this.watching = false;
      try {
        this.runFenceCallbacks();
      } catch (e) {
        warn(`fence callback threw: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      }
      this.watch();
    };
    const r = Atomics.waitAsync(this.i32, this.bell, this.seenBell);
    if (!r.async) setImmediate(fire);
    else void r.value.then(fire);
  }

  // ---- sleeping ----------------------------------------------------------------------------------------------

  /**
   * Sleeps until one of `blockers` may have signaled, or `leftMs` passed (spurious returns are fine: callers
   * re-evaluate). `owned` is a blocker the caller holds a reference on; every other blocker is referenced for the
   * sleep, so its slot cannot be recycled under us (the wake would be lost).
   */
  sleepOn(blockers: readonly DmaFence[], leftMs: number, owned: DmaFence | null): void {
    const plan = this.planSleep(blockers, owned);
    if (!plan) return;
    try {
      const i32 = this.i32;
      if (Atomics.load(i32, plan.word) !== plan.value) return;
      // Spin briefly (bounded, shared budget) on a leaf's signal word before sleeping; a doorbell is only rung
      // for multi-fence waits, which are rare enough not to be worth a spinner slot.
      if (plan.leaf && this.spin.spinWhileEquals(i32, plan.word, plan.value)) return;
      Atomics.wait(i32, plan.word, plan.value, leftMs === Infinity ? undefined : leftMs);
    } finally {
      for (const r of plan.refs) this.putIndex(r.index);
    }
  }

  /** Async twin of sleepOn for event-loop workers (Atomics.waitAsync, worker kept alive while pending). */
  async sleepOnAsync(blockers: readonly DmaFence[], leftMs: number, owned: DmaFence | null): Promise<void> {
    const plan = this.planSleep(blockers, owned);
    if (!plan) return;
    try {
      await waitAsyncWord(this.i32, plan.word, plan.value, leftMs);
    } finally {
      for (const r of plan.refs) this.putIndex(r.index);
    }
  }

  /**
   * Where a sleep on `blockers` waits (shared by sleepOn and sleepOnAsync): one leaf → its signal word, which
   * must still hold 0; several → this worker's doorbell, which must still hold the value read before interest
   * was registered. Every blocker but `owned` is referenced for the sleep (dropped by the caller from `refs`), so
   * no slot is recycled under the sleeper and the wake cannot be lost. null: no sleep needed (a blocker was
   * released or signaled meanwhile — re-evaluate).
   *
   * Race-free: a signaller stores S_SIGNAL (compareExchange 0 → 1) before it notifies the leaf word, so a wait
   * on the leaf returns at once if the signal came first. For the doorbell, we read it before setting our
   * interest bits; a signaller stores S_SIGNAL and then loads S_WAITERS: if it missed our bit, interested() (after
   * setting it) sees its S_SIGNAL; otherwise it rings the doorbell after our read, so the wait returns or wakes.
   */
  private planSleep(blockers: readonly DmaFence[], owned: DmaFence | null): SleepPlan | null {
    if (blockers.length === 1) {
      const leaf = blockers[0]!;
      if (leaf === owned) return { word: leaf.base + S_SIGNAL, value: 0, leaf: true, refs: [] };
      if (!this.tryGet(leaf.index, leaf.gen)) return null;
      return { word: leaf.base + S_SIGNAL, value: 0, leaf: true, refs: [leaf] };
    }
    const refs = this.refAll(blockers);
    if (!refs) return null;
    const seen = Atomics.load(this.i32, this.bell);
    if (this.interested(refs)) {
      for (const r of refs) this.putIndex(r.index);
      return null;
    }
    return { word: this.bell, value: seen, leaf: false, refs };
  }

  private refAll(blockers: readonly DmaFence[]): DmaFence[] | null {
    const refs: DmaFence[] = [];
    for (const b of blockers) {
      const r = this.tryGet(b.index, b.gen);
      if (!r) {
        for (const x of refs) this.putIndex(x.index);
        return null;
      }
      refs.push(r);
    }
    return refs;
  }

  /** Sets our bit on every leaf; true if one is signaled already (then there is nothing to sleep for). */
  private interested(leaves: readonly DmaFence[]): boolean {
    const i32 = this.i32;
    for (const leaf of leaves) Atomics.or(i32, leaf.base + S_WAITERS, this.bit);
    for (const leaf of leaves) if (Atomics.load(i32, leaf.base + S_SIGNAL) !== 0) return true;
    return false;
  }
}

/**
 * Atomics.waitAsync with the Node 20 quirk handled: a pending waitAsync does not keep a worker's event loop alive,
 * so a ref'd interval is held until it settles.
 */
function waitAsyncWord(i32: Int32Array, index: number, value: number, ms: number): Promise<void> {
  const r = Atomics.waitAsync(i32, index, value, ms);
  if (!r.async) return Promise.resolve();
  const keep = setInterval(noop, 1 << 30);
  return r.value.then(() => clearInterval(keep));
}

// ---- the current runtime ---------------------------------------------------------------------------------------

let current: FenceRuntime | null = null;

/** Makes `rt` this worker's runtime for functions that create fences (attachFenceTable does this). */
export function setFenceRuntime(rt: FenceRuntime | null): void {
  current = rt;
}

/** This worker's fence runtime; throws when the worker never attached to a fence table. */
export function fenceRuntime(): FenceRuntime {
  if (!current) throw new Error('dmabuf-sim: no fence table attached in this worker (attachFenceTable())');
  return current;
}

/** True when this worker is attached to a fence table. */
export function fenceRuntimeAttached(): boolean {
  return current !== null;
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

/** __dma_fence_might_wait: records "locks held → fence wait" for the validator (a no-op seam for now). */
export function dmaFenceMightWait(): void {
  lockdepHooks?.mightWait();
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
  fenceRuntime().nameIdFor(ops);
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
 */
function signalInner(f: DmaFence, timestampNs: number): number {
  const rt = f.rt;
  const i32 = rt.i32;
  const b = f.base;
  if (Atomics.compareExchange(i32, b + S_SIGNAL, 0, 1) !== 0) return -E.EINVAL;
  rt.table.f64[f.base64 + S64_TIMESTAMP] = timestampNs;
  // The timestamp store above is visible to whoever observes F_TIMESTAMP (seq-cst or).
  Atomics.or(i32, b + S_FLAGS, F_SIGNALED | F_TIMESTAMP);
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
    const hook = f.rt.ops.get(f.nameId)?.signaled;
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
 * dma_fence_timestamp: when the fence signaled (ns, machine clock). Spins until the signaller published it, as
 * the kernel does; an unsignaled fence warns and gives "now".
 */
export function dmaFenceTimestamp(f: DmaFence): number {
  const i32 = f.rt.i32;
  if (warnOn(Atomics.load(i32, f.base + S_SIGNAL) === 0, `dma_fence_timestamp of unsignaled ${f}`)) {
    return ktimeGetNs();
  }
  while ((Atomics.load(i32, f.base + S_FLAGS) & F_TIMESTAMP) === 0) {
    /* cpu_relax: the signaller is between its compareExchange and its timestamp store */
  }
  return f.rt.table.f64[f.base64 + S64_TIMESTAMP]!;
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
  const hook = f.rt.ops.get(f.nameId)?.enableSignaling;
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
 * error. A negative timeout warns and returns -EINVAL. `intr` is accepted (nothing interrupts a worker, so no
 * -ERESTARTSYS). Event-loop workers should use dmaFenceWaitAsync instead. The caller holds a reference to `f`.
 */
export function dmaFenceWaitTimeout(f: DmaFence, intr: boolean, timeout: number): number {
  void intr;
  if (warnOn(timeout < 0, `dma_fence_wait_timeout(${timeout})`)) return -E.EINVAL;
  dmaFenceMightWait();
  dmaFenceEnableSwSignaling(f);
  const rt = f.rt;
  try {
    const steps = waitSteps(f, timeout);
    let s = steps.next();
    while (!s.done) {
      rt.sleepOn(s.value.blockers, s.value.leftMs, f);
      s = steps.next();
    }
    return s.value;
  } finally {
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
  if (timeout === 0) {
    for (let i = 0; i < fences.length; i++) {
      if (dmaFenceIsSignaled(fences[i]!)) {
        if (idx) idx.value = i;
        return 1;
      }
    }
    return 0;
  }
  dmaFenceMightWait();
  const deadline = timeout >= MAX_SCHEDULE_TIMEOUT ? Infinity : performance.now() + timeout;
  const blockers: DmaFence[] = [];
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
      rt.sleepOn(blockers, left, fences.length === 1 ? fences[0]! : null);
    }
  } finally {
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
  else rt.ops.get(f.nameId)?.setDeadline?.(f, deadlineNs);
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
