/**
 * Bounded adaptive spinning (see shared/spec/perf-baseline.md): a cross-vCPU futex wake costs 30–45 µs on the
 * target VMs while a spinning round trip costs under 1 µs — but spinning with more runnable threads than vCPUs
 * starves the thread we wait for. So a waiter spins only (a) while holding one of the machine's spin slots and
 * (b) for a budget that grows while spins succeed and shrinks when they time out.
 *
 * ## Spin slot block (Int32 words from the block's start, all accessed with Atomics)
 *
 *   0 SB_MAX        how many slots may be used at once: vCPUs − 1 (the thread we wait for needs the other one)
 *   1 .. SB_SLOTS   slot owners: 0 = free, else the owner token (src/shm/alive.ts) of the worker spinning in it
 *
 * A slot belongs to a worker, not to a counter: it is taken with compareExchange(0 → owner) and given back with
 * compareExchange(owner → 0). A worker killed while it spins leaves its token in the slot; the slot comes back
 * when its owner's teardown calls releaseSpinSlots (the broker does, in reap), or when a would-be spinner finds
 * every slot taken and the alive table says a holder is dead. Either way no kill leaks a slot for good (a bare
 * counter did: after one kill mid-spin on a 2-vCPU machine nobody ever spun again).
 *
 * The block lives in the machine control block (SPIN_BLOCK in control-block.ts) and, for workers that attach a
 * fence table without a machine, in the fence table header (H_SPIN in src/fence/table.ts).
 */
import { BUG } from '../bug.js';
import { isTrackedToken, type AliveTable } from './alive.js';

export const SB_MAX = 0;
export const SB_FIRST_SLOT = 1;
export const SPIN_BLOCK_WORDS = 16;
/** Most slots a block can hold. */
export const SB_SLOTS = SPIN_BLOCK_WORDS - SB_FIRST_SLOT;

export const SPIN_MAX_US = 50;
const SPIN_MIN_US = 2;

/** Initialises a spin block (creation time, before the block is shared): `max` usable slots, clamped to SB_SLOTS. */
export function initSpinBlock(block: Int32Array, max: number): void {
  block[SB_MAX] = Math.max(0, Math.min(SB_SLOTS, Math.floor(max)));
}

/**
 * Gives back every slot `owner` holds (its teardown: the worker is dead, or will not spin again). Returns how
 * many it held. Any thread may call it; a compareExchange per slot, so it cannot free another owner's slot.
 */
export function releaseSpinSlots(block: Int32Array, owner: number): number {
  let n = 0;
  if (owner === 0) return 0;
  for (let i = SB_FIRST_SLOT; i < SPIN_BLOCK_WORDS; i++) {
    if (Atomics.compareExchange(block, i, owner, 0) === owner) n++;
  }
  return n;
}

/** Slots currently taken (diagnostics, tests). */
export function spinSlotsInUse(block: Int32Array): number {
  let n = 0;
  for (let i = SB_FIRST_SLOT; i < SPIN_BLOCK_WORDS; i++) if (Atomics.load(block, i) !== 0) n++;
  return n;
}

export class AdaptiveSpin {
  /** Current budget in µs; 0 = do not spin. */
  budgetUs = SPIN_MAX_US / 2;
  private misses = 0;
  /** Slots this spinner took back from dead owners (diagnostics). */
  reclaimed = 0;

  /**
   * @param block  the spin slot block (a view starting at its word 0)
   * @param owner  this worker's owner token (alive.ts), stamped in the slot while it spins; never 0
   * @param alive  the alive table, to take back slots of dead owners when every slot is taken
   */
  constructor(
    private readonly block: Int32Array,
    readonly owner: number,
    private readonly alive: AliveTable | null = null,
    /**
     * How many slots may be used at once, when the block's SB_MAX word cannot be trusted (the machine's block:
     * every process can write it): handed to the worker by value.
     */
    private readonly limit: number | null = null,
  ) {
    if (owner === 0) BUG('AdaptiveSpin needs a non-zero owner token');
  }

  /** Takes a free slot (compareExchange 0 → owner); returns its word index, or −1 when none is free. */
  private take(): number {
    const block = this.block;
    // Never past the block, whatever a shared word says.
    const max = this.limit ?? Atomics.load(block, SB_MAX);
    const end = SB_FIRST_SLOT + Math.max(0, Math.min(SB_SLOTS, max | 0));
    for (let i = SB_FIRST_SLOT; i < end; i++) {
      if (Atomics.compareExchange(block, i, 0, this.owner) === 0) return i;
    }
    // Every slot is taken: a holder may be dead (killed mid-spin, not reaped yet, or never reaped: a worker that
    // is not a machine process). Only owners the alive table knows can be presumed dead.
    const alive = this.alive;
    if (!alive) return -1;
    for (let i = SB_FIRST_SLOT; i < end; i++) {
      const o = Atomics.load(block, i);
      if (o !== 0 && isTrackedToken(o) && !alive.isAlive(o) && Atomics.compareExchange(block, i, o, this.owner) === o) {
        this.reclaimed++;
        return i;
      }
    }
    return -1;
  }

  /**
   * Spins until `word[index] !== value` or the budget runs out. Returns true if the value changed while spinning.
   * Only while holding a spin slot; without a free slot it returns false at once. `abort`, polled every few
   * dozen loads, ends the spin early (false) without changing the budget.
   */
  spinWhileEquals(word: Int32Array, index: number, value: number, abort?: () => boolean): boolean {
    return this.spin(word, index, value, false, abort);
  }

  /**
   * Spins until `word[index] === value` (one slot, one budget for a word that passes through intermediate values:
   * a lane's L_REQ → L_SERVING → L_REPLY). Returns true if it got there while spinning; otherwise as
   * spinWhileEquals.
   */
  spinUntilEquals(word: Int32Array, index: number, value: number): boolean {
    return this.spin(word, index, value, true);
  }

  private spin(word: Int32Array, index: number, value: number, until: boolean, abort?: () => boolean): boolean {
    if (this.budgetUs <= 0) {
      // Occasionally probe again, so a machine that became quiet regains fast round trips.
      if (++this.misses % 64 === 0) this.budgetUs = SPIN_MIN_US * 4;
      return false;
    }
    const slot = this.take();
    if (slot < 0) return false;
    const deadline = performance.now() + this.budgetUs / 1000;
    let hit = false;
    let aborted = false;
    try {
      for (let i = 0; ; i++) {
        if ((Atomics.load(word, index) === value) === until) {
          hit = true;
          break;
        }
        if ((i & 31) === 31) {
          if (performance.now() > deadline) break;
          if (abort?.()) {
            aborted = true;
            break;
          }
        }
      }
    } finally {
      Atomics.compareExchange(this.block, slot, this.owner, 0);
    }
    // An aborted spin says nothing about how long waits last: the budget stays.
    if (aborted) return false;
    if (hit) this.budgetUs = Math.min(SPIN_MAX_US, this.budgetUs * 2 || SPIN_MIN_US);
    else this.budgetUs = this.budgetUs > SPIN_MIN_US ? this.budgetUs / 2 : 0;
    return hit;
  }
}
