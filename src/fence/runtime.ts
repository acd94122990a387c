/**
 * FenceRuntime: one worker's attachment to the machine's fence table — its views and wrapper cache, its creator id
 * and doorbell bucket, the callbacks it registered, and the sleeping half of every fence wait (spin, then
 * Atomics.wait or Atomics.waitAsync on a leaf's signal word or this worker's doorbell). Any worker may hold one;
 * attachFenceTable() (index.ts) creates it and makes it the worker's current runtime.
 */
import { E } from '../uapi/errno.js';
import { ktimeGetNs } from '../shm/clock.js';
import { AdaptiveSpin } from '../shm/spin.js';
import { spinBlockOf } from '../shm/control-block.js';
import { BUG, warn } from '../bug.js';
import {
  DOORBELL_BUCKETS,
  FenceTable,
  KIND_MASK,
  KIND_PLAIN,
  KIND_SHIFT,
  S64_CONTEXT,
  S64_SEQNO,
  S_CB_PENDING,
  S_ERROR,
  S_FLAGS,
  S_GEN,
  S_REFCOUNT,
  S_SIGNAL,
  S_WAITERS,
  untrackedOwner,
} from './table.js';
import { DmaFence, DmaFenceCb, evaluateSlow, kindOps, signalInner, type DmaFenceOps } from './dma-fence.js';

const noop = (): void => {};
/** How long the broker waits for the names lock before the call fails (ENOMEM) instead of stalling the kernel. */
export const BROKER_NAMES_LOCK_MS = 100;

interface PendingCallbacks {
  readonly fence: DmaFence;
  readonly cbs: DmaFenceCb[];
}

export interface FenceAttachOptions {
  /** The machine control block: spinning then shares the machine-wide spinner budget with syscall waiters. */
  readonly control?: SharedArrayBuffer;
  /**
   * An event-loop worker (the broker): callbacks registered here run promptly, from an Atomics.waitAsync watcher
   * on this worker's doorbell, instead of only at this worker's waits and explicit pumps.
   */
  readonly eventLoop?: boolean;
  /**
   * This worker's owner token in the table's alive table, when someone registered it already (the broker does for
   * every machine process, and clears it when the process dies). Without it the worker registers itself, and
   * whoever started the worker should clear the token when it ends (FenceRuntime.owner, AliveTable.clear).
   */
  readonly owner?: number;
  /** With `control`: the machine's spin limit, by value (the control block's own word is process-writable). */
  readonly maxSpinners?: number;
  /**
   * The machine table's kernel state (createSplitFenceTable): kernel-side workers only (the broker, the main
   * thread, processes spawned with { kernelFences: true }). Without it a machine table is attached wait-only:
   * waiting works, creating or freeing a fence throws FenceWaitOnlyError. A standalone table carries its own.
   */
  readonly kernel?: SharedArrayBuffer;
  /**
   * This worker's creator id, when the kernel handed one out for it (a driver worker: the broker allocates it so
   * that, when the driver dies, it can find the fences the driver created and nobody else will ever signal).
   * Without it the worker takes a new one from the table.
   */
  readonly attachId?: number;
}

/**
 * The longest a fence sleep lasts before its waiter re-checks the fence (ms). Every Atomics.wait /
 * waitAsync on a fence word or doorbell is cut into slices this long, so a wake lost to a signaller that died
 * between its S_SIGNAL compareExchange and its notify / doorbell ring costs at most one slice.
 */
export const FENCE_SLICE_MS = 50;

/**
 * One worker's attachment to a fence table: views, the wrapper cache, this worker's doorbell bucket and its
 * pending callbacks. Created by attachFenceTable() (index.ts).
 */
/** Where a sleeping wait waits (FenceRuntime.planSleep): an Int32 word index, the value it must still hold. */
interface SleepPlan {
  readonly word: number;
  readonly value: number;
  /** A single fence's signal word (spinning pays off), rather than the worker's doorbell. */
  readonly leaf: boolean;
}

