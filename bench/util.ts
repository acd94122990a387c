/** Shared helpers of the benchmark suite: timing, percentiles, JSON-line output. */
import { Worker } from 'node:worker_threads';

export interface Figure {
  readonly name: string;
  readonly [key: string]: number | string | boolean;
}

export function emit(fig: Figure): void {
  process.stdout.write(JSON.stringify(fig) + '\n');
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export const round = (x: number, digits = 2): number => Number(x.toFixed(digits));

/** Median of `runs` repetitions of an async measurement (machines here are noisy). */
export async function medianOf(runs: number, fn: () => Promise<number>): Promise<number> {
  const xs: number[] = [];
  for (let i = 0; i < runs; i++) xs.push(await fn());
  xs.sort((a, b) => a - b);
  return xs[Math.floor(xs.length / 2)]!;
}

export function echoWorker(): Worker {
  return new Worker(new URL('./baseline-echo.js', import.meta.url));
}

/** Sequential postMessage round trips to one echo worker; returns round trips per second. */
export async function postMessageRate(w: Worker, n: number): Promise<number> {
  return new Promise((resolve) => {
    let left = n;
    const t0 = performance.now();
    const onMsg = (): void => {
      if (--left === 0) {
        w.off('message', onMsg);
        resolve((n / (performance.now() - t0)) * 1000);
      } else w.postMessage(left);
    };
    w.on('message', onMsg);
    w.postMessage(left);
  });
}
