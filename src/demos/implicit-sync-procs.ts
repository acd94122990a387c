/** The processes of the implicit-sync demo: a "GPU" that renders behind a fence, and a display that waits on it. */
import * as sys from '../user/index.js';

const SIZE = 256 * 1024;
let buf = -1;
let timeline = -1;
let map: sys.Mapping | null = null;

/**
 * gpu: allocates the buffer, creates a sw_sync point (value 1, pending) and attaches it to the buffer as its
 * write fence with DMA_BUF_IOCTL_IMPORT_SYNC_FILE; then passes the buffer to the display. Returns the fence info.
 */
export function gpuSubmit(sock: number): { fd: number; status: number; fenceName: string } {
  const heap = sys.heapOpen('system');
  buf = sys.heapAlloc(heap, SIZE);
  sys.close(heap);
  sys.dmaBufSetName(buf, 'scanout');
  map = sys.mmap(null, SIZE, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_SHARED, buf, 0);
  timeline = sys.swSyncTimelineCreate();
  const fence = sys.swSyncFenceCreate(timeline, 'render', 1);
  sys.dmaBufImportSyncFile(buf, sys.DMA_BUF_SYNC_WRITE, fence);
  const info = sys.syncFileInfo(fence);
  sys.close(fence);
  sys.sendmsg(sock, { data: 'scanout', fds: [buf] });
  return { fd: buf, status: info.status, fenceName: info.name };
}

/** gpu: "renders" (writes every byte, the way a device would: no CPU-access bracketing), then signals the fence. */
export function gpuRenderAndSignal(value: number): number {
  map!.bytes.fill(value);
  sys.swSyncTimelineInc(timeline, 1);
  return SIZE;
}

export function gpuDone(): void {
  sys.munmap(map!);
  sys.close(buf);
  sys.close(timeline);
}

let dispFd = -1;
let snapshot = -1;

/** What SYNC_IOC_FILE_INFO says about a sync_file: its name, status and its one fence's signal time. */
export interface SnapshotInfo {
  readonly fd: number;
  readonly name: string;
  readonly status: number;
  readonly fences: number;
  readonly timestampNs: string;
}

function snapshotInfo(): SnapshotInfo {
  const info = sys.syncFileInfo(snapshot);
  const ts = info.fences[0]?.timestampNs ?? 0n;
  return { fd: snapshot, name: info.name, status: info.status, fences: info.fences.length, timestampNs: String(ts) };
}

/**
 * display: receives the buffer and reports what poll and an exported sync_file say about it right now. The
 * exported sync_file (a snapshot of the buffer's write fence) stays open, so the display can look at the same
 * fence again after it signaled (displaySnapshot).
 */
export function displayReceive(sock: number): { fd: number; pollin: boolean; exported: SnapshotInfo } {
  const m = sys.recvmsg(sock, 16, 1);
  dispFd = m.fds[0]!;
  const readable = (sys.pollOne(dispFd, sys.POLLIN, 0) & sys.POLLIN) !== 0;
  snapshot = sys.dmaBufExportSyncFile(dispFd, sys.DMA_BUF_SYNC_READ);
  return { fd: dispFd, pollin: readable, exported: snapshotInfo() };
}

/** display: SYNC_IOC_FILE_INFO on the snapshot taken in displayReceive, then closes it. */
export function displaySnapshot(): SnapshotInfo {
  const info = snapshotInfo();
  sys.close(snapshot);
  snapshot = -1;
  return info;
}

/**
 * display: DMA_BUF_IOCTL_SYNC START|READ blocks until the GPU's write fence signals; then every byte must be the
 * rendered value — implicit sync made the CPU read wait for the device write.
 */
export function displayScanout(expect: number): { waitedMs: number; wrong: number } {
  const map = sys.mmap(null, SIZE, sys.PROT_READ, sys.MAP_SHARED, dispFd, 0);
  const t0 = performance.now();
  sys.dmaBufSync(dispFd, sys.DMA_BUF_SYNC_START | sys.DMA_BUF_SYNC_READ);
  const waitedMs = performance.now() - t0;
  let wrong = 0;
  for (const b of map.bytes) if (b !== expect) wrong++;
  sys.dmaBufSync(dispFd, sys.DMA_BUF_SYNC_END | sys.DMA_BUF_SYNC_READ);
  sys.munmap(map);
  sys.close(dispFd);
  return { waitedMs, wrong };
}
