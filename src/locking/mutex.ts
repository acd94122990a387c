/**
 * Mutex and SpinLock: sleeping (and spinning) locks in shared memory that any worker can take, checked by the
 * lock validator (lockdep.ts) before the acquirer blocks, robust against a holder that dies.
 *
 * ## Lock word layout (Int32Array over the lock's own SharedArrayBuffer, all Atomics)
 *
 * | word | name       | meaning                                                                              |
 * |------|------------|--------------------------------------------------------------------------------------|
 * | 0    | L_STATE    | 0 unlocked, else the holder's owner token (domain.ts) \| WAITERS while a waiter may sleep |
 * | 1    | L_ID       | the lock's instance id in its domain (the same lock in every worker)                  |
 * | 2    | L_STAMP    | ww_mutex: the holder's acquire-context stamp, 0 = none (ww-mutex.ts)                  |
 * | 3    | L_CTX_SLOT | ww_mutex: 1 + the holder context's slot in the domain's context table, 0 = none      |
 *
 * The owner lives in the word the acquiring compareExchange stores, so a waiter always knows whom it waits for:
 * a dead holder (its token cleared from the domain's alive table by whoever created it) is replaced by the first
 * waiter that notices — a robust futex. The takeover is reported (kind 'api') and lock() returns -EOWNERDEAD with
 * the lock held, as pthread_mutex_lock does.
 *
 * ## Threads
 * A Mutex object is a per-worker view; `handle` travels to another worker (postMessage, a comlink call) and
 * Mutex.from(handle) there is the same lock (same word, same instance id, same class).
 */
import { E } from '../uapi/errno.js';
import { ENABLED, LockDomain, SLICE_MS, TOKEN_MASK, WAITERS, WATCHDOG } from './domain.js';
import { WAIT_MUTEX, WAIT_SPIN, waitBeat, waitBegin, waitEnd } from './watchdog.js';
import { LockClass, LockdepError, acquireOn, releaseOn, lockAcquire, lockRelease, reportMisuse, reportRaw, heldCount, heldMaps, type LockdepMap, type WaitType } from './lockdep.js';

export const L_STATE = 0;
export const L_ID = 1;
export const L_STAMP = 2;
export const L_CTX_SLOT = 3;
export const LOCK_WORDS = 4;

/** How a lock travels between workers. */
export interface LockHandle {
  readonly kind: 'mutex' | 'spinlock' | 'ww_mutex';
  readonly word: SharedArrayBuffer;
  /** Byte offset of the lock's LOCK_WORDS in `word` (default 0: a lock word of its own; a table of locks: its slot). */
  readonly offset?: number;
  readonly domain: SharedArrayBuffer;
  readonly className: string;
  /** ww_mutex only: the class's name and algorithm. */
  readonly ww?: { readonly name: string; readonly woundWait: boolean };
}

export interface MutexOptions {
  /** The lock domain (default: this worker's current one). */
  readonly domain?: LockDomain;
}

/** Outcome of the shared-word slow path. */
export const ACQUIRED = 0;
export const OWNER_DIED = 1;
export const TIMED_OUT = 2;
export const BACK_OFF = 3;
/** The lock watchdog found this wait in a real deadlock and chose it to fail (the caller returns -EDEADLK). */
export const DEADLOCKED = 4;

/**
 * Takes the lock word `w` for owner `me`, sleeping in bounded slices. `check` (ww_mutex) runs before every sleep
 * and may ask to back off (BACK_OFF). Returns ACQUIRED, OWNER_DIED (taken over from a dead holder), TIMED_OUT
 * (deadline in performance.now() ms passed), BACK_OFF, or DEADLOCKED (the lock watchdog broke a real deadlock by
 * failing this wait). `lock` names the wait for the watchdog (null: not published).
 *
 * Race-free sleep: a waiter sets WAITERS with a compareExchange and sleeps only while the word still holds exactly
 * that value (Atomics.wait compares atomically); unlock exchanges 0 in and notifies when WAITERS was set, so an
 * unlock between the waiter's store and its sleep changes the word and the wait returns at once. A waiter that
 * wins the word after sleeping stores WAITERS with its token (others may still sleep). Every sleep is at most
 * `sliceMs`, after which the holder's liveness (and `check`, and the watchdog's verdict) is looked at again: a
 * killed holder never hangs us, and a condemned wait ends within one slice.
 *
 * Publication (watchdog.ts): only here, after the spin — the uncontended path never gets this far — and only while
 * a watchdog runs. Before each sleep the waiter publishes (first time) or refreshes (later) the holder it just read
 * from the word, so the watchdog's "holder" is never older than one slice; the publication ends on every return.
 */
