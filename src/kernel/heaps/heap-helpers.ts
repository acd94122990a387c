/**
 * The dma-buf ops both heaps share (the shape of system_heap.c and cma_heap.c): per-attachment sg_table copies,
 * CPU-access syncs over every mapped attachment, a refcounted kernel vmap, and userspace mmap of shared mappings.
 *
 * Locking: broker thread only (buffer->lock is implicit). The pages are a ShmRegion; processes write them through
 * their mappings at any time, which is why nothing here caches their contents.
 */
import type { DmaDataDirection } from '../dma-direction.js';
import { warn } from '../../bug.js';
import { KernelError } from '../../errors.js';
import { E } from '../../uapi/errno.js';
import { MAP_PRIVATE, MAP_TYPE, PAGE_SIZE } from '../../uapi/posix.js';
import {
  IosysMap,
  dmaBufExport,
  type Device,
  type DmaBuf,
  type DmaBufAttachment,
  type DmaBufOps,
  type SgTable,
} from '../dma-buf.js';
import type { DmaHeap } from '../dma-heap.js';
import type { Kernel } from '../kernel.js';
import type { ShmRegion, Vma } from '../mm.js';

/** struct dma_heap_attachment: the attachment's own copy of the buffer's sg_table. */
export interface HeapAttachment {
  readonly dev: Device;
  readonly table: SgTable;
  mapped: boolean;
  /** dma_sync_sgtable_for_cpu / _for_device calls made for this attachment (no-ops that count). */
  syncsForCpu: number;
  syncsForDevice: number;
}

/** struct system_heap_buffer / cma_heap_buffer: what a heap dma-buf's priv points at. */
export interface HeapBuffer {
  readonly heap: DmaHeap;
  /** Page-aligned length. */
  readonly len: number;
  readonly region: ShmRegion;
  readonly sgTable: SgTable;
  /** Newest first, as list_add keeps them. */
  readonly attachments: HeapAttachment[];
  vmapCnt: number;
  vaddr: IosysMap | null;
  /** invalidate_kernel_vmap_range / flush_kernel_vmap_range calls (no-ops that count). */
  vmapInvalidates: number;
  vmapFlushes: number;
  /** Gives the pages back to the heap (frees the SharedArrayBuffer / returns the pool range). */
  readonly free: () => void;
}

function attachment(att: DmaBufAttachment<HeapBuffer>): HeapAttachment {
  return att.priv as HeapAttachment;
}

/** The heap buffer ops. Exporters call makeHeapBuffer(); these are shared by every heap buffer. */
export const heapBufOps: DmaBufOps<HeapBuffer> = {
  /** dup_sg_table per attachment, so each device's mapping state is its own. */
  attach(buf, att) {
    const b = buf.priv;
    const a: HeapAttachment = { dev: att.dev, table: b.sgTable.dup(), mapped: false, syncsForCpu: 0, syncsForDevice: 0 };
    att.priv = a;
    b.attachments.unshift(a);
  },
  detach(buf, att) {
    const b = buf.priv;
    const i = b.attachments.indexOf(attachment(att));
    if (i >= 0) b.attachments.splice(i, 1);
    att.priv = null;
  },
  /** dma_map_sgtable: nothing to program in the model; the table is marked mapped (syncs now reach it). */
  mapDmaBuf(att) {
    const a = attachment(att);
    a.mapped = true;
    return a.table;
  },
  unmapDmaBuf(att) {
    attachment(att).mapped = false;
  },
  /** Invalidate the vmap range, then sync every mapped attachment for the CPU. */
  beginCpuAccess(buf, _dir: DmaDataDirection) {
    const b = buf.priv;
    if (b.vmapCnt) b.vmapInvalidates++;
    for (const a of b.attachments) if (a.mapped) a.syncsForCpu++;
  },
  /** Flush the vmap range, then sync every mapped attachment for its device. */
  endCpuAccess(buf, _dir: DmaDataDirection) {
    const b = buf.priv;
    if (b.vmapCnt) b.vmapFlushes++;
    for (const a of b.attachments) if (a.mapped) a.syncsForDevice++;
  },
  /**
   * Userspace mapping of [pgoff, pgoff + pages). Only shared mappings: a private (copy-on-write) one is EINVAL,
   * as the CMA heap and the heap helpers refuse it (mainline's system heap would accept it).
   */
  mmap(buf, vma: Vma) {
    if ((vma.flags & MAP_TYPE) === MAP_PRIVATE) throw new KernelError(E.EINVAL);
    vma.region = buf.priv.region;
    vma.regionOffset = vma.pgoff * PAGE_SIZE;
  },
  /** The heap's own vmap refcount (the core counts too; the heap's count survives a direct heap user). */
  vmap(buf) {
    const b = buf.priv;
    if (b.vmapCnt) {
      b.vmapCnt++;
      return b.vaddr!;
    }
    b.vaddr = IosysMap.fromVaddr(b.region.bytes());
    b.vmapCnt++;
    return b.vaddr;
  },
  vunmap(buf) {
    const b = buf.priv;
    if (--b.vmapCnt === 0) b.vaddr = null;
  },
  /** Pages back to the heap. A buffer still vmapped here is a WARN (cma_heap_dma_buf_release). */
  release(buf) {
    const b = buf.priv;
    if (b.vmapCnt > 0) {
      warn(`${b.heap.name} heap: buffer still mapped in the kernel`);
      b.vmapCnt = 0;
      b.vaddr = null;
    }
    b.free();
  },
};

/**
 * Exports a heap buffer over `region` described by `sgTable` (exp_name = heap name, size = len). If the export
 * fails the pages are freed and the error rethrown.
 */
export function exportHeapBuffer(
  k: Kernel,
  heap: DmaHeap,
  len: number,
  fdFlags: number,
  region: ShmRegion,
  sgTable: SgTable,
  free: () => void,
): DmaBuf<HeapBuffer> {
  const priv: HeapBuffer = {
    heap,
    len,
    region,
    sgTable,
    attachments: [],
    vmapCnt: 0,
    vaddr: null,
    vmapInvalidates: 0,
    vmapFlushes: 0,
    free,
  };
  try {
    return dmaBufExport<HeapBuffer>(k, { ops: heapBufOps, size: len, flags: fdFlags, priv, expName: heap.name, owner: `${heap.name}_heap` });
  } catch (e) {
    free();
    throw e;
  }
}
