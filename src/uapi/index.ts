/** The user API in one place: every number, flag and struct layout a process passes to the simulated kernel. */
export * from './ioctl.js';
export * from './errno.js';
export * from './posix.js';
export * from './dma-buf.js';
export * from './dma-heap.js';
export * from './sync-file.js';
export * from './drm.js';
