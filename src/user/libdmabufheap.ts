/**
 * Userspace helpers in the style of Android's libdmabufheap (BufferAllocator) and the dmabuf-heaps selftest:
 * open a heap, allocate from it, bracket CPU access, name a buffer. Each builds the real uAPI struct bytes and
 * calls ioctl() with the real request number; failures throw SyscallError like the C calls set errno.
 */
import {
  DMA_BUF_IOCTL_EXPORT_SYNC_FILE,
  DMA_BUF_IOCTL_IMPORT_SYNC_FILE,
  DMA_BUF_IOCTL_SYNC,
  DMA_BUF_SET_NAME,
  dma_buf_export_sync_file,
  dma_buf_import_sync_file,
  dma_buf_sync,
} from '../uapi/dma-buf.js';
import { DMA_HEAP_IOCTL_ALLOC, dma_heap_allocation_data } from '../uapi/dma-heap.js';
import { O_CLOEXEC, O_RDONLY, O_RDWR } from '../uapi/posix.js';
import { ioctl, open } from './syscalls.js';
import { validateFd, validateFlags, validateString, validateU64 } from '../validate.js';

/** Where the heaps' device nodes live. */
export const DMA_HEAP_DEVPATH = '/dev/dma_heap';

/** Opens /dev/dma_heap/<name> (read-only and close-on-exec, as BufferAllocator does). Returns the heap fd. */
export function heapOpen(name: string, flags = O_RDONLY | O_CLOEXEC): number {
  return open(`${DMA_HEAP_DEVPATH}/${validateString(name, 'name')}`, validateFlags(flags, 'flags'));
}

/**
 * DMA_HEAP_IOCTL_ALLOC: allocates `len` bytes (rounded up to pages by the kernel) and returns the new dma-buf fd.
 * `fdFlags` set the fd's O_CLOEXEC and the buffer file's access mode (O_RDONLY makes shared writable mappings
 * fail with EACCES); `heapFlags` must be 0 on every heap today.
 */
export function heapAlloc(heapFd: number, len: number | bigint, fdFlags = O_RDWR | O_CLOEXEC, heapFlags: number | bigint = 0): number {
  validateFd(heapFd, 'heapFd');
  const size = validateU64(len, 'len');
  const fl = validateFlags(fdFlags, 'fdFlags');
  const hf = validateU64(heapFlags, 'heapFlags');
  const d = dma_heap_allocation_data;
  const data = new DataView(new ArrayBuffer(d.SIZE));
  data.setBigUint64(d.len, size, true);
  data.setUint32(d.fd, 0, true);
  data.setUint32(d.fd_flags, fl >>> 0, true);
  data.setBigUint64(d.heap_flags, hf, true);
  ioctl(heapFd, DMA_HEAP_IOCTL_ALLOC, data);
  return data.getUint32(d.fd, true);
}

/**
 * DMA_BUF_IOCTL_SYNC: brackets CPU access to a mapped buffer. `flags` is DMA_BUF_SYNC_START or _END combined
 * with DMA_BUF_SYNC_READ, _WRITE or _RW.
 */
export function dmaBufSync(fd: number, flags: number | bigint): number {
  validateFd(fd);
  const fl = validateU64(flags, 'flags');
  const sync = new DataView(new ArrayBuffer(dma_buf_sync.SIZE));
  sync.setBigUint64(dma_buf_sync.flags, fl, true);
  return ioctl(fd, DMA_BUF_IOCTL_SYNC, sync);
}

/** DMA_BUF_SET_NAME: names the buffer (up to DMA_BUF_NAME_LEN - 1 = 31 bytes; "" is allowed). */
export function dmaBufSetName(fd: number, name: string): number {
  return ioctl(validateFd(fd), DMA_BUF_SET_NAME, validateString(name, 'name'));
}

/**
 * DMA_BUF_IOCTL_EXPORT_SYNC_FILE: a sync_file fd (O_CLOEXEC) snapshotting the buffer's implicit fences — with
 * DMA_BUF_SYNC_WRITE every fence a writer must wait for (usage ≤ READ), with DMA_BUF_SYNC_READ alone only the
 * writers (usage ≤ WRITE).
 */
export function dmaBufExportSyncFile(fd: number, flags: number): number {
  validateFd(fd);
  validateFlags(flags, 'flags');
  const d = dma_buf_export_sync_file;
  const arg = new DataView(new ArrayBuffer(d.SIZE));
  arg.setUint32(d.flags, flags >>> 0, true);
  arg.setInt32(d.fd, -1, true);
  ioctl(fd, DMA_BUF_IOCTL_EXPORT_SYNC_FILE, arg);
  return arg.getInt32(d.fd, true);
}

/**
 * DMA_BUF_IOCTL_IMPORT_SYNC_FILE: adds the sync_file's fence(s) to the buffer's implicit fences, as a writer
 * (DMA_BUF_SYNC_WRITE) or a reader (DMA_BUF_SYNC_READ).
 */
export function dmaBufImportSyncFile(fd: number, flags: number, syncFd: number): number {
  validateFd(fd);
  validateFlags(flags, 'flags');
  validateFd(syncFd, 'syncFd');
  const d = dma_buf_import_sync_file;
  const arg = new DataView(new ArrayBuffer(d.SIZE));
  arg.setUint32(d.flags, flags >>> 0, true);
  arg.setInt32(d.fd, syncFd, true);
  return ioctl(fd, DMA_BUF_IOCTL_IMPORT_SYNC_FILE, arg);
}