export class FenceRuntime {
  readonly table: FenceTable;
  readonly i32: Int32Array;
  /** This worker's creator id (≥ 1). */
  readonly attachId: number;
  /** This worker's owner token in the table's alive table (src/shm/alive.ts). */
  readonly owner: number;
  /** This worker's bit in S_WAITERS masks, and the Int32 index of its doorbell word. */
  readonly bit: number;
  readonly bell: number;
  readonly spin: AdaptiveSpin;
  readonly eventLoop: boolean;
  /** ops registered in this worker, by names pair (hooks are local; names are shared). The first one wins. */
  private readonly opsByKey = new Map<string, DmaFenceOps>();
  /** opsByKey resolved by names id, with the entry's generation (a freed-and-reused id must not find old hooks). */
  private readonly opsById: ({ readonly gen: number; readonly ops: DmaFenceOps | undefined } | undefined)[] = [];
  private readonly wrappers: (DmaFence | undefined)[] = [];
  private readonly pending = new Map<number, PendingCallbacks>();
  private pumping = false;
  private seenBell = 0;
  private watching = false;
  /** Callbacks run so far (statistics; also lets runFenceCallbacks() report how many it ran). */
  callbacksRun = 0;

  constructor(sab: SharedArrayBuffer, opts: FenceAttachOptions = {}) {
    this.table = new FenceTable(sab, opts.kernel ?? null);
    this.i32 = this.table.i32;
    this.attachId = opts.attachId ?? this.table.newAttachId();
    const bucket = this.attachId % DOORBELL_BUCKETS;
    this.bit = 1 << bucket;
    this.bell = this.table.doorbellWord(bucket);
    this.seenBell = Atomics.load(this.i32, this.bell);
    // A wait-only worker cannot register itself (the alive table is kernel state): untracked, never presumed dead.
    this.owner = opts.owner ?? defaultOwner ?? this.table.alive?.register() ?? untrackedOwner();
    this.table.owner = this.owner;
    this.spin = new AdaptiveSpin(
      opts.control ? spinBlockOf(opts.control) : this.table.spinControl,
      this.owner,
      this.table.alive,
      opts.control ? (opts.maxSpinners ?? null) : null,
    );
    this.eventLoop = opts.eventLoop ?? false;
    // An event-loop worker (the broker) never stalls long behind a lock word any process can write.
    if (this.eventLoop) this.table.namesLockTimeoutMs = BROKER_NAMES_LOCK_MS;
  }

  // ---- views -------------------------------------------------------------------------------------------------

  /**
   * The (cached) view of slot `index`, generation `gen`. Callers know the fence is alive; the index may still come
   * from a shared word any process can write (a handle in a chain or array), so a miss checks it is a slot of
   * this table: a BUG (reported, never an out-of-bounds access) otherwise.
   */
  wrap(index: number, gen: number): DmaFence {
    const w = this.wrappers[index];
    if (w !== undefined && w.gen === gen) return w;
    this.slotIndex(index, 'fence handle');
    const kind = (Atomics.load(this.i32, this.table.base(index) + S_FLAGS) >> KIND_SHIFT) & KIND_MASK;
    const f = kind === KIND_PLAIN || kind === 0 ? new DmaFence(this, index, gen) : kindOps(kind).wrap(this, index, gen);
    this.wrappers[index] = f;
    return f;
  }

  /**
   * `index`, read from a shared word (a handle, a link), checked to name a slot of this table. A BUG otherwise:
   * the word was corrupted (by a process writing the table), and nothing may index with it.
   */
  slotIndex(index: number, what: string): number {
    if (!(index >= 0 && index < this.table.nslots) || !Number.isInteger(index)) {
      BUG(`${what}: slot index ${index} outside the fence table (a corrupted fence word?)`);
    }
    return index;
  }

  /**
   * A step counter for walks along links in shared words (array extensions, chain links): a walk longer than
   * the table has slots went round a cycle someone wrote, and is a BUG instead of a hang.
   */
  walkStep(steps: number, what: string): number {
    if (steps > this.table.nslots) BUG(`${what}: a walk of more than ${this.table.nslots} links (a cycle in corrupted fence words?)`);
    return steps + 1;
  }

  /** The fence an i64 handle word names (borrowed: the holder of the word owns the reference), or null. */
  fromI64(h: bigint): DmaFence | null {
    if (h === 0n) return null;
    return this.wrap(Number(h & 0xffffffffn), Number(h >> 32n) | 0);
  }

