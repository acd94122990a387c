/**
 * The machine's control block: one small SharedArrayBuffer every process and the broker map.
 *
 * Word layout (Int32, all accessed with Atomics):
 *   0 DOORBELL      incremented by a process after it posts a request; the broker sleeps on it when idle
 *   1 SPINNERS      processes currently spinning for a reply (bounded by MAX_SPINNERS)
 *   2 MAX_SPINNERS  how many processes may spin at once: vCPUs − 1 (the broker needs the other one)
 *   3 BROKER_IDLE   1 while the broker sleeps on DOORBELL (diagnostic: processes always notify)
 *   4 SHUTDOWN      1 once the machine shuts down: blocked callers give up with ESHUTDOWN
 */
export const DOORBELL = 0;
export const SPINNERS = 1;
export const MAX_SPINNERS = 2;
export const BROKER_IDLE = 3;
export const SHUTDOWN = 4;
export const CONTROL_WORDS = 16;

export function createControl(maxSpinners: number): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(CONTROL_WORDS * 4);
  const w = new Int32Array(sab);
  w[MAX_SPINNERS] = maxSpinners;
  return sab;
}

/** Wakes the broker: called by a process right after its STATE store. */
export function ringDoorbell(ctl: Int32Array): void {
  Atomics.add(ctl, DOORBELL, 1);
  Atomics.notify(ctl, DOORBELL, 1);
}
