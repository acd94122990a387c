/** Process bodies of bench/sync.ts: sw_sync / sync_file loops, timed inside the processes (elapsed ms returned). */
import * as sys from '../src/user/index.js';

/** Chooses libsync's wait mode in this process ('fence': the fast path, the default; 'poll': poll(2)). */
export function waitMode(mode: sys.SyncWaitMode): void {
  sys.setSyncWaitMode(mode);
}

/** n × (create a point at value+1, SW_SYNC_IOC_INC by 1, sync_wait, close the fence) on one timeline. */
export function swSyncCycles(n: number): number {
  const tl = sys.swSyncTimelineCreate();
  const t0 = performance.now();
  for (let i = 1; i <= n; i++) {
    const f = sys.swSyncFenceCreate(tl, 'bench', i);
    sys.swSyncTimelineInc(tl, 1);
    sys.syncWait(f, -1);
    sys.close(f);
  }
  const ms = performance.now() - t0;
  sys.close(tl);
  return ms;
}

let timeline = -1;
let shared: { map: sys.Mapping; fd: number; words: Int32Array } | null = null;

/** The parallelism run's setup, in the first process: a timeline and a shared page, passed to the peer. */
export function parallelSetup(sock: number): void {
  timeline = sys.swSyncTimelineCreate();
  const heap = sys.heapOpen('system');
  const fd = sys.heapAlloc(heap, 4096);
  sys.close(heap);
  const map = sys.mmap(null, 4096, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_SHARED, fd, 0);
  shared = { map, fd, words: map.view(Int32Array) };
  sys.sendmsg(sock, { data: 'x', fds: [fd, timeline] });
}

/** The peer's side: receives and maps the page, keeps the timeline. */
export function parallelJoin(sock: number): void {
  const m = sys.recvmsg(sock, 16, 2);
  const [fd, tl] = m.fds as [number, number];
  timeline = tl;
  const map = sys.mmap(null, 4096, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_SHARED, fd, 0);
  shared = { map, fd, words: map.view(Int32Array) };
}

/**
 * sync_stress_parallelism's thread body: `iterations` × (create point 2i + id, wait, check and bump the plain
 * counter, INC, close). Returns elapsed ms; throws if the counter is ever wrong.
 */
export function parallelThread(id: number, iterations: number, base: number): number {
  const w = shared!.words;
  const t0 = performance.now();
  for (let i = 0; i < iterations; i++) {
    const v = base + i * 2 + id;
    const f = sys.swSyncFenceCreate(timeline, 'fence', v);
    sys.syncWait(f, -1);
    if (w[0] !== v) throw new Error(`counter ${w[0]} at point ${v}`);
    w[0] = w[0]! + 1;
    sys.swSyncTimelineInc(timeline, 1);
    sys.close(f);
  }
  return performance.now() - t0;
}

export function parallelTeardown(): number {
  const c = shared!.words[0]!;
  sys.munmap(shared!.map);
  sys.close(shared!.fd);
  sys.close(timeline);
  shared = null;
  return c;
}
