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

let bufFd = -1;

/** Allocates the buffer the fd-passing bench sends (system heap). */
export function allocBuffer(size: number): number {
  const heap = sys.heapOpen('system');
  bufFd = sys.heapAlloc(heap, size);
  sys.close(heap);
  return bufFd;
}

export function freeBuffer(): void {
  sys.close(bufFd);
  bufFd = -1;
}

/** Sender half: passes the buffer's fd n times (one byte + SCM_RIGHTS each); blocks when the socket is full. */
export function sendFds(sock: number, n: number): number {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) sys.sendmsg(sock, { data: 'f', fds: [bufFd] });
  return performance.now() - t0;
}

/**
 * Receiver half: n × (recvmsg, mmap the whole buffer, touch the first and last byte, munmap, close).
 * Returns elapsed ms from the first receive on.
 */
export function recvMapFds(sock: number, n: number, size: number): number {
  let t0 = 0;
  for (let i = 0; i < n; i++) {
    const m = sys.recvmsg(sock, 16, 1);
    if (i === 0) t0 = performance.now();
    const fd = m.fds[0]!;
    const map = sys.mmap(null, size, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_SHARED, fd, 0);
    const b = map.bytes;
    b[0] = (b[0]! + 1) & 0xff;
    b[size - 1] = (b[size - 1]! + 1) & 0xff;
    sys.munmap(map);
    sys.close(fd);
  }
  return (performance.now() - t0) * (n / Math.max(1, n - 1));
}

/**
 * Write bandwidth through an mmap'd dma-buf view vs Uint8Array.fill on a fresh SharedArrayBuffer of the same
 * size, in this process: first touch (fresh pages) and warm, each side. Returns GB/s figures.
 */
export function fillBandwidth(size: number, reps: number): { mmapFresh: number; sabFresh: number; mmapWarm: number; sabWarm: number } {
  const gbps = (ms: number, bytes: number): number => bytes / (ms / 1000) / 1e9;
  const heap = sys.heapOpen('system');
  const fd = sys.heapAlloc(heap, size);
  sys.close(heap);
  const map = sys.mmap(null, size, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_SHARED, fd, 0);
  const view = map.bytes;
  let t0 = performance.now();
  view.fill(1);
  const mmapFresh = gbps(performance.now() - t0, size);
  const sab = new Uint8Array(new SharedArrayBuffer(size));
  t0 = performance.now();
  sab.fill(1);
  const sabFresh = gbps(performance.now() - t0, size);
  const warm = (u: Uint8Array): number => {
    const ts: number[] = [];
    for (let r = 0; r < reps; r++) {
      const s = performance.now();
      u.fill(r & 0xff);
      ts.push(performance.now() - s);
    }
    ts.sort((a, b) => a - b);
    return gbps(ts[Math.floor(ts.length / 2)]!, size);
  };
  // Interleave so drift on a noisy machine hits both sides alike.
  const mw: number[] = [];
  const sw: number[] = [];
  for (let i = 0; i < 3; i++) {
    mw.push(warm(view));
    sw.push(warm(sab));
  }
  mw.sort((a, b) => a - b);
  sw.sort((a, b) => a - b);
  sys.munmap(map);
  sys.close(fd);
  return { mmapFresh, sabFresh, mmapWarm: mw[1]!, sabWarm: sw[1]! };
}

/** No-op syscalls in a tight loop until killed (bounded at 60 s); reports in word 0 of `started` after the first. */
export function nopUntilKilled(started: SharedArrayBuffer): number {
  sys.nop();
  const w = new Int32Array(started);
  Atomics.store(w, 0, 1);
  Atomics.notify(w, 0);
  const end = performance.now() + 60_000;
  let n = 0;
  while (performance.now() < end) {
    for (let i = 0; i < 256; i++) sys.nop();
    n += 256;
  }
  return n;
}

/** n no-op syscalls; returns calls per second. */
export function nopRate(n: number): number {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) sys.nop();
  return (n / (performance.now() - t0)) * 1000;
}
