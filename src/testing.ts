/**
 * dmabuf-sim/testing: hooks for tests and for driver models, kept off the Machine's public surface. They reach
 * kernel-internal APIs no syscall does (adding a KERNEL or BOOKKEEP fence to a buffer's reservation object, an
 * in-broker importer's CPU access or DMA map, the in-kernel KUnit cases) and kernel state a user need not see
 * (every live object, the first half of shutdown). Each takes the Machine and the processes it spawned; errors
 * are the same as the Machine's (a kernel errno as a SyscallError naming the hook, ERR_DMABUF_SIM_* codes).
 */
import { controlOf, pidIn, type Machine, type Proc } from './machine.js';
import type { FenceHandle } from './fence/dma-fence.js';
import { registerFenceKernel } from './fence/index.js';
import { attachResvTable, type ResvAttachment } from './fence/dma-resv.js';
import type { DmaResvUsage } from './fence/dma-resv.js';
import type { DmaDataDirection } from './kernel/dma-direction.js';
import type { KunitResult } from './kernel/kunit.js';
import type { LeakReport } from './kernel/leaks.js';
import { validateFd, validateInt, validateInteger, validateObject, validateString } from './validate.js';

export { DMA_RESV_USAGE_BOOKKEEP, DMA_RESV_USAGE_KERNEL, DMA_RESV_USAGE_READ, DMA_RESV_USAGE_WRITE, type DmaResvUsage } from './fence/dma-resv.js';
export { DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE, type DmaDataDirection } from './kernel/dma-direction.js';
export type { FenceHandle } from './fence/dma-fence.js';
export type { KunitResult } from './kernel/kunit.js';

/**
 * dma_resv_add_fence(fence, usage) on the buffer behind `fd` of `proc` — what a driver does once it has queued
 * work on the buffer (lock, reserve a slot, add, unlock). `fence` is a handle into the machine's fence table made
 * by any worker; the caller keeps its own reference. The only way to add KERNEL and BOOKKEEP fences, which no
 * ioctl adds. Errors as dma_buf_get (EBADF; EINVAL for an fd that is not a dma-buf), EINVAL for a bad usage.
 */
export async function dmaBufAddFence(m: Machine, proc: Proc, fd: number, fence: FenceHandle, usage: DmaResvUsage): Promise<void> {
  const pid = pidIn(m, proc);
  const f = validateFd(fd);
  const h = validateObject(fence, 'fence');
  const handle = { index: validateInteger(h['index'], 'fence.index', 0, 2 ** 31 - 1), gen: validateInt(h['gen'], 'fence.gen') };
  return controlOf(m, 'dmaBufAddFence').testDmaBufAddFence(pid, f, handle, validateInt(usage, 'usage') as DmaResvUsage);
}

/**
 * An in-broker kernel caller's CPU access to the buffer behind `fd` of `proc`, the event-loop way: resolves once
 * the implicit fences `dir` needs have signaled (the broker keeps serving meanwhile), then ends the access.
 */
export async function dmaBufCpuAccessAsync(m: Machine, proc: Proc, fd: number, dir: DmaDataDirection): Promise<void> {
  const pid = pidIn(m, proc);
  return controlOf(m, 'dmaBufCpuAccessAsync').testDmaBufCpuAccessAsync(pid, validateFd(fd), validateInt(dir, 'dir') as DmaDataDirection);
}

/**
 * A static importer (device `devName`) attaching to the buffer behind `fd` of `proc` and mapping it the
 * event-loop way (waits for KERNEL fences only), then unmapping and detaching. Resolves with the mapped length.
 */
export async function dmaBufMapAsync(m: Machine, proc: Proc, fd: number, devName: string): Promise<number> {
  const pid = pidIn(m, proc);
  return controlOf(m, 'dmaBufMapAsync').testDmaBufMapAsync(pid, validateFd(fd), validateString(devName, 'devName'));
}

/**
 * Tells the kernel that warnings matching `pattern` are expected from now until the returned handle's end(): a
 * test whose syscalls provoke a kernel WARN on purpose says so (src/bug.ts). They stay in the shutdown report,
 * marked `expected`, and print as one "N expected WARNINGs in <label>" line instead of one WARNING line each.
 * Machine-wide while open. end() resolves to the warnings it matched.
 */
