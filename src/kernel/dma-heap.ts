/**
 * The dma-heap framework (drivers/dma-buf/dma-heap.c): /dev/dma_heap/<name> character devices whose only
 * operation is DMA_HEAP_IOCTL_ALLOC, which asks the heap for a buffer and returns it as a dma-buf fd.
 *
 * Locking: broker thread only (heap_list_lock and the minor xarray are implicit).
 */
import { ModuleState } from './module-state.js';
import { KernelError } from '../errors.js';
import { DMA_HEAP_IOCTL_ALLOC, DMA_HEAP_VALID_FD_FLAGS, DMA_HEAP_VALID_HEAP_FLAGS, dma_heap_allocation_data } from '../uapi/dma-heap.js';
import { E } from '../uapi/errno.js';
import { IOC_IN, IOC_OUT, _IOC_NR, _IOC_SIZE } from '../uapi/ioctl.js';
import { PAGE_SIZE } from '../uapi/posix.js';
import { dmaBufFd, dmaBufPut, type DmaBuf } from './dma-buf.js';
import { fmodeFromFlags, type File, type FileOperations } from './file.js';
import type { Kernel } from './kernel.js';
import type { Task } from './task.js';
import type { UserPtr } from './uaccess.js';

export const DMA_HEAP_DEV_DIR = '/dev/dma_heap/';
/** NUM_HEAP_MINORS: how many heaps the char-device region has room for. */
const NUM_HEAP_MINORS = 128;

/**
 * struct dma_heap_ops. `allocate` gets a page-aligned, non-zero length and the ALLOC ioctl's fd_flags and
 * heap_flags; it returns a dma-buf holding one reference, or throws (ENOMEM when out of memory).
 */
export interface DmaHeapOps {
  allocate(k: Kernel, heap: DmaHeap, len: number, fdFlags: number, heapFlags: bigint): DmaBuf;
}

/** What a heap reports about itself for listings (Machine.heaps()). */
export interface DmaHeapInfo {
  readonly name: string;
  readonly path: string;
  /** 'system' (fresh pages per buffer) or 'carveout' (a fixed pool). */
  readonly kind: string;
  /** Pool size for a carve-out; null for the system heap (bounded only by host memory). */
  readonly sizeBytes: number | null;
  /** Bytes currently handed out in live buffers. */
  readonly usedBytes: number;
  /** Live buffers allocated from the heap. */
  readonly buffers: number;
  /** Carve-out: highest pool byte ever handed out (memory above it has never been used). Null otherwise. */
  readonly highWaterBytes: number | null;
  /** Carve-out: the pool's free ranges, lowest first (byte offsets; fragmentation at a glance). Null otherwise. */
  readonly freeExtents: readonly { readonly start: number; readonly size: number }[] | null;
}

export interface DmaHeapExportInfo {
  readonly name: string;
  readonly ops: DmaHeapOps;
  readonly priv: unknown;
  /** Reports usage for listings. */
  readonly info: () => Omit<DmaHeapInfo, 'name' | 'path'>;
}

/** struct dma_heap. */
export class DmaHeap {
  constructor(
    readonly k: Kernel,
    readonly name: string,
    readonly ops: DmaHeapOps,
    readonly priv: unknown,
    readonly minor: number,
    /** The device node's inode: every open of the node shares it. */
    readonly ino: number,
    readonly info: () => Omit<DmaHeapInfo, 'name' | 'path'>,
  ) {}
}

interface DmaHeapSubsystem {
  /** heap_list: newest first (list_add). */
  readonly heaps: DmaHeap[];
  nextMinor: number;
}

const dmaHeapState = new ModuleState<DmaHeapSubsystem>('dma-heap');

function subsys(k: Kernel): DmaHeapSubsystem {
  return dmaHeapState.of(k);
}

/** dma_heap_init (subsys_initcall). */
export function dmaHeapInit(k: Kernel): void {
  dmaHeapState.init(k, { heaps: [], nextMinor: 0 });
}

/** The heap called `name`, or null. */
export function dmaHeapFind(k: Kernel, name: string): DmaHeap | null {
  return subsys(k).heaps.find((h) => h.name === name) ?? null;
}

/** Every heap, sorted by name (the order a listing of /dev/dma_heap gives here). */
export function dmaHeapList(k: Kernel): DmaHeapInfo[] {
  return [...subsys(k).heaps]
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((h) => ({ name: h.name, path: DMA_HEAP_DEV_DIR + h.name, ...h.info() }));
}

/**
 * dma_heap_add - registers a heap and its /dev/dma_heap/<name> node. An empty name or ops without allocate →
 * EINVAL; no free minor → EBUSY (xa_alloc); a name already registered → EINVAL.
 */
export function dmaHeapAdd(k: Kernel, exp: DmaHeapExportInfo): DmaHeap {
  if (!exp.name) throw new KernelError(E.EINVAL, 'dma_heap: Cannot add heap without a name');
  if (!exp.ops || !exp.ops.allocate) throw new KernelError(E.EINVAL, 'dma_heap: Cannot add heap with invalid ops struct');
  const st = subsys(k);
  if (st.nextMinor >= NUM_HEAP_MINORS) throw new KernelError(E.EBUSY, 'dma_heap: Unable to get minor number for heap');
  if (st.heaps.some((h) => h.name === exp.name)) {
    throw new KernelError(E.EINVAL, `dma_heap: Already registered heap named ${exp.name}`);
  }
  const heap = new DmaHeap(k, exp.name, exp.ops, exp.priv, st.nextMinor++, k.getNextIno(), exp.info);
  k.registerPath(DMA_HEAP_DEV_DIR + heap.name, (kk, _t, _path, flags) =>
    // dma_heap_open: the heap is the file's private data; nonseekable_open (no llseek op: ESPIPE).
    kk.allocFile<DmaHeap>(dmaHeapFops, heap, fmodeFromFlags(flags), flags, heap.ino),
  );
  st.heaps.unshift(heap);
  return heap;
}

