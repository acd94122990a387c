/** include/uapi/linux/dma-buf.h: dma-buf ioctls, flags and struct layouts (byte offsets, little-endian). */
import { _IOW, _IOWR } from './ioctl.js';

export const DMA_BUF_BASE = 'b';

export const DMA_BUF_SYNC_READ = 1 << 0;
export const DMA_BUF_SYNC_WRITE = 2 << 0;
export const DMA_BUF_SYNC_RW = DMA_BUF_SYNC_READ | DMA_BUF_SYNC_WRITE;
export const DMA_BUF_SYNC_START = 0 << 2;
export const DMA_BUF_SYNC_END = 1 << 2;
export const DMA_BUF_SYNC_VALID_FLAGS_MASK = DMA_BUF_SYNC_RW | DMA_BUF_SYNC_END;

export const DMA_BUF_NAME_LEN = 32;

/** struct dma_buf_sync { __u64 flags; } */
export const dma_buf_sync = { SIZE: 8, flags: 0 } as const;
/** struct dma_buf_export_sync_file { __u32 flags; __s32 fd; } */
export const dma_buf_export_sync_file = { SIZE: 8, flags: 0, fd: 4 } as const;
/** struct dma_buf_import_sync_file { __u32 flags; __s32 fd; } */
export const dma_buf_import_sync_file = { SIZE: 8, flags: 0, fd: 4 } as const;

export const DMA_BUF_IOCTL_SYNC = _IOW(DMA_BUF_BASE, 0, dma_buf_sync.SIZE); // 0x40086200
/** `_IOW('b', 1, const char *)`: the size is a pointer's, so 64-bit and 32-bit userspace differ. */
export const DMA_BUF_SET_NAME = _IOW(DMA_BUF_BASE, 1, 8); // 0x40086201
export const DMA_BUF_SET_NAME_A = _IOW(DMA_BUF_BASE, 1, 4); // 0x40046201 (u32 variant)
export const DMA_BUF_SET_NAME_B = _IOW(DMA_BUF_BASE, 1, 8); // 0x40086201 (u64 variant)
export const DMA_BUF_IOCTL_EXPORT_SYNC_FILE = _IOWR(DMA_BUF_BASE, 2, dma_buf_export_sync_file.SIZE); // 0xC0086202
export const DMA_BUF_IOCTL_IMPORT_SYNC_FILE = _IOW(DMA_BUF_BASE, 3, dma_buf_import_sync_file.SIZE); // 0x40086203
