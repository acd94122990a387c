/**
 * Micro-benchmark: fence signal → wake latency between two workers (dma_fence_signal in one, dma_fence_wait in the
 * other), against a raw Atomics.store + notify → Atomics.wait pair measured in the same run. Goal: p50 ≤ 1.5× raw.
 *
 * Both figures are half round trips of a ping-pong between two workers (A signals F[i] and waits G[i]; B waits
 * F[i] and signals G[i]), so no cross-worker clock is involved. The raw pair does not spin (it is the bare
 * futex-style wake); the fence wait spins within the table's bounded spinner budget before it sleeps, as every
 * fence wait does.
 */
import { Worker } from 'node:worker_threads';
import {
  attachFenceTable,
  createFenceTable,
  dmaFenceInit,
  dmaFencePut,
  dmaFenceSignal,
  fenceHandle,
  fenceRuntimeAttached,
  fenceRuntime,
  type DmaFence,
  type FenceRuntime,
} from '../src/fence/index.js';
import { percentile, round } from './util.js';

export interface FenceWakeResult {
  readonly name: string;
  readonly p50_us: number;
  readonly p99_us: number;
  readonly raw_p50_us: number;
  readonly raw_p99_us: number;
  readonly ratio_p50: number;
  readonly [key: string]: number | string;
}

export interface FenceWakeOptions {
  /** Measured round trips per mode (default 20000). */
  readonly iterations?: number;
  /** Unmeasured round trips first (default 2000). */
  readonly warmup?: number;
}

interface PingResult {
  readonly fence: number[];
  readonly raw: number[];
}

const workerUrl = new URL('./fence-worker.js', import.meta.url);

function run(role: 'ping' | 'pong', data: Record<string, unknown>): Promise<PingResult | null> {
  return new Promise((resolve, reject) => {
    const w = new Worker(workerUrl, { workerData: { role, ...data } });
    let result: PingResult | null = null;
    w.on('message', (m: { ready?: boolean; result?: PingResult }) => {
      if (m.result) result = m.result;
    });
    w.on('error', reject);
    w.on('exit', (code) => (code === 0 ? resolve(result) : reject(new Error(`fence bench ${role} exited ${code}`))));
  });
}

export async function benchFenceWake(opts: FenceWakeOptions = {}): Promise<FenceWakeResult> {
  const iterations = opts.iterations ?? 20000;
  const warmup = opts.warmup ?? 2000;
  const n = iterations + warmup;
  const prev: FenceRuntime | null = fenceRuntimeAttached() ? fenceRuntime() : null;
  const table = createFenceTable({ slots: 2 * n + 64 });
  attachFenceTable(table);
  const ops = { driverName: 'bench', timelineName: 'wake' };
  const pingF: DmaFence[] = [];
  const pongF: DmaFence[] = [];
  try {
    for (let i = 0; i < n; i++) {
      pingF.push(dmaFenceInit(ops, 1, i + 1));
      pongF.push(dmaFenceInit(ops, 2, i + 1));
    }
    const words = new SharedArrayBuffer(8 * n);
    const go = new SharedArrayBuffer(8);
    const data = { table, words, go, n, ping: pingF.map(fenceHandle), pong: pongF.map(fenceHandle) };
    const a = run('ping', data);
    const b = run('pong', data);
    const [r] = await Promise.all([a, b]);
    if (!r) throw new Error('fence bench: no result from the ping worker');
    const fence = r.fence.slice(warmup).map((x) => (x / 2) * 1000).sort((x, y) => x - y);
    const raw = r.raw.slice(warmup).map((x) => (x / 2) * 1000).sort((x, y) => x - y);
    const p50 = percentile(fence, 50);
    const rawP50 = percentile(raw, 50);
    return {
      name: 'fence-wake',
      p50_us: round(p50, 2),
      p99_us: round(percentile(fence, 99), 2),
      raw_p50_us: round(rawP50, 2),
      raw_p99_us: round(percentile(raw, 99), 2),
      ratio_p50: round(p50 / rawP50, 2),
      goal: 'ratio_p50 <= 1.5',
    };
  } finally {
    for (const f of [...pingF, ...pongF]) {
      dmaFenceSignal(f);
      dmaFencePut(f);
    }
    if (prev) attachFenceTable(prev.table.sab);
  }
}
