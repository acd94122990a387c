/** Process bodies the benchmarks spawn: each measures inside the process and returns its own timings. */
import * as sys from '../src/user/index.js';

/** n no-op syscall round trips; returns elapsed ms. */
export function nopLoop(n: number): number {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) sys.nop();
  return performance.now() - t0;
}

/** n F_GETFD round trips on fd 0 (a real fd-table lookup); returns elapsed ms. */
export function getfdLoop(n: number): number {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) sys.fcntl(0, sys.F_GETFD);
  return performance.now() - t0;
}
