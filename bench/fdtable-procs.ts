/** Process body of the fd-table bench (bench/fdtable.ts): fills the table and times dup + close. */
import * as sys from '../src/user/index.js';

let filled: number[] = [];

/** Opens `n` more fds (dups of fd 0) after raising RLIMIT_NOFILE to fit them. */
export function fill(n: number): void {
  sys.setrlimit(sys.RLIMIT_NOFILE, { cur: n + 1024, max: n + 1024 });
  for (let i = 0; i < n; i++) filled.push(sys.dup(0));
}

export function unfill(): void {
  for (const fd of filled) sys.close(fd);
  filled = [];
}

/** n × (dup(0), close(new fd)); returns elapsed ms. */
export function dupLoop(n: number): number {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) sys.close(sys.dup(0));
  return performance.now() - t0;
}
