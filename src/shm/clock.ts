/**
 * The machine's shared monotonic clock: ktime_get() in nanoseconds since the machine epoch, comparable across
 * workers.
 *
 * Every worker has its own performance.timeOrigin (the moment that worker started), so performance.now() values
 * of two workers cannot be compared. timeOrigin + now() is the same wall-clock-based instant in every worker, so
 * the clock is `timeOrigin + now() − epoch`, where the epoch is stored once per machine (in the fence table's
 * header) and installed here when a worker attaches. The per-worker constant `timeOrigin − epoch` is computed once
 * (a subtraction of two ~1.7e12 ms doubles, exact to well under a microsecond), so readings keep now()'s
 * resolution. Within one worker the clock is monotonic; across workers readings agree to within the precision of
 * timeOrigin (microseconds).
 */

/** performance.timeOrigin − machine epoch, in ms, for this worker. */
let offsetMs = 0;
let epochSet = false;

/** The instant (ms on the timeOrigin scale) a machine epoch is taken at: call once, store it in shared memory. */
export function machineEpochNow(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * Installs the machine epoch (from the fence table header) for this worker. Until it is called, the clock counts
 * from this worker's own start, which is only comparable within the worker.
 */
export function setClockEpoch(epochMs: number): void {
  offsetMs = performance.timeOrigin - epochMs;
  epochSet = true;
}

/** True once setClockEpoch() ran in this worker. */
export function clockEpochSet(): boolean {
  return epochSet;
}

/** ktime_get(): nanoseconds since the machine epoch (an integer; exact below 2^53 ns ≈ 104 days). */
export function ktimeGetNs(): number {
  return Math.round((offsetMs + performance.now()) * 1e6);
}
