/**
 * Bounded adaptive spinning (see shared/spec/perf-baseline.md): a cross-vCPU futex wake costs 30–45 µs on the
 * target VMs while a spinning round trip costs under 1 µs — but spinning with more runnable threads than vCPUs
 * starves the thread we wait for. So a waiter spins only (a) while holding one of MAX_SPINNERS machine-wide spin
 * slots and (b) for a budget that grows while spins succeed and shrinks when they time out.
 */
import { MAX_SPINNERS, SPINNERS } from './control-block.js';

export const SPIN_MAX_US = 50;
const SPIN_MIN_US = 2;

export class AdaptiveSpin {
  /** Current budget in µs; 0 = do not spin. */
  budgetUs = SPIN_MAX_US / 2;
  private misses = 0;

  constructor(private readonly ctl: Int32Array) {}

  /**
   * Spins until `word[index] !== value` or the budget runs out. Returns true if the value changed while spinning.
   * Only one of the machine's spin slots may be used per spinner; without a free slot it returns false at once.
   */
  spinWhileEquals(word: Int32Array, index: number, value: number): boolean {
    if (this.budgetUs <= 0) {
      // Occasionally probe again, so a machine that became quiet regains fast round trips.
      if (++this.misses % 64 === 0) this.budgetUs = SPIN_MIN_US * 4;
      return false;
    }
    const ctl = this.ctl;
    if (Atomics.add(ctl, SPINNERS, 1) >= Atomics.load(ctl, MAX_SPINNERS)) {
      Atomics.sub(ctl, SPINNERS, 1);
      return false;
    }
    const deadline = performance.now() + this.budgetUs / 1000;
    let hit = false;
    for (let i = 0; ; i++) {
      if (Atomics.load(word, index) !== value) {
        hit = true;
        break;
      }
      if ((i & 31) === 31 && performance.now() > deadline) break;
    }
    Atomics.sub(ctl, SPINNERS, 1);
    if (hit) this.budgetUs = Math.min(SPIN_MAX_US, this.budgetUs * 2 || SPIN_MIN_US);
    else this.budgetUs = this.budgetUs > SPIN_MIN_US ? this.budgetUs / 2 : 0;
    return hit;
  }
}
