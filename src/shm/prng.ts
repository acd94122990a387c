/**
 * A small seeded pseudo-random generator (mulberry32) for reproducible randomised tests and stress runs: the
 * model never uses Math.random, so every random run can be replayed from its printed seed.
 */

export class Prng {
  private state: number;

  constructor(readonly seed: number) {
    this.state = seed >>> 0;
  }

  /** A uniformly distributed 32-bit unsigned integer. */
  nextU32(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** prandom_u32_max(n) / get_random_u32_below(n): uniform in [0, n); 0 when n ≤ 0. */
  below(n: number): number {
    if (n <= 0) return 0;
    return Math.floor((this.nextU32() / 4294967296) * n);
  }
}

/**
 * The seed for a randomised run: `DMABUF_SIM_SEED` from the environment when set (to replay a failure), else one
 * derived from the high-resolution clock. Callers print it with any failure.
 */
export function chooseSeed(env: string = 'DMABUF_SIM_SEED'): number {
  const v = process.env[env];
  if (v !== undefined && v !== '') {
    const n = Number(v);
    if (Number.isFinite(n)) return n >>> 0;
  }
  return Number(process.hrtime.bigint() & 0xffffffffn) >>> 0;
}
