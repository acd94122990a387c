/**
 * The machine's control block: one small SharedArrayBuffer every process and the broker map — only words a process
 * must write to reach the kernel, none the kernel trusts (every process can write every word: see the trust
 * boundary in docs/ARCHITECTURE.md; a process scribbling over them can slow the machine down, nothing more).
 *
 * Word layout (Int32, all accessed with Atomics):
 *   0 DOORBELL      incremented by a process after it posts a request; the broker sleeps on it when idle (any
 *                   value will do: the broker only waits for it to change, then scans the channels)
 *   1 .. 15         unused (were a bare spinner counter, the spin limit, a broker-idle flag and the SHUTDOWN word:
 *                   the limit is now handed to each worker by value, and "the machine is shutting down" is a word
 *                   in each process's own channel, written by the kernel)
 *   16..31 SPIN_BLOCK the machine's spin slots (layout in src/shm/spin.ts): SB_MAX = vCPUs − 1 (the broker
 *                   needs the other one; processes use the limit they were handed, never this word), then one word
 *                   per slot holding the owner token of the process spinning in it; the broker gives a dead
 *                   process's slots back in reap (releaseSpinSlots)
 */
import { initSpinBlock, SPIN_BLOCK_WORDS } from './spin.js';

export const DOORBELL = 0;
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
