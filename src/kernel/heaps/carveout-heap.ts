/**
 * A carve-out heap: a fixed pool reserved at boot (`sizeBytes` of address space), handed out by a page-granular
 * first-fit allocator that coalesces on free — the shape of a CMA or reserved-memory heap
 * (drivers/dma-buf/heaps/cma_heap.c): contiguous buffers, one sg entry each, zeroed at allocation.
 *
 * Isolation: the pool is accounting only (which ranges are taken, fragmentation, the limit). Each buffer's pages
 * are a SharedArrayBuffer of its own, so a process that maps a buffer holds that buffer's memory and nothing
 * else: a view kept after munmap and close still reaches only the freed buffer's own pages, never the range's
 * next owner (whose pages are a new SharedArrayBuffer), and a small mapping cannot reach a neighbour.
 *
 * Zeroing: a buffer's pages are new host memory, so a buffer is zero when handed out however dirty the range's
 * previous owner left it — the cma heap's clear_page of every page, without the cost. The high-water mark still
 * records how far into the pool buffers have ever reached (the part a real heap would have had to clear on reuse).
 *
 * Locking: broker thread only (the cma lock is implicit).
 */
import { BUG } from '../../bug.js';
import { KernelError } from '../../errors.js';
import { E } from '../../uapi/errno.js';
import { PAGE_SIZE } from '../../uapi/posix.js';
import { SgTable, type DmaBuf } from '../dma-buf.js';
import { dmaHeapAdd, type DmaHeap } from '../dma-heap.js';
import type { Kernel } from '../kernel.js';
import { exportHeapBuffer, type HeapBuffer } from './heap-helpers.js';

/** A free extent of the pool, in bytes (page multiples). */
interface Extent {
  start: number;
  size: number;
}

/** The pool and its allocator. */
export class CarveoutPool {
  readonly size: number;
  /** Free extents sorted by start, never adjacent (coalesced). */
  private readonly freeList: Extent[];
  /** Everything at or above this offset has never been handed out (still zero). */
  highWater = 0;
  used = 0;
  buffers = 0;

  constructor(sizeBytes: number) {
    this.size = Math.floor(sizeBytes / PAGE_SIZE) * PAGE_SIZE;
    if (this.size <= 0) throw new Error(`carve-out heap: pool of ${sizeBytes} bytes holds no page`);
    this.freeList = [{ start: 0, size: this.size }];
  }

  /**
   * First fit: the lowest free extent that holds `len` bytes (page multiple). Returns the offset in the pool, or
   * -1 when no extent is large enough (fragmentation counts: there is no compaction).
   */
  alloc(len: number): number {
    const i = this.freeList.findIndex((x) => x.size >= len);
    if (i < 0) return -1;
    const ext = this.freeList[i]!;
    const start = ext.start;
    if (ext.size === len) this.freeList.splice(i, 1);
    else {
      ext.start += len;
      ext.size -= len;
    }
    this.highWater = Math.max(this.highWater, start + len);
    this.used += len;
    this.buffers++;
    return start;
  }

  /** Returns [start, start+len) to the pool, merging with free neighbours. A double free is a BUG. */
  free(start: number, len: number): void {
    let i = 0;
    while (i < this.freeList.length && this.freeList[i]!.start < start) i++;
    const prev = this.freeList[i - 1];
    const next = this.freeList[i];
    if ((prev && prev.start + prev.size > start) || (next && start + len > next.start) || start + len > this.size) {
      BUG(`carve-out free of [${start}, +${len}) overlaps free memory`);
    }
    this.used -= len;
    this.buffers--;
    if (prev && prev.start + prev.size === start) {
      prev.size += len;
      if (next && prev.start + prev.size === next.start) {
        prev.size += next.size;
        this.freeList.splice(i, 1);
      }
    } else if (next && start + len === next.start) {
      next.start = start;
      next.size += len;
    } else {
      this.freeList.splice(i, 0, { start, size: len });
    }
  }

  /** Free extents, lowest first (the heap listing's `freeExtents`). */
  extents(): readonly Readonly<Extent>[] {
    return this.freeList.map((x) => ({ ...x }));
  }
}

/**
 * The carve-out allocate op: a contiguous, zeroed range of the pool, or ENOMEM. Returns a dma-buf with one
 * reference whose release gives the range back.
 */
function carveoutAllocate(k: Kernel, heap: DmaHeap, len: number, fdFlags: number): DmaBuf<HeapBuffer> {
  const pool = heap.priv as CarveoutPool;
  if (len > pool.size) throw new KernelError(E.ENOMEM);
  const start = pool.alloc(len);
  if (start < 0) throw new KernelError(E.ENOMEM);
  // The range's own pages: fresh (zero) host memory that no other buffer, past or future, shares.
  const region = k.newRegion(new SharedArrayBuffer(len), 0, len);
  const sgt = new SgTable([{ region, offset: 0, length: len }]);
  return exportHeapBuffer(k, heap, len, fdFlags, region, sgt, () => pool.free(start, len));
}

/** Reserves the pool and registers /dev/dma_heap/<name>. */
export function carveoutHeapCreate(k: Kernel, name: string, sizeBytes: number): DmaHeap {
  const pool = new CarveoutPool(sizeBytes);
  return dmaHeapAdd(k, {
    name,
    ops: { allocate: (kk, heap, len, fdFlags) => carveoutAllocate(kk, heap, len, fdFlags) },
    priv: pool,
    info: () => ({
      kind: 'carveout',
      sizeBytes: pool.size,
      usedBytes: pool.used,
      buffers: pool.buffers,
      highWaterBytes: pool.highWater,
      freeExtents: pool.extents(),
    }),
  });
}