  checkLive(f: DmaFence, what: string): void {
    if (f.rt !== this) BUG(`${what}: fence of another table/worker view`);
    if (Atomics.load(this.i32, f.base + S_GEN) !== f.gen) BUG(`${what} on a released fence (slot ${f.index}.${f.gen})`);
  }

  // ---- creation ----------------------------------------------------------------------------------------------

  /**
   * Allocates and initialises a slot (refcount still −1, so nobody can take a reference yet); publish() makes it a
   * live fence with one reference.
   */
  createSlot(kind: number, nameId: number, context: number, seqno: bigint, flags: number): number {
    const t = this.table;
    let index: number;
    try {
      index = t.allocSlot(kind, this.attachId);
    } catch (e) {
      t.putNames(nameId); // the intern's reference: no slot took it over
      throw e;
    }
    const b = t.base(index);
    const b64 = b >> 1;
    t.u64[b64 + S64_CONTEXT] = BigInt(context);
    t.u64[b64 + S64_SEQNO] = BigInt.asUintN(64, seqno);
    t.setSlotNameId(index, nameId);
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

  /**
   * The names id for `ops` with one reference on it (createSlot hands it to the new slot), remembering the ops'
   * hooks in this worker.
   */
  nameIdFor(ops: DmaFenceOps): number {
    this.registerOps(ops);
    return this.table.internNames(ops.driverName, ops.timelineName);
  }

  /** Remembers `ops`' hooks in this worker for every fence with its names (the first ops for a pair win). */
  registerOps(ops: DmaFenceOps): void {
    const key = `${ops.driverName}\u0000${ops.timelineName}`;
    if (!this.opsByKey.has(key)) this.opsByKey.set(key, ops);
  }

  /**
   * The hooks this worker registered for names entry `nameId` (undefined: none here). Cached by id and checked
   * against the entry's generation, since a names id is reused once its last fence is gone.
   */
  opsOf(nameId: number): DmaFenceOps | undefined {
    const gen = this.table.namesGen(nameId);
    if (gen < 0) return undefined;
    const c = this.opsById[nameId];
    if (c && c.gen === gen) return c.ops;
    const [d, t] = this.table.names(nameId);
    const ops = this.opsByKey.get(`${d}\u0000${t}`);
    this.opsById[nameId] = { gen, ops };
    return ops;
  }

  // ---- references --------------------------------------------------------------------------------------------

  /** kref_get: BUG on a released fence (the kernel's refcount_t "addition on 0; use-after-free"). */
  get(f: DmaFence): void {
    this.checkLive(f, 'dma_fence_get');
    const old = Atomics.add(this.i32, f.base + S_REFCOUNT, 1);
    if (old <= 0) {
      Atomics.sub(this.i32, f.base + S_REFCOUNT, 1);
      BUG(`dma_fence_get on a fence with refcount ${old} (${f})`);
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
      if (v <= 0) BUG(`dma_fence_put: refcount underflow on slot ${index}`);
      if (v === 1) {
        if (index === this.table.stubIndex) BUG('the global stub fence lost its last reference (one put too many)');
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
        // A dma_fence_cb runs under the fence's spinlock in the kernel: atomic context for the lock validator.
        callbackHooks?.enter();
        try {
          fn?.(f, cb);
        } finally {
          callbackHooks?.exit();
        }
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
    // Sliced: a signaller that died before ringing us costs one slice, then the pump finds the S_SIGNAL word set.
    const r = Atomics.waitAsync(this.i32, this.bell, this.seenBell, FENCE_SLICE_MS);
    if (!r.async) setImmediate(fire);
    else void r.value.then(fire);
  }

  // ---- sleeping ----------------------------------------------------------------------------------------------

  /**
   * Sleeps until one of `blockers` may have signaled, or `leftMs` passed, or one slice (FENCE_SLICE_MS) ended
   * (spurious returns are fine: callers re-evaluate). `owned` is a blocker the caller holds a reference on; the
   * others are kept alive by the fence the caller waits on (a composite holds its components).
   *
   * `beforeWait` (the lock watchdog's publication, dma-fence.ts) runs only when the call is about to block in
   * Atomics.wait — after the spin, never for a wait the spin ended — and returning true skips the sleep (the
   * watchdog condemned the wait). A spin is bounded (SPIN_MAX_US), so a wait that lasts is always published.
   */
  sleepOn(blockers: readonly DmaFence[], leftMs: number, owned: DmaFence | null, beforeWait: (() => boolean) | null = null): void {
    void owned;
    const plan = this.planSleep(blockers);
    if (!plan) return;
    const i32 = this.i32;
    if (Atomics.load(i32, plan.word) !== plan.value) return;
    // Spin briefly (bounded, shared budget) on a leaf's signal word before sleeping; a doorbell is only rung
    // for multi-fence waits, which are rare enough not to be worth a spinner slot.
    if (plan.leaf && this.spin.spinWhileEquals(i32, plan.word, plan.value)) return;
    if (beforeWait !== null && beforeWait()) return;
    // Bounded: the caller re-evaluates after every slice (a lost notify costs at most FENCE_SLICE_MS).
    Atomics.wait(i32, plan.word, plan.value, Math.min(leftMs, FENCE_SLICE_MS));
  }

  /** Async twin of sleepOn for event-loop workers (Atomics.waitAsync, worker kept alive while pending). */
  async sleepOnAsync(blockers: readonly DmaFence[], leftMs: number, owned: DmaFence | null): Promise<void> {
    void owned;
    const plan = this.planSleep(blockers);
    if (!plan) return;
    await waitAsyncWord(this.i32, plan.word, plan.value, Math.min(leftMs, FENCE_SLICE_MS));
  }

  /**
   * Where a sleep on `blockers` waits (shared by sleepOn and sleepOnAsync): one leaf → its signal word, which
   * must still hold 0; several → this worker's doorbell, which must still hold the value read before interest
   * was registered. null: no sleep needed (a blocker was released or signaled meanwhile — re-evaluate).
   *
   * No references are taken for the sleep: a worker killed while it sleeps must leave nothing behind (it can
   * never put them). The price is one race, bounded by the slice: a blocker released and its slot reused between
   * the caller's evaluation and the sleep leaves us on a stranger's word for at most FENCE_SLICE_MS. The
   * generation checks below catch every release that happened before we sleep.
   *
   * Race-free otherwise: a signaller stores S_SIGNAL (compareExchange 0 → 1) before it notifies the leaf word, so
   * a wait on the leaf returns at once if the signal came first. For the doorbell, we read it before setting our
   * interest bits; a signaller stores S_SIGNAL and then loads S_WAITERS: if it missed our bit, interested() (after
   * setting it) sees its S_SIGNAL; otherwise it rings the doorbell after our read, so the wait returns or wakes.
   */
  private planSleep(blockers: readonly DmaFence[]): SleepPlan | null {
    const i32 = this.i32;
    if (blockers.length === 1) {
      const leaf = blockers[0]!;
      if (Atomics.load(i32, leaf.base + S_GEN) !== leaf.gen) return null;
      return { word: leaf.base + S_SIGNAL, value: 0, leaf: true };
    }
    const seen = Atomics.load(i32, this.bell);
    if (this.interested(blockers)) return null;
    for (const b of blockers) if (Atomics.load(i32, b.base + S_GEN) !== b.gen) return null;
    return { word: this.bell, value: seen, leaf: false };
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
export function waitAsyncWord(i32: Int32Array, index: number, value: number, ms: number): Promise<void> {
  const r = Atomics.waitAsync(i32, index, value, ms);
  if (!r.async) return Promise.resolve();
  const keep = setInterval(noop, 1 << 30);
  return r.value.then(() => clearInterval(keep));
}

// ---- the current runtime ---------------------------------------------------------------------------------------

let defaultOwner: number | null = null;

/**
 * The owner token attachFenceTable uses in this worker when its options name none: a machine process's runtime
 * sets it to the token the broker registered for the process (so a fence runtime attached later by any library
 * code is owned by the process, and dies with it) instead of registering a token nobody would clear.
 */
export function setDefaultFenceOwner(owner: number | null): void {
  defaultOwner = owner;
}

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

/** What runs around every fence callback in this worker (src/locking/fence-lockdep.ts: atomic context). */
export interface FenceCallbackHooks {
  enter(): void;
  exit(): void;
}
let callbackHooks: FenceCallbackHooks | null = null;

/** Installs (or with null removes) this worker's callback hooks. */
export function setFenceCallbackHooks(h: FenceCallbackHooks | null): void {
  callbackHooks = h;
}
