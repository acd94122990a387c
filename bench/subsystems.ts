/** The per-subsystem benchmarks (fd passing, mmap bandwidth, fences), run after the syscall figures. */
import { benchFdPassing } from './fdpass.js';
import { benchSync } from './sync.js';

export async function benchSubsystems(): Promise<void> {
  await benchFdPassing();
  await benchSync();
}