export function lockWordSlow(d: LockDomain, w: Int32Array, me: number, deadline: number, sliceMs: number, check: (() => boolean) | null, lock: SharedLock | null = null): number {
  for (let spin = 0; spin < 64; spin++) {
    if (Atomics.load(w, L_STATE) === 0 && Atomics.compareExchange(w, L_STATE, 0, me) === 0) return ACQUIRED;
  }
  let gen = 0;
  try {
    for (;;) {
      let v = Atomics.load(w, L_STATE);
      if (v === 0) {
        if (Atomics.compareExchange(w, L_STATE, 0, me | WAITERS) === 0) return ACQUIRED;
        continue;
      }
      if (check !== null && check()) return BACK_OFF;
      if (!d.isAlive(v & TOKEN_MASK)) {
        if (Atomics.compareExchange(w, L_STATE, v, me | WAITERS) === v) return OWNER_DIED;
        continue;
      }
      if ((v & WAITERS) === 0) {
        if (Atomics.compareExchange(w, L_STATE, v, v | WAITERS) !== v) continue;
        v |= WAITERS;
      }
      const left = deadline - performance.now();
      if (left <= 0) return TIMED_OUT;
      if (lock !== null && (gen !== 0 || d.i32[WATCHDOG] !== 0)) {
        if (gen === 0) gen = waitBegin(d, lock.waitKind, lock.id, 0, v & TOKEN_MASK, lock.lockClass.name);
        else if (waitBeat(d, gen, v & TOKEN_MASK)) return DEADLOCKED;
      }
      Atomics.wait(w, L_STATE, v, Math.min(sliceMs, left));
    }
  } finally {
    if (gen !== 0) waitEnd(d, gen);
  }
}

/** Releases the lock word: wakes one sleeper when WAITERS was set. */
export function unlockWord(w: Int32Array): void {
  if (Atomics.exchange(w, L_STATE, 0) & WAITERS) Atomics.notify(w, L_STATE, 1);
}

/** The shared parts of Mutex, SpinLock and WwMutex: the word, the id, the class, handles, misuse checks. */
export abstract class SharedLock implements LockdepMap {
  readonly word: Int32Array;
  readonly id: number;
  readonly lockClass: LockClass;
  readonly domain: LockDomain;
  classCache = -1;
  /** What a sleep on it publishes for the watchdog (watchdog.ts WAIT_*). */
  abstract get waitKind(): number;

  /**
   * With `word`, a view of the lock whose LOCK_WORDS start at `byteOffset` in it (already initialised: its L_ID
   * names it); without, a new lock in a buffer of its own.
   */
  protected constructor(cls: string | LockClass, waitType: WaitType, domain: LockDomain | undefined, word: SharedArrayBuffer | null, byteOffset = 0) {
    this.domain = domain ?? LockDomain.current();
    this.lockClass = typeof cls === 'string' ? new LockClass(cls, waitType) : cls;
    if (word) {
      this.word = lockWords(word, byteOffset);
      this.id = Atomics.load(this.word, L_ID);
    } else {
      this.word = new Int32Array(new SharedArrayBuffer(LOCK_WORDS * 4));
      this.id = this.domain.newLockId();
      Atomics.store(this.word, L_ID, this.id);
    }
  }

  /** Held by anyone. */
  isLocked(): boolean {
    return Atomics.load(this.word, L_STATE) !== 0;
  }

