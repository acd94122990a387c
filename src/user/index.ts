/** What a simulated process imports: its C library (syscalls), the uAPI numbers and the libdmabufheap/libsync helpers. */
export * from './syscalls.js';
export * from './fork.js';
export * from '../uapi/index.js';
export * from './libdmabufheap.js';
export * from './libsync.js';
export * from './libdrm.js';
