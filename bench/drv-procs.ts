/** Process bodies of the driver benchmarks (bench/drivers.ts): each loop is timed inside a process or driver. */
import * as sys from '../src/user/index.js';
import * as drm from '../src/user/libdrm.js';
import { VGEM_FENCE_WRITE } from '../src/uapi/drm.js';
import { BENCH_ARG_BYTES, BENCH_IOC_NOP, BENCH_IOC_RUN } from './drv-bench.js';

import { dev } from '../test/fixtures/drv-user.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

/** One JSON request to the bench driver behind `path` (bench/drv-bench.ts). */
export function req<T>(path: string, r: Record<string, unknown>): T {
  const buf = new Uint8Array(BENCH_ARG_BYTES);
  buf.set(enc.encode(JSON.stringify(r)));
  sys.ioctl(dev(path), BENCH_IOC_RUN, buf);
  const n = buf.indexOf(0);
  return JSON.parse(dec.decode(buf.subarray(0, n))) as T;
}

/** `n` no-op ioctls served by the driver behind `path`; returns elapsed ms. */
export function nopLoop(path: string, n: number): number {
  const fd = dev(path);
  const t0 = performance.now();
  for (let i = 0; i < n; i++) sys.ioctl(fd, BENCH_IOC_NOP, 0);
  return performance.now() - t0;
}

/** A buffer exported by the driver behind `path` (its pages), installed in this process: the fd. */
export function exportBuf(path: string, size: number, cache: boolean): number {
  return req<{ fd: number }>(path, { op: 'export', size, cache }).fd;
}

/** A system-heap buffer (exported by the kernel itself): the fd. */
export function heapBuf(size: number): number {
  const heap = sys.heapOpen('system');
  try {
    return sys.heapAlloc(heap, size);
  } finally {
    sys.close(heap);
  }
}

/** The importer driver behind `path` maps and unmaps buffer `fd` `n` times; ms measured in the driver. */
export function mapLoop(path: string, fd: number, n: number): number {
  return req<{ ms: number }>(path, { op: 'map', fd, n }).ms;
}

/** The driver behind `path` vmaps + vunmaps `fd` `n` times (hold: with one more vmap held throughout). */
export function vmapLoop(path: string, fd: number, n: number, hold: boolean): number {
  return req<{ ms: number }>(path, { op: 'vmap', fd, n, hold }).ms;
}

/** Exporter calls the driver behind `path` served so far. */
export function exporterCalls(path: string): Record<string, number> {
  return req(path, { op: 'calls' });
}

export function closeFd(fd: number): void {
  sys.close(fd);
}

/**
 * vgem's fence cycle `n` times on one dumb buffer (VGEM_FENCE_ATTACH + VGEM_FENCE_SIGNAL: two ioctls, each one a
 * fence and a reservation-object change in the vgem worker); returns elapsed ms.
 */
export function vgemFenceLoop(n: number): number {
  const fd = drm.drmOpenCard();
  const bo = drm.drmModeCreateDumbBuffer(fd, 64, 64, 32);
  try {
    drm.vgemFenceSignal(fd, drm.vgemFenceAttach(fd, bo.handle, VGEM_FENCE_WRITE));
    const t0 = performance.now();
    for (let i = 0; i < n; i++) drm.vgemFenceSignal(fd, drm.vgemFenceAttach(fd, bo.handle, VGEM_FENCE_WRITE));
    return performance.now() - t0;
  } finally {
    drm.drmModeDestroyDumbBuffer(fd, bo.handle);
    sys.close(fd);
  }
}
