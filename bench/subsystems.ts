/** The per-subsystem benchmarks (fd passing, mmap bandwidth, fences), run after the syscall figures. */
export async function benchSubsystems(): Promise<void> {
  // Added as subsystems land.
}