  /** Held by this worker (mutex_is_locked + owner check; works with the validator off). */
  heldByMe(): boolean {
    return (Atomics.load(this.word, L_STATE) & TOKEN_MASK) === this.domain.token;
  }

  /** The holder's owner token, 0 when unlocked (the watchdog's "who do I wait for"). */
  owner(): number {
    return Atomics.load(this.word, L_STATE) & TOKEN_MASK;
  }

  /**
   * The uncontended path of mutex_lock: the validator (a chain-cache hit after warm-up; one plain read of the
   * domain's ENABLED word when off — a flag, so a racy read only delays a switch), then one compareExchange.
   */
  protected lockFast(): number {
    const d = this.domain;
    if (d.i32[ENABLED] !== 0) acquireOn(this, 0, false, 0, null);
    if (Atomics.compareExchange(this.word, L_STATE, 0, d.token) === 0) return 0;
    return this.acquireContended(Infinity);
  }

  /**
   * The uncontended path of unlock: one compareExchange from exactly our token (no waiters) to 0. Anything else
   * (waiters to wake, misuse to report) takes release().
   */
  protected unlockFast(what: string): boolean {
    const d = this.domain;
    if (Atomics.compareExchange(this.word, L_STATE, d.token, 0) !== d.token) return this.release(what);
    if (d.i32[ENABLED] !== 0) releaseOn(this);
    return true;
  }

  /** Validates (lockdep) and takes the word; shared by lock, lockNested, lockNest, lockTimeout. */
  protected acquire(sub: number, nest: LockdepMap | null, timeoutMs: number): number {
    checkSubclass(sub);
    const d = this.domain;
    lockAcquire(this, sub, false, 0, nest);
    if (Atomics.compareExchange(this.word, L_STATE, 0, d.token) === 0) return 0;
    return this.acquireContended(timeoutMs);
  }

  /** The word is taken: AA on this very lock, or sleep for it (bounded slices) until `timeoutMs`. */
  private acquireContended(timeoutMs: number): number {
    const d = this.domain;
    const w = this.word;
    const me = d.token;
    if ((Atomics.load(w, L_STATE) & TOKEN_MASK) === me) {
      // This very lock again in its holder: blocking would hang forever. The validator reported the class-level
      // AA above (when on); this is the instance-level certainty.
      lockRelease(this);
      const r = reportRaw(d, {
        kind: 'deadlock',
        key: `deadlock:self:${this.lockClass.name}`,
        locks: [this.lockClass.name],
        workers: [d.workerName],
        text: `BUG: ${d.workerName} would deadlock on ${this.lockClass.name}: it already holds this lock`,
      });
      throw new LockdepError(r ?? { kind: 'deadlock', key: `deadlock:self:${this.lockClass.name}`, locks: [this.lockClass.name], workers: [d.workerName], text: 'AA deadlock' });
    }
    const deadline = timeoutMs === Infinity ? Infinity : performance.now() + timeoutMs;
    const r = lockWordSlow(d, w, me, deadline, SLICE_MS, null, this);
    if (r === TIMED_OUT || r === DEADLOCKED) {
      lockRelease(this);
      return r === TIMED_OUT ? -E.ETIMEDOUT : -E.EDEADLK;
    }
    if (r === OWNER_DIED) {
      this.ownerDiedReport();
      return -E.EOWNERDEAD;
    }
    return 0;
  }

  protected ownerDiedReport(): void {
    reportMisuse(this.domain, `owner-died`, [this.lockClass.name], 'WARNING: lock held by a dead worker recovered (EOWNERDEAD)', [
      `${this.domain.workerName} took over (${this.lockClass.name}) from a worker that died holding it.`,
      'The data it protects may be inconsistent: the holder was killed inside its critical section.',
    ]);
  }

  /** Trylock: never validated, never waits. */
  protected tryAcquire(): boolean {
    if (Atomics.compareExchange(this.word, L_STATE, 0, this.domain.token) !== 0) return false;
    lockAcquire(this, 0, true, 0, null);
    return true;
  }

