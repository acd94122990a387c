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
export { createFenceTable, formatFenceLeaks, FenceTableFullError } from './table.js';
export type { FenceInfo, FenceTableOptions } from './table.js';

const attached = new Map<SharedArrayBuffer, FenceRuntime>();

/**
 * Attaches this worker to the fence table `sab` (idempotent per table) and makes it the worker's current table:
 * installs the machine clock epoch, hands out this worker's creator id and doorbell bucket. Pass the machine
 * control block as `control` to share its spinner budget; event-loop workers (the broker) pass `eventLoop: true`
 * so their fence callbacks run promptly.
 */
export function attachFenceTable(sab: SharedArrayBuffer, opts: FenceAttachOptions = {}): FenceRuntime {
  let rt = attached.get(sab);
  if (!rt) {
    rt = new FenceRuntime(sab, opts);
    attached.set(sab, rt);
  }
  setClockEpoch(rt.table.epochMs);
  setFenceRuntime(rt);
  return rt;
}

/** Live fences of a table (leaks when nothing should be alive), without attaching to it. */
export function liveFences(sab: SharedArrayBuffer): FenceInfo[] {
  return new FenceTable(sab).liveFences();
}

/** Creates a table and attaches this worker to it (tests, standalone tools). */
export function createAndAttachFenceTable(
  opts: FenceTableOptions = {},
  attach: FenceAttachOptions = {},
): { sab: SharedArrayBuffer; rt: FenceRuntime } {
  const sab = createFenceTable(opts);
  return { sab, rt: attachFenceTable(sab, attach) };
}
