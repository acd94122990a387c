/**
 * Boot-time registration of the drivers/dma-buf subsystems (dma-buf core, heaps, sockets, ...), in initcall
 * order. Each subsystem registers its syscalls, device paths and debugfs nodes here and nowhere else.
 */
import type { SyscallEntry } from './entry.js';
import type { Kernel } from './kernel.js';

/** Heap configuration: no size = a system heap (pages from new SharedArrayBuffers); a size = a carve-out pool. */
export interface HeapConfig {
  readonly sizeBytes?: number;
}

export interface SubsystemConfig {
  readonly heaps: Readonly<Record<string, HeapConfig>>;
}

export function bootSubsystems(_k: Kernel, _entry: SyscallEntry, _cfg: SubsystemConfig): void {
  // Filled in by the subsystems as they land (dma-buf, dma-heap, af_unix, sync).
}