  /**
   * Release with the DEBUG_MUTEXES checks: unlocking a lock nobody holds (double unlock: lockdep's bad unlock
   * balance) or one another worker holds (a non-owner) is reported and leaves the word alone. Returns false then.
   */
  protected release(what: string): boolean {
    const d = this.domain;
    const v = Atomics.load(this.word, L_STATE);
    if ((v & TOKEN_MASK) !== d.token) {
      if (v === 0) {
        reportMisuse(d, 'double-unlock', [this.lockClass.name], 'WARNING: bad unlock balance detected!', [
          `${d.workerName} is trying to release lock (${this.lockClass.name}) in ${what},`,
          'but nobody holds it: a double unlock.',
        ]);
      } else {
        reportMisuse(d, 'non-owner-unlock', [this.lockClass.name], `DEBUG_LOCKS_WARN_ON(__owner_task(owner) != current)`, [
          `${d.workerName} is trying to release lock (${this.lockClass.name}) in ${what},`,
          `but it is held by owner ${v & TOKEN_MASK}: an unlock by a non-owner.`,
        ]);
      }
      return false;
    }
    lockRelease(this);
    unlockWord(this.word);
    return true;
  }

  abstract get handle(): LockHandle;
}

function checkSubclass(sub: number): void {
  if (!Number.isInteger(sub) || sub < 0 || sub > 7) {
    if (typeof sub !== 'number') throw Object.assign(new TypeError('The "subclass" argument must be of type number'), { code: 'ERR_INVALID_ARG_TYPE' });
    throw Object.assign(new RangeError(`The value of "subclass" is out of range. It must be an integer in 0..7. Received ${sub}`), { code: 'ERR_OUT_OF_RANGE' });
  }
}

function checkTimeout(ms: number): void {
  if (typeof ms !== 'number') throw Object.assign(new TypeError('The "timeoutMs" argument must be of type number'), { code: 'ERR_INVALID_ARG_TYPE' });
  if (!(ms >= 0)) throw Object.assign(new RangeError(`The value of "timeoutMs" is out of range. It must be >= 0. Received ${ms}`), { code: 'ERR_OUT_OF_RANGE' });
}

/**
 * A sleeping mutex (struct mutex). lock() returns 0, or -EOWNERDEAD with the lock held when its previous holder
 * died holding it (reported), or -EDEADLK without it when the lock watchdog found this wait in a real deadlock and
 * chose it to fail (reported). Any worker may call any method; only the holder may unlock.
 */
export class Mutex extends SharedLock {
  constructor(cls: string | LockClass, opts: MutexOptions = {}) {
    super(cls, 'sleep', opts.domain, null);
  }

  get waitKind(): number {
    return WAIT_MUTEX;
  }

  /** The same lock in this worker, from a handle another worker sent. */
  static from(h: LockHandle): Mutex {
    const m = Object.create(Mutex.prototype) as Mutex;
    fromHandle(m, h);
    return m;
  }

  /** mutex_lock. */
  lock(): number {
    return this.lockFast();
  }

  /** mutex_lock_nested(lock, subclass): a different node of the same class, so no AA (0..7). */
  lockNested(subclass: number): number {
    return this.acquire(subclass, null, Infinity);
  }

  /** mutex_lock_nest_lock(lock, nest): same-class locks serialized by `nest` (held, below) are not AA. */
  lockNest(nest: LockdepMap): number {
    return this.acquire(0, nest, Infinity);
  }

  /** Takes the lock or gives up after `timeoutMs`: 0, -ETIMEDOUT (not held), or -EOWNERDEAD (held). */
  lockTimeout(timeoutMs: number): number {
    checkTimeout(timeoutMs);
    return this.acquire(0, null, timeoutMs);
  }

  /** mutex_trylock: true when taken. */
  trylock(): boolean {
    return this.tryAcquire();
  }

  /** mutex_unlock. Misuse (double unlock, a non-owner) is reported and returns false. */
  unlock(): boolean {
    return this.unlockFast('mutex_unlock');
  }

