/**
 * Fault-injection seams: named points inside the library where a test can make this worker stop dead, so it can
 * be killed at exactly the worst instruction (between a fence's S_SIGNAL compareExchange and its timestamp store,
 * say) — something no timing-based kill can hit reliably.
 *
 * Compiled in, free when unarmed: a seam is `if (faultArmed !== 0) faultPoint(FAULT_X)` — one load of a module
 * variable that is 0 unless a test armed a point in this worker. Armed (armFault, from code running in the worker
 * itself: a test fixture), the point reports that it was reached in a shared word (so the test can await it
 * without sleeping blind) and then parks the worker until it is killed (bounded: after PARK_MS it throws, so a
 * test that forgot to kill does not leave a worker spinning forever). Only test fixtures arm seams.
 */

/** In signalInner (src/fence/dma-fence.ts): S_SIGNAL claimed, timestamp not published, nobody notified. */
export const FAULT_FENCE_SIGNAL = 1;
/** In dma_resv_add_fence (src/fence/dma-resv.ts): the new entry stored, num_fences not yet raised, lock held. */
export const FAULT_RESV_ADD = 2;
/** In dma_resv_reserve_fences: the new list filled, not yet published (obj->fences still the old one), lock held. */
export const FAULT_RESV_RESERVE = 3;
/** Names of the points, for messages. */
export const FAULT_NAMES: Record<number, string> = { [FAULT_FENCE_SIGNAL]: 'fence-signal', [FAULT_RESV_ADD]: 'resv-add', [FAULT_RESV_RESERVE]: 'resv-reserve' };

/** How long an armed point parks the worker waiting to be killed before it gives up with an error (ms). */
const PARK_MS = 60_000;

/** The point armed in this worker (0 = none). Read by every seam; written only by armFault/disarmFault. */
export let faultArmed = 0;
let report: Int32Array | null = null;

/**
 * Arms `point` in the calling worker. When the point is reached, word 0 of `reached` (if given) is set to the
 * point's number and notified, and the worker parks until it is killed.
 */
export function armFault(point: number, reached?: SharedArrayBuffer): void {
  faultArmed = point;
  report = reached ? new Int32Array(reached) : null;
}

export function disarmFault(): void {
  faultArmed = 0;
  report = null;
}

/** The armed path of a seam: does nothing unless `point` is the armed one; else reports and parks (see above). */
export function faultPoint(point: number): void {
  if (faultArmed !== point) return;
  const r = report;
  if (r) {
    Atomics.store(r, 0, point);
    Atomics.notify(r, 0);
  }
  // Park on a private word nobody notifies: the worker is meant to die here (worker.terminate()).
  const park = new Int32Array(new SharedArrayBuffer(4));
  Atomics.wait(park, 0, 0, PARK_MS);
  throw new Error(`dmabuf-sim: fault point ${FAULT_NAMES[point] ?? point} reached but the worker was not killed`);
}
