/** Public entry point of dmabuf-sim for the main thread: the Machine and the uAPI facts. */
export { Machine, Proc, DriverProc, BUILTIN_DRIVERS, formatUnexpectedLockdep, type BootOptions, type SpawnOptions, type ExitStatus, type CloneOptions } from './machine.js';
export type { KernelStats, ShutdownReport } from './kernel/control-plane.js';
export type { LockdepReport } from './locking/index.js';
export type { KernelWarning } from './kernel/kernel.js';
export type { DmaBufSnapshot } from './kernel/dma-buf.js';
export type { DmaHeapInfo } from './kernel/dma-heap.js';
export { formatHeld, formatLeaks, type HeldFd, type HeldMapping, type HeldReport, type LeakReport } from './kernel/leaks.js';
export { SIM_ERRORS, SimError, SyscallError, type SimErrorCode } from './errors.js';
export * as uapi from './uapi/index.js';
