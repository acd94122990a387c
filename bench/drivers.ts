/**
 * Driver figures (issue 7), each against a baseline measured in the same run, in alternating rounds (this machine
 * is shared: load from elsewhere then hits both sides alike), medians reported:
 * - a no-op ioctl served by a driver worker vs the broker's own no-op syscall (F_GETFD) — by the task's lane (the
 *   default) and, on a machine booted with { driverLanes: false }, through the broker;
 * - the no-op syscall vs the physical limit: a raw request/reply over a SharedArrayBuffer between two workers with
 *   the same spin discipline as the syscall channel (bench/raw-pingpong.ts), no kernel;
 * - dma_buf_map_attachment + unmap by a driver importer, with cache_sgt_mapping (no exporter call after the first)
 *   vs without (the exporter driver's map and unmap every time), and of a heap buffer (the kernel exports it);
 * - dma_buf_vmap + vunmap with the count held above 0 (the core's counter only) vs from 0 (the exporter's vmap and
 *   vunmap every time).
 */
import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { Machine } from '../src/index.js';
import { emit, round } from './util.js';
import { RAW_WORDS, type RawPingPongData } from './raw-pingpong.js';

const procs = new URL('./procs.js', import.meta.url);
const drvProcs = new URL('./drv-procs.js', import.meta.url);
const benchDriver = new URL('./drv-bench.js', import.meta.url);
const rawWorker = new URL('./raw-pingpong.js', import.meta.url);

const ROUNDS = 5;
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
/** The median over rounds of a[i] / b[i] (both measured in round i). */
const medianRatio = (a: number[], b: number[]): number => median(a.map((x, i) => x / b[i]!));
/** Calls per second of a loop timed inside a worker: `n` calls took `ms`. */
const rate = async (n: number, ms: Promise<number>): Promise<number> => (n / (await ms)) * 1000;
/** µs per operation of a loop timed inside a worker: `n` operations took `ms`. */
const perOp = async (n: number, ms: Promise<number>): Promise<number> => ((await ms) * 1000) / n;

/**
 * ROUNDS rounds, each running every measurement once in turn (load from elsewhere then hits all of them alike);
 * the results, one array per measurement.
 */
async function alternate(measure: readonly (() => Promise<number>)[]): Promise<number[][]> {
  const out = measure.map((): number[] => []);
  for (let i = 0; i < ROUNDS; i++) for (let j = 0; j < measure.length; j++) out[j]!.push(await measure[j]!());
  return out;
}

/** The raw baseline: `n` round trips; returns round trips per second (timed in the client). */
async function rawPingPong(n: number, maxSpinners: number): Promise<number> {
  const sab = new SharedArrayBuffer(RAW_WORDS * 4);
  const mk = (role: 'server' | 'client'): Worker => new Worker(rawWorker, { workerData: { sab, role, n, maxSpinners } satisfies RawPingPongData });
  const server = mk('server');
  const client = mk('client');
  // Both listeners now: either side may finish first (a message nobody listens for yet is lost).
  const done = Promise.all([new Promise((r) => server.once('message', r)), new Promise<number>((r) => client.once('message', r))]);
  const [, ms] = await done;
  await Promise.all([server.terminate(), client.terminate()]);
  return (n / ms) * 1000;
}

/**
 * The same no-op driver ioctl on a machine without lanes (every call process → broker → driver → broker →
 * process) against the broker's no-op syscall on that machine, alternate rounds.
 */
async function brokerPathIoctl(): Promise<void> {
  const m = await Machine.boot({ driverLanes: false });
  try {
    await m.loadDriver(benchDriver, { name: 'benchimp' });
    const p = await m.spawn(procs, { name: 'bench' });
    const d = await m.spawn(drvProcs, { name: 'drvbench' });
    await p.call('getfdLoop', 20000);
    await d.call('nopLoop', '/dev/benchimp', 2000);
    const [sys, drv] = (await alternate([
      () => rate(100000, p.call<number>('getfdLoop', 100000)),
      () => rate(5000, d.call<number>('nopLoop', '/dev/benchimp', 5000)),
    ])) as [number[], number[]];
    emit({ name: 'driver_ioctl_roundtrip_no_lanes', calls_per_s: round(median(drv), 0), baseline: 'broker no-op syscall (F_GETFD), alternate rounds, same machine', baseline_per_s: round(median(sys), 0), ratio: round(medianRatio(sys, drv), 2), path: 'Machine.boot({ driverLanes: false }): process -> broker -> driver -> broker -> process' });
  } finally {
    await m.shutdown();
  }
}

