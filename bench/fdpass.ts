/**
 * fd passing of a dma-buf (sendmsg + recvmsg + mmap) at 4 KiB, 64 MiB and 256 MiB, vs a structured-clone
 * postMessage of the same bytes; and write bandwidth through an mmap'd view vs a fresh SharedArrayBuffer.
 */
import type { Worker } from 'node:worker_threads';
import { Machine } from '../src/index.js';
import { echoWorker, emit, round } from './util.js';

const procs = new URL('./procs.js', import.meta.url);
const KiB = 1024;
const MiB = 1024 * KiB;

/** Median µs per passed fd, pipelined sender → receiver, `n` passes per run. */
async function fdPassUs(m: Machine, size: number, n: number, runs = 3): Promise<number> {
  const tx = await m.spawn(procs, { name: 'sender' });
  const rx = await m.spawn(procs, { name: 'receiver' });
  const [a, b] = await m.socketpair(tx, rx);
  await tx.call('allocBuffer', size);
  const xs: number[] = [];
  for (let r = 0; r < runs + 1; r++) {
    const [, ms] = await Promise.all([tx.call<number>('sendFds', a, n), rx.call<number>('recvMapFds', b, n, size)]);
    if (r > 0) xs.push((ms * 1000) / n); // run 0 warms up
  }
  await tx.call('freeBuffer');
  await Promise.all([tx.kill(), rx.kill()]);
  xs.sort((x, y) => x - y);
  return xs[Math.floor(xs.length / 2)]!;
}

/** One-way structured clone of `size` bytes to a worker (acked with a number), median µs. */
async function cloneUs(w: Worker, size: number, runs: number): Promise<number> {
  const payload = new Uint8Array(size).fill(7);
  const xs: number[] = [];
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now();
    await new Promise<void>((resolve) => {
      w.once('message', () => resolve());
      w.postMessage({ ack: true, payload });
    });
    xs.push((performance.now() - t0) * 1000);
  }
  xs.sort((x, y) => x - y);
  return xs[Math.floor(xs.length / 2)]!;
}

export async function benchFdPassing(): Promise<void> {
  const m = await Machine.boot();
  try {
    const small = await fdPassUs(m, 4 * KiB, 2000);
    const mid = await fdPassUs(m, 64 * MiB, 2000);
    const big = await fdPassUs(m, 256 * MiB, 2000);
    emit({ name: 'fdpass_dmabuf_4KiB_vs_256MiB', us_4KiB: round(small), us_256MiB: round(big), us_64MiB: round(mid), ratio_256MiB_over_4KiB: round(big / small), goal: '<= 1.2' });
    const w = echoWorker();
    await cloneUs(w, 4 * KiB, 20);
    const clone64 = await cloneUs(w, 64 * MiB, 5);
    await w.terminate();
    emit({ name: 'fdpass_vs_clone_64MiB', fdpass_us: round(mid), clone_postMessage_us: round(clone64), speedup: round(clone64 / mid, 0), goal: '>= 1000' });

    const p = await m.spawn(procs, { name: 'fill' });
    const f = await p.call<{ mmapFresh: number; sabFresh: number; mmapWarm: number; sabWarm: number }>('fillBandwidth', 64 * MiB, 5);
    emit({ name: 'mmap_write_bandwidth_64MiB', mmap_fresh_GBps: round(f.mmapFresh), sab_fresh_GBps: round(f.sabFresh), ratio_fresh: round(f.mmapFresh / f.sabFresh), mmap_warm_GBps: round(f.mmapWarm), sab_warm_GBps: round(f.sabWarm), ratio_warm: round(f.mmapWarm / f.sabWarm), goal: '>= 0.95' });
  } finally {
    await m.shutdown();
  }
}
