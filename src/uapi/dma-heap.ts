/** include/uapi/linux/dma-heap.h: the heap allocation ioctl and its struct. */
import { _IOWR } from './ioctl.js';
import { O_ACCMODE, O_CLOEXEC } from './posix.js';

export const DMA_HEAP_IOC_MAGIC = 'H';
export const DMA_HEAP_VALID_FD_FLAGS = O_CLOEXEC | O_ACCMODE;
export const DMA_HEAP_VALID_HEAP_FLAGS = 0;

/** struct dma_heap_allocation_data { __u64 len; __u32 fd; __u32 fd_flags; __u64 heap_flags; } */
export const dma_heap_allocation_data = { SIZE: 24, len: 0, fd: 8, fd_flags: 12, heap_flags: 16 } as const;

export const DMA_HEAP_IOCTL_ALLOC = _IOWR(DMA_HEAP_IOC_MAGIC, 0, dma_heap_allocation_data.SIZE); // 0xC0184800
