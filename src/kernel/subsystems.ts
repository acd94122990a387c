/**
 * Boot-time registration of the drivers/dma-buf subsystems (dma-buf core, heaps, sockets, ...), in initcall
 * order. Each subsystem registers its syscalls, device paths and debugfs nodes here and nowhere else.
 */
import { registerAfUnix } from './af-unix.js';
import { dmaBufInit } from './dma-buf.js';
import { dmabufDump } from './dmabuf-dump.js';
import { dmaHeapInit } from './dma-heap.js';
import type { SyscallEntry } from './entry.js';
import { carveoutHeapCreate } from './heaps/carveout-heap.js';
import { systemHeapCreate } from './heaps/system-heap.js';
import type { Kernel } from './kernel.js';
import { swSyncInit } from './sw-sync.js';
import { registerSyncFileSyscalls } from './sync-file.js';

/** Heap configuration: no size = a system heap (pages from new SharedArrayBuffers); a size = a carve-out pool. */
export interface HeapConfig {
  readonly sizeBytes?: number;
}

export interface SubsystemConfig {
  readonly heaps: Readonly<Record<string, HeapConfig>>;
}

export function bootSubsystems(k: Kernel, _entry: SyscallEntry, cfg: SubsystemConfig): void {
  // subsys_initcall: the dma-buf core (db_list, debugfs dma_buf/bufinfo) and the dma-heap class.
  dmaBufInit(k);
  dmaHeapInit(k);
  // module_init of the heaps: /dev/dma_heap/<name>.
  for (const [name, hc] of Object.entries(cfg.heaps)) {
    if (hc.sizeBytes === undefined) systemHeapCreate(k, name);
    else carveoutHeapCreate(k, name, hc.sizeBytes);
  }
  // Not a kernel file: Android's dmabuf_dump view, computed in the broker (see dmabuf-dump.ts).
  k.debugfs.set('dmabuf_dump', () => dmabufDump(k));
  // net/unix: AF_UNIX socketpairs and SCM_RIGHTS fd passing.
  registerAfUnix(k, _entry);
  // drivers/dma-buf/sync_debug.c late_initcall: debugfs sync/info and the sw_sync timeline device.
  swSyncInit(k);
  registerSyncFileSyscalls(_entry);
  // Filled in by the subsystems as they land (af_unix, sync).
}