  get handle(): LockHandle {
    return { kind: 'mutex', word: this.word.buffer as SharedArrayBuffer, domain: this.domain.sab, className: this.lockClass.name };
  }
}

/**
 * A spinlock (spinlock_t): the same word, but holding it is atomic context — taking a sleeping lock or waiting on
 * a fence inside is reported ('wait-context'). It still sleeps in slices when contended: workers cannot spin
 * forever on a machine with fewer cores than workers.
 */
export class SpinLock extends SharedLock {
  constructor(cls: string | LockClass, opts: MutexOptions = {}) {
    super(typeof cls === 'string' ? new LockClass(cls, 'spin') : cls, 'spin', opts.domain, null);
  }

  get waitKind(): number {
    return WAIT_SPIN;
  }

  static from(h: LockHandle): SpinLock {
    const m = Object.create(SpinLock.prototype) as SpinLock;
    fromHandle(m, h);
    return m;
  }

  lock(): number {
    return this.acquire(0, null, Infinity);
  }
  lockNested(subclass: number): number {
    return this.acquire(subclass, null, Infinity);
  }
  lockNest(nest: LockdepMap): number {
    return this.acquire(0, nest, Infinity);
  }
  trylock(): boolean {
    return this.tryAcquire();
  }
  unlock(): boolean {
    return this.release('spin_unlock');
  }

  get handle(): LockHandle {
    return { kind: 'spinlock', word: this.word.buffer as SharedArrayBuffer, domain: this.domain.sab, className: this.lockClass.name };
  }
}

/** The LOCK_WORDS at `byteOffset` of `sab`, checked to be inside it and aligned. */
function lockWords(sab: SharedArrayBuffer, byteOffset: number): Int32Array {
  if (!(sab instanceof SharedArrayBuffer) || !Number.isInteger(byteOffset) || byteOffset < 0 || byteOffset % 4 !== 0 || sab.byteLength < byteOffset + LOCK_WORDS * 4) {
    throw Object.assign(new TypeError('The "handle.word" property must be a lock word SharedArrayBuffer (offset inside it)'), { code: 'ERR_INVALID_ARG_TYPE' });
  }
  return new Int32Array(sab, byteOffset, LOCK_WORDS);
}

/** Fills a view made with Object.create from a handle (the constructor would allocate a new word). */
export function fromHandle(target: SharedLock, h: LockHandle): void {
  if (typeof h !== 'object' || h === null || !(h.word instanceof SharedArrayBuffer) || !(h.domain instanceof SharedArrayBuffer)) {
    throw Object.assign(new TypeError('The "handle" argument must be a lock handle'), { code: 'ERR_INVALID_ARG_TYPE' });
  }
  const domain = LockDomain.attach(h.domain);
  const word = lockWords(h.word, h.offset ?? 0);
  const waitType: WaitType = h.kind === 'spinlock' ? 'spin' : 'sleep';
  Object.assign(target, { domain, word, id: Atomics.load(word, L_ID), lockClass: new LockClass(h.className, waitType), classCache: -1 });
}

/**
 * Call when this worker is about to exit (process 'exit' in a worker): every lock it still holds is reported
 * ("exiting with locks still held") and released, so nobody waits for a worker that is gone. Returns how many.
 * Locks of a worker that is killed are recovered by their next waiter instead (EOWNERDEAD).
 */
export function lockdepWorkerExit(d: LockDomain, extra: readonly SharedLock[] = []): number {
  let n = 0;
  const held = new Set<SharedLock>(extra);
  for (const m of heldMaps(d)) if (m instanceof SharedLock) held.add(m);
  for (const l of held) {
    if (!l.heldByMe()) continue;
    n++;
    reportMisuse(d, 'exit-held', [l.lockClass.name], `WARNING: ${d.workerName} is exiting with locks still held!`, [
      `${heldCount(d)} lock(s) held; releasing (${l.lockClass.name}) so its waiters go on.`,
    ]);
    unlockWord(l.word);
  }
  return n;
}