export async function expectKernelWarnings(m: Machine, pattern: RegExp, label: string): Promise<{ end(): Promise<string[]> }> {
  const control = controlOf(m, 'expectKernelWarnings');
  const id = await control.expectWarningsBegin(pattern, label);
  return { end: () => control.expectWarningsEnd(id) };
}

/** Runs the in-kernel KUnit case `name` (src/kernel/kunit.ts), as `proc` when given. A BUG in it is an oops. */
export async function kunit(m: Machine, name: string, proc?: Proc): Promise<KunitResult> {
  validateString(name, 'name');
  return controlOf(m, 'kunit').kunitRun(name, proc === undefined ? undefined : pidIn(m, proc));
}

/** Every kernel object alive now, with its origin (what shutdown() would report as leaks if nothing ended). */
export async function liveObjects(m: Machine): Promise<LeakReport[]> {
  return controlOf(m, 'liveObjects').leaks();
}

/**
 * The first half of shutdown() on its own: parked syscalls fail with ESHUTDOWN and new ones fail at once, while
 * the processes keep running (so a test can watch them see it). Call shutdown() afterwards as usual.
 */
export async function beginShutdown(m: Machine): Promise<void> {
  return controlOf(m, 'beginShutdown').beginShutdown();
}

/**
 * The machine's fence table, for a test's or a driver model's own thread to attach to (attachFenceTable) and
 * make or signal fences in. This thread is kernel-side (it plays a driver): the table's kernel state is registered
 * with it here (registerFenceKernel), so attachFenceTable(table) in this thread may create fences.
 */
export async function fenceTable(m: Machine): Promise<SharedArrayBuffer> {
  const table = await controlOf(m, 'fenceTable').fenceTable();
  registerFenceKernel(table, await controlOf(m, 'fenceKernelState').fenceKernelState());
  await resvTable(m);
  return table;
}

/**
 * The machine's reservation table and kernel lock domain, attached in this (kernel-side) thread: dmaResvInit()
 * here then makes objects in the machine's table and dmaResvFromId(id) reaches any of them — a buffer's with
 * dmaBufResvId. Returns the buffers, for a kernel-side worker this thread starts itself
 * (attachResvTable(table, { locks }) there). fenceTable(m) calls this too.
 */
export async function resvTable(m: Machine): Promise<{ table: SharedArrayBuffer; locks: SharedArrayBuffer; attachment: ResvAttachment }> {
  const { table, locks } = await controlOf(m, 'resvTable').resvTable();
  return { table, locks, attachment: attachResvTable(table, { locks }) };
}

/**
 * The machine-wide id of the reservation object of the buffer behind `fd` of `proc`: dmaResvFromId(id) in a
 * kernel-side thread (after fenceTable(m) or resvTable(m)) is that buffer's dma_resv. Errors as dma_buf_get.
 */
export async function dmaBufResvId(m: Machine, proc: Proc, fd: number): Promise<number> {
  const pid = pidIn(m, proc);
  return controlOf(m, 'dmaBufResvId').dmaBufResvId(pid, validateFd(fd));
}

/** The fence table's kernel state (for a kernel-side worker a test starts itself: attachFenceTable(t, { kernel })). */
export async function fenceKernelState(m: Machine): Promise<SharedArrayBuffer> {
  return controlOf(m, 'fenceKernelState').fenceKernelState();
}

/**
 * The machine's spin slots (src/shm/spin.ts): how many processes may spin for a reply at once, and how many slots
 * are taken now. With no process running, a taken slot is a leak (a process killed mid-spin whose slot never came
 * back).
 */
export async function spinSlots(m: Machine): Promise<{ max: number; inUse: number }> {
  return controlOf(m, 'spinSlots').spinSlots();
}

/** Syscalls parked in the kernel right now (blocked in poll, recvmsg, SYNC START…): wait on this, not on a delay. */
export async function parkedCalls(m: Machine): Promise<number> {
  return controlOf(m, 'parkedCalls').parkedCalls();
}