/** vgem's fence cycle (two real ioctls) by lanes vs through the broker: one machine each, alternate rounds. */
async function vgemFenceCycle(): Promise<void> {
  const lanes = await Machine.boot({ drivers: ['vgem'] });
  const broker = await Machine.boot({ drivers: ['vgem'], driverLanes: false });
  try {
    const pl = await lanes.spawn(drvProcs, { name: 'vgem-lanes' });
    const pb = await broker.spawn(drvProcs, { name: 'vgem-broker' });
    await pl.call('vgemFenceLoop', 2000);
    await pb.call('vgemFenceLoop', 500);
    const [l, b] = (await alternate([
      () => rate(10000, pl.call<number>('vgemFenceLoop', 10000)),
      () => rate(2000, pb.call<number>('vgemFenceLoop', 2000)),
    ])) as [number[], number[]];
    emit({ name: 'vgem_fence_attach_signal', cycles_per_s: round(median(l), 0), baseline: 'the same through the broker (driverLanes: false), alternate rounds', baseline_per_s: round(median(b), 0), ratio: round(medianRatio(l, b), 2), note: 'one cycle = VGEM_FENCE_ATTACH + VGEM_FENCE_SIGNAL; ratio = speed-up' });
  } finally {
    await lanes.shutdown();
    await broker.shutdown();
  }
}

export async function benchDrivers(): Promise<void> {
  const maxSpinners = Math.max(1, availableParallelism() - 1);
  const m = await Machine.boot();
  try {
    await m.loadDriver(benchDriver, { name: 'benchexp' });
    await m.loadDriver(benchDriver, { name: 'benchimp' });
    const p = await m.spawn(procs, { name: 'bench' });
    const d = await m.spawn(drvProcs, { name: 'drvbench' });
    await p.call('getfdLoop', 20000);
    await d.call('nopLoop', '/dev/benchimp', 5000);

    // Driver ioctl vs broker syscall vs raw, alternating.
    const nDrv = 30000;
    const [sys, drv, raw] = (await alternate([
      () => rate(100000, p.call<number>('getfdLoop', 100000)),
      () => rate(nDrv, d.call<number>('nopLoop', '/dev/benchimp', nDrv)),
      () => rawPingPong(nDrv, maxSpinners),
    ])) as [number[], number[], number[]];
    emit({ name: 'driver_ioctl_roundtrip', calls_per_s: round(median(drv), 0), baseline: 'broker no-op syscall (F_GETFD), alternate rounds', baseline_per_s: round(median(sys), 0), ratio: round(medianRatio(sys, drv), 2), path: 'lane (process -> driver)', goal: 'cost <= 2x (ratio <= 2)' });
    await brokerPathIoctl();
    await vgemFenceCycle();
    emit({ name: 'syscall_vs_raw_sab_pingpong', calls_per_s: round(median(sys), 0), baseline: 'raw SAB request/reply, same spin discipline (client in a spin slot, server hot 0.1 ms)', baseline_per_s: round(median(raw), 0), ratio: round(medianRatio(sys, raw), 2), goal: '>= 0.8' });

    // map_attachment + unmap by an importer driver: cached vs uncached exporter, and a heap buffer.
    const size = 1 << 20;
    const cached = await d.call<number>('exportBuf', '/dev/benchexp', size, true);
    const uncached = await d.call<number>('exportBuf', '/dev/benchexp', size, false);
    const heap = await d.call<number>('heapBuf', size);
    const nMap = 5000;
    const before = await d.call<Record<string, number>>('exporterCalls', '/dev/benchexp');
    const mapLoop = (fd: number) => (): Promise<number> => perOp(nMap, d.call<number>('mapLoop', '/dev/benchimp', fd, nMap));
    const [mc, mu, mh] = (await alternate([mapLoop(cached), mapLoop(uncached), mapLoop(heap)])) as [number[], number[], number[]];
    const after = await d.call<Record<string, number>>('exporterCalls', '/dev/benchexp');
    // Each uncached map/unmap reaches the exporter; each cached one only its first map per attachment.
    const exporterMaps = (after['map'] ?? 0) - (before['map'] ?? 0);
    emit({ name: 'map_attachment_cached', us_per_map_unmap: round(median(mc), 2), baseline: 'the same without cache_sgt_mapping (exporter map + unmap upcalls each time)', baseline_us: round(median(mu), 2), ratio: round(medianRatio(mc, mu), 2), exporter_maps: exporterMaps, expected_exporter_maps: ROUNDS * (nMap + 1), goal: '< 1' });
    emit({ name: 'map_attachment_heap_buffer', us_per_map_unmap: round(median(mh), 2), baseline: 'driver-exported, uncached', baseline_us: round(median(mu), 2), ratio: round(medianRatio(mh, mu), 2) });

    // vmap + vunmap with the count above 0 vs from 0 (driver exporter), and of the heap buffer with the count > 0.
    const nV = 5000;
    const vmapLoop = (fd: number, hold: boolean) => (): Promise<number> => perOp(nV, d.call<number>('vmapLoop', '/dev/benchimp', fd, nV, hold));
    const [vh, v0, vheap] = (await alternate([vmapLoop(uncached, true), vmapLoop(uncached, false), vmapLoop(heap, true)])) as [number[], number[], number[]];
    emit({ name: 'vmap_count_above_0', us_per_vmap_vunmap: round(median(vh), 2), baseline: 'vmap + vunmap from a count of 0 (exporter vmap + vunmap upcalls each time)', baseline_us: round(median(v0), 2), ratio: round(medianRatio(vh, v0), 2), heap_buffer_us: round(median(vheap), 2), goal: '< 1' });
    for (const fd of [cached, uncached, heap]) await d.call('closeFd', fd);
  } finally {
    await m.shutdown();
  }
}
