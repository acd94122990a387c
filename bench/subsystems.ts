/** The per-subsystem benchmarks (fd passing, mmap bandwidth, fence wakes, sw_sync/sync_file, fd allocation), run after the syscall figures. */
import { benchFdPassing } from './fdpass.js';
import { benchFdTable } from './fdtable.js';
import { benchFenceWake } from './fence.js';
import { benchSync } from './sync.js';
import { benchLocking } from './locking.js';
import { emit } from './util.js';

export async function benchSubsystems(): Promise<void> {
  await benchFdPassing();
  emit({ ...(await benchFenceWake()), baseline: 'raw Atomics.store+notify → Atomics.wait between two workers', goal: 'ratio_p50 <= 1.5' });
  await benchSync();
  await benchFdTable();
  benchLocking();
}
