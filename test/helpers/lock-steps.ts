/**
 * Driving test/fixtures/lockdep-steps.ts workers from a test: one step at a time (the barrier), and lock handles
 * made from "kind:Class" specs. Shared by the locking-selftest ports and the watchdog tests.
 */
import type { Worker } from 'node:worker_threads';
import { Mutex, SpinLock, WwClass, WwMutex, type LockDomain, type LockHandle } from '../../src/locking/index.js';

export interface Reply {
  readonly ok: boolean;
  readonly value?: unknown;
  readonly error?: string;
  readonly code?: string;
}

/** Sends `msg` to `w` and resolves with its answer (rejects after `timeoutMs`: a step that never returns). */
export function call(w: Worker, msg: unknown, timeoutMs = 10_000): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`step timed out: ${JSON.stringify(msg)}`)), timeoutMs);
    w.once('message', (r: Reply) => {
      clearTimeout(timer);
      resolve(r);
    });
    w.postMessage(msg);
  });
}

/** A lock of `d` from a spec: "mutex:Class", "spin:Class", "ww:Class" (Wait-Die) or "wwW:Class" (Wound-Wait). */
export function makeLock(d: LockDomain, spec: string): LockHandle {
  const [kind, cls] = spec.split(':') as [string, string];
  if (kind === 'mutex') return new Mutex(cls, { domain: d }).handle;
  if (kind === 'spin') return new SpinLock(cls, { domain: d }).handle;
  return new WwMutex(new WwClass(cls, { woundWait: kind === 'wwW' }), { domain: d }).handle;
}
