/**
 * The fences entry point: attaching a worker to the machine's fence table, with every fence kind (plain, array,
 * chain) loaded, plus the whole dma_fence / dma_fence_array / dma_fence_chain / unwrap API re-exported.
 */
import { setClockEpoch } from '../shm/clock.js';
import { FenceTable, createFenceTable, type FenceInfo, type FenceTableOptions } from './table.js';
import { FenceRuntime, setFenceRuntime, type FenceAttachOptions } from './dma-fence.js';
import './dma-fence-array.js';
import './dma-fence-chain.js';

export * from './dma-fence.js';
export * from './dma-fence-array.js';
export * from './dma-fence-chain.js';
export * from './dma-fence-unwrap.js';
export { createFenceTable, createSplitFenceTable, formatFenceLeaks, FenceTableFullError, FenceWaitOnlyError } from './table.js';
export type { FenceInfo, FenceTableOptions } from './table.js';

const attached = new Map<SharedArrayBuffer, FenceRuntime>();
/** Kernel state known in this thread for a machine table (registerFenceKernel), by table. */
const kernels = new WeakMap<SharedArrayBuffer, SharedArrayBuffer>();

/**
 * Records, in this kernel-side thread only, that `kernel` is the kernel state of table `sab`: a later
 * attachFenceTable(sab) in this thread then attaches with it (testing's fenceTable(m) does this for the main thread).
 */
export function registerFenceKernel(sab: SharedArrayBuffer, kernel: SharedArrayBuffer): void {
  kernels.set(sab, kernel);
}

/**
 * Attaches this worker to the fence table `sab` (idempotent per table) and makes it the worker's current table:
 * installs the machine clock epoch, hands out this worker's creator id and doorbell bucket. Pass the machine
 * control block as `control` to share its spinner budget; event-loop workers (the broker) pass `eventLoop: true`
 * so their fence callbacks run promptly. A machine's table attached without its kernel state (`kernel`, or one
 * registered with registerFenceKernel) is wait-only: waits work, creating or freeing a fence throws
 * FenceWaitOnlyError.
 */
export function attachFenceTable(sab: SharedArrayBuffer, opts: FenceAttachOptions = {}): FenceRuntime {
  let rt = attached.get(sab);
  if (!rt) {
    const kernel = opts.kernel ?? kernels.get(sab);
    rt = new FenceRuntime(sab, kernel ? { ...opts, kernel } : opts);
    attached.set(sab, rt);
  }
  setClockEpoch(rt.table.epochMs);
  setFenceRuntime(rt);
  return rt;
}

/** Live fences of a table (leaks when nothing should be alive), without attaching to it; `kernel` for a machine's. */
export function liveFences(sab: SharedArrayBuffer, kernel: SharedArrayBuffer | null = null): FenceInfo[] {
  return new FenceTable(sab, kernel).liveFences();
}

/** Creates a table and attaches this worker to it (tests, standalone tools). */
export function createAndAttachFenceTable(
  opts: FenceTableOptions = {},
  attach: FenceAttachOptions = {},
): { sab: SharedArrayBuffer; rt: FenceRuntime } {
  const sab = createFenceTable(opts);
  return { sab, rt: attachFenceTable(sab, attach) };
}
