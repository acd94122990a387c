/**
 * The machine's control block: one small SharedArrayBuffer every process and the broker map.
 *
 * Word layout (Int32, all accessed with Atomics):
 *   0 DOORBELL      incremented by a process after it posts a request; the broker sleeps on it when idle
 *   1, 2            unused (were a bare spinner counter, which a kill mid-spin leaked: see SPIN_BLOCK)
 *   3 BROKER_IDLE   1 while the broker sleeps on DOORBELL (diagnostic: processes always notify)
 *   4 SHUTDOWN      1 once the machine shuts down: blocked callers give up with ESHUTDOWN
 *   16..31 SPIN_BLOCK the machine's spin slots (layout in src/shm/spin.ts): SB_MAX = vCPUs − 1 (the broker
 *                   needs the other one), then one word per slot holding the owner token of the process spinning
 *                   in it; the broker gives a dead process's slots back in reap (releaseSpinSlots)
 */
import { initSpinBlock, SPIN_BLOCK_WORDS } from './spin.js';

export const DOORBELL = 0;
export const BROKER_IDLE = 3;
export const SHUTDOWN = 4;
export const SPIN_BLOCK = 16;
export const CONTROL_WORDS = SPIN_BLOCK + SPIN_BLOCK_WORDS;

export function createControl(maxSpinners: number): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(CONTROL_WORDS * 4);
  initSpinBlock(spinBlockOf(sab), maxSpinners);
  return sab;
}

/** The spin slot block of a control block (a view of its SPIN_BLOCK words). */
export function spinBlockOf(control: SharedArrayBuffer): Int32Array {
  return new Int32Array(control, SPIN_BLOCK * 4, SPIN_BLOCK_WORDS);
}

/** Wakes the broker: called by a process right after its STATE store. */
export function ringDoorbell(ctl: Int32Array): void {
  Atomics.add(ctl, DOORBELL, 1);
  Atomics.notify(ctl, DOORBELL, 1);
}
