/**
 * The system heap (drivers/dma-buf/heaps/system_heap.c): every buffer gets fresh pages — here a fresh
 * SharedArrayBuffer, which the host hands out zeroed — described by an sg_table of 1 MiB / 64 KiB / 4 KiB chunks
 * as alloc_largest_available would pick them.
 *
 * Locking: broker thread only.
 */
import { KernelError } from '../../errors.js';
import { E } from '../../uapi/errno.js';
import { PAGE_SIZE } from '../../uapi/posix.js';
import { SgTable, type DmaBuf, type Scatterlist } from '../dma-buf.js';
import { dmaHeapAdd, type DmaHeap } from '../dma-heap.js';
import type { Kernel } from '../kernel.js';
import type { ShmRegion } from '../mm.js';
import { exportHeapBuffer, type HeapBuffer } from './heap-helpers.js';

/** orders[]: the page orders tried, largest first (1 MiB, 64 KiB, 4 KiB). */
const ORDERS = [8, 4, 0] as const;

/** The chunking of alloc_largest_available: never a larger order after a smaller one. */
function chunkTable(region: ShmRegion, len: number): SgTable {
  const sgl: Scatterlist[] = [];
  let remaining = len;
  let offset = 0;
  let maxOrder: number = ORDERS[0];
  while (remaining > 0) {
    const order = ORDERS.find((o) => remaining >= PAGE_SIZE << o && o <= maxOrder)!;
    const size = PAGE_SIZE << order;
    sgl.push({ region, offset, length: size });
    offset += size;
    remaining -= size;
    maxOrder = order;
  }
  return new SgTable(sgl);
}

interface SystemHeapStats {
  used: number;
  buffers: number;
}

/**
 * system_heap_allocate: a new SharedArrayBuffer of `len` bytes. A host allocation failure (RangeError) is ENOMEM,
 * never a crash. Returns a dma-buf with one reference.
 */
function systemHeapAllocate(k: Kernel, heap: DmaHeap, len: number, fdFlags: number): DmaBuf<HeapBuffer> {
  const stats = heap.priv as SystemHeapStats;
  let sab: SharedArrayBuffer;
  try {
    sab = new SharedArrayBuffer(len);
  } catch (e) {
    if (e instanceof RangeError) throw new KernelError(E.ENOMEM, `system heap: ${len} bytes: ${e.message}`);
    throw e;
  }
  const region = k.newRegion(sab, 0, len);
  stats.used += len;
  stats.buffers++;
  const free = (): void => {
    stats.used -= len;
    stats.buffers--;
  };
  return exportHeapBuffer(k, heap, len, fdFlags, region, chunkTable(region, len), free);
}

/** system_heap_create: registers the heap as /dev/dma_heap/<name>. */
export function systemHeapCreate(k: Kernel, name = 'system'): DmaHeap {
  const stats: SystemHeapStats = { used: 0, buffers: 0 };
  return dmaHeapAdd(k, {
    name,
    ops: { allocate: (kk, heap, len, fdFlags) => systemHeapAllocate(kk, heap, len, fdFlags) },
    priv: stats,
    info: () => ({ kind: 'system', sizeBytes: null, usedBytes: stats.used, buffers: stats.buffers, highWaterBytes: null, freeExtents: null }),
  });
}