/**
 * dma_heap_buffer_alloc - PAGE_ALIGN(len) (a 64-bit wrap to 0 is EINVAL, as in C), the heap's allocate, then an
 * fd with fd_flags. If the fd table is full (EMFILE) the fresh buffer is put, which releases it.
 */
export function dmaHeapBufferAlloc(k: Kernel, task: Task, heap: DmaHeap, len: bigint, fdFlags: number, heapFlags: bigint): number {
  const aligned = (len + BigInt(PAGE_SIZE - 1)) & ~BigInt(PAGE_SIZE - 1) & 0xffff_ffff_ffff_ffffn;
  if (aligned === 0n) throw new KernelError(E.EINVAL);
  // The model addresses memory with JS numbers; anything past 2^53 can never be allocated anyway.
  if (aligned > BigInt(Number.MAX_SAFE_INTEGER)) throw new KernelError(E.ENOMEM);
  const buf = heap.ops.allocate(k, heap, Number(aligned), fdFlags, heapFlags);
  try {
    return dmaBufFd(k, task, buf, fdFlags);
  } catch (e) {
    dmaBufPut(k, buf);
    throw e;
  }
}

/**
 * dma_heap_ioctl_allocate: checks in the kernel's order — input fd ≠ 0, fd_flags outside O_CLOEXEC|O_ACCMODE,
 * heap_flags ≠ 0, all EINVAL — then allocates and stores the new fd in the struct.
 */
function dmaHeapIoctlAllocate(k: Kernel, task: Task, heap: DmaHeap, kdata: DataView): number {
  const d = dma_heap_allocation_data;
  const len = kdata.getBigUint64(d.len, true);
  const fd = kdata.getUint32(d.fd, true);
  const fdFlags = kdata.getUint32(d.fd_flags, true);
  const heapFlags = kdata.getBigUint64(d.heap_flags, true);
  if (fd) throw new KernelError(E.EINVAL);
  if ((fdFlags & ~DMA_HEAP_VALID_FD_FLAGS) >>> 0) throw new KernelError(E.EINVAL);
  if (heapFlags & ~BigInt(DMA_HEAP_VALID_HEAP_FLAGS)) throw new KernelError(E.EINVAL);
  const newFd = dmaHeapBufferAlloc(k, task, heap, len, fdFlags, heapFlags);
  kdata.setUint32(d.fd, newFd, true);
  return 0;
}

/** dma_heap_ioctl_cmds: the kernel's commands, indexed by _IOC_NR. */
const dmaHeapIoctlCmds: readonly number[] = [DMA_HEAP_IOCTL_ALLOC];

/**
 * dma_heap_ioctl - dispatches on _IOC_NR(ucmd) only (the type byte is not checked): nr past the table → EINVAL.
 *
 * Struct versioning: the user's size (from ucmd) is copied in if both ucmd and the kernel cmd have IOC_IN and
 * copied back if both have IOC_OUT; the kernel buffer is max(in, out, kernel size), zero-filled past what was
 * copied in. So a shorter (older) struct gets zeros for the missing fields and a longer (newer) one is accepted
 * with its tail ignored. A user buffer shorter than the size the cmd encodes is EFAULT. The copy back happens
 * even when the command failed, as in C.
 */
function dmaHeapIoctl(f: File, ucmd: number, arg: UserPtr, task: Task): number {
  const heap = (f as File<DmaHeap>).privateData;
  const k = heap.k;
  const nr = _IOC_NR(ucmd);
  if (nr >= dmaHeapIoctlCmds.length) throw new KernelError(E.EINVAL);
  const kcmd = dmaHeapIoctlCmds[nr]!;
  const drvSize = _IOC_SIZE(kcmd);
  let outSize = _IOC_SIZE(ucmd);
  let inSize = outSize;
  if ((ucmd & kcmd & IOC_IN) >>> 0 === 0) inSize = 0;
  if ((ucmd & kcmd & IOC_OUT) >>> 0 === 0) outSize = 0;
  const ksize = Math.max(inSize, outSize, drvSize);
  const kdata = new Uint8Array(ksize); // zero-filled: the memset past in_size
  if (inSize > 0) kdata.set(arg.copyFrom(inSize));
  let ret: number;
  let err: unknown = null;
  try {
    switch (kcmd) {
      case DMA_HEAP_IOCTL_ALLOC:
        ret = dmaHeapIoctlAllocate(k, task, heap, new DataView(kdata.buffer));
        break;
      default:
        throw new KernelError(E.ENOTTY);
    }
  } catch (e) {
    err = e;
    ret = -1;
  }
  if (outSize > 0) arg.copyTo(kdata.subarray(0, outSize)); // EFAULT when the user buffer is too short
  if (err) throw err;
  return ret;
}

/** dma_heap_fops: open and ioctl only (no read/write: EINVAL; no llseek: ESPIPE; no mmap: ENODEV). */
const dmaHeapFops: FileOperations = {
  kind: 'dma_heap',
  dname: (f) => DMA_HEAP_DEV_DIR + (f as File<DmaHeap>).privateData.name,
  ioctl: (f, cmd, arg, ctx) => dmaHeapIoctl(f, cmd, arg, ctx.task),
};
