/**
 * Wound/wait mutexes (Documentation/locking/ww-mutex-design.rst) across workers: WwClass (Wait-Die or
 * Wound-Wait), WwAcquireCtx (a ticket from the domain's shared counter) and WwMutex (lock with -EDEADLK /
 * -EALREADY, lockSlow, trylock, unlock), with the DEBUG_WW_MUTEXES checks and lockdep's view of them.
 *
 * ## Shared state
 * The lock word is a Mutex word (mutex.ts: L_STATE owner | WAITERS, L_ID, L_STAMP the holder context's stamp,
 * L_CTX_SLOT 1 + its slot). A context owns one slot of the domain's context table (domain.ts: stamp, wounded,
 * acquired, owner token) so a Wound-Wait contender in another worker can wound it.
 *
 * ## Lockdep's view (as mainline)
 * ww_acquire_init takes `<class>_acquire` and a nested `<class>_mutex` map (nest lock: the context), held until
 * fini; every ww_mutex_lock under the context is a `<class>_mutex` acquisition with the context as nest lock, so
 * it merges into that entry and same-class locks in any order are fine under one context. Two contexts of one
 * class in one worker, or a context-less lock of the class while a context holds one, are AA.
 *
 * ## Back-off rules (as mainline)
 * -EDEADLK only for a context that already holds a lock (one holding nothing waits). Wait-Die: a younger context
 * (higher stamp) dies when the holder is older. Wound-Wait: an older context wounds a younger holder and waits;
 * the wounded context dies the next time it has to wait while holding locks. -EALREADY: the context holds it.
 */
import { E } from '../uapi/errno.js';
import { SyscallError } from '../errors.js';
import { CAP_CTX, CTX_ACQUIRED, CTX_OWNER, CTX_STAMP, CTX_WORDS, CTX_WOUNDED, LockDomain, SLICE_MS, TICKET, TOKEN_MASK } from './domain.js';
import { WAIT_WW } from './watchdog.js';
import { LockClass, LockMap, lockAcquire, lockRelease, reportMisuse, type LockdepMap } from './lockdep.js';
import { ACQUIRED, BACK_OFF, DEADLOCKED, L_CTX_SLOT, L_STAMP, L_STATE, OWNER_DIED, SharedLock, TIMED_OUT, fromHandle, lockWordSlow, type LockHandle, type MutexOptions } from './mutex.js';

/** Sleep slice while a Wound-Wait context holding locks waits: how soon it notices it was wounded. */
const WOUND_SLICE_MS = 2;
/** Sleep slice of a context waiting: the holder's stamp is stored just after its compareExchange, unsignalled. */
const WW_SLICE_MS = 10;

/** A ww_class: DEFINE_WD_CLASS (Wait-Die, the default) or DEFINE_WW_CLASS (woundWait: true). */
export class WwClass {
  readonly acquireClass: LockClass;
  readonly mutexClass: LockClass;
  readonly woundWait: boolean;
  constructor(
    readonly name: string,
    opts: { readonly woundWait?: boolean } = {},
  ) {
    if (typeof name !== 'string' || name.length === 0) {
      throw Object.assign(new TypeError('The "name" argument must be a non-empty string'), { code: 'ERR_INVALID_ARG_TYPE' });
    }
    this.woundWait = opts.woundWait === true;
    this.acquireClass = new LockClass(`${name}_acquire`, 'map');
    this.mutexClass = new LockClass(`${name}_mutex`, 'sleep');
  }
}

function wwError(errno: number, call: string): SyscallError {
  return new SyscallError(errno, call);
}

/**
 * ww_acquire_ctx: a transaction with a ticket. init in the constructor (the ticket comes from the domain's shared
 * counter, so it orders contexts of every worker), done(), fini(). One worker only: a context is not shared.
 */
export class WwAcquireCtx {
  readonly stamp: number;
  readonly slot: number;
  readonly domain: LockDomain;
  /** Locks held under this context (ww_ctx->acquired). */
  acquired = 0;
  doneAcquire = false;
  finished = false;
  /** The lock that returned -EDEADLK (DEBUG_WW_MUTEXES contending_lock), until it is taken. */
  contending: WwMutex | null = null;
  /** lockdep: the context's `<class>_acquire` map and its `<class>_mutex` first-lock map. */
  readonly depMap: LockMap;
  readonly firstLockMap: LockMap;

  constructor(
    readonly wwClass: WwClass,
    opts: MutexOptions = {},
  ) {
    const d = (this.domain = opts.domain ?? LockDomain.current());
    this.stamp = Atomics.add(d.i32, TICKET, 1) + 1;
    this.slot = allocSlot(d, this.stamp);
    this.depMap = new LockMap(d, wwClass.acquireClass);
    this.firstLockMap = new LockMap(d, wwClass.mutexClass);
    lockAcquire(this.depMap, 0, false, 0, null);
    lockAcquire(this.firstLockMap, 0, false, 0, this.depMap);
  }

  private word(i: number): number {
    return this.domain.ctxBase + this.slot * CTX_WORDS + i;
  }

  get wounded(): boolean {
    return Atomics.load(this.domain.i32, this.word(CTX_WOUNDED)) !== 0;
  }

  /** Kept in the shared slot so a wounder can tell whether this context holds anything. */
  setAcquired(n: number): void {
    this.acquired = n;
    Atomics.store(this.domain.i32, this.word(CTX_ACQUIRED), n);
  }

  clearWounded(): void {
    Atomics.store(this.domain.i32, this.word(CTX_WOUNDED), 0);
  }

  /** ww_acquire_done: no more locks will be taken under this context. */
  done(): void {
    if (this.doneAcquire) {
      reportMisuse(this.domain, 'ww-done-twice', [this.wwClass.name], 'DEBUG_LOCKS_WARN_ON(ctx->done_acquire)', ['ww_acquire_done called twice on one context']);
    }
    this.doneAcquire = true;
  }

  /** ww_acquire_fini: ends the transaction. Holding locks still, or a second fini, is reported. */
  fini(): void {
    const d = this.domain;
    if (this.finished) {
      reportMisuse(d, 'ww-fini-twice', [this.wwClass.acquireClass.name], 'WARNING: bad unlock balance detected!', [`ww_acquire_fini called twice on one ${this.wwClass.name} context`]);
      return;
    }
    this.finished = true;
    lockRelease(this.firstLockMap);
    lockRelease(this.depMap);
    if (this.acquired !== 0) {
      reportMisuse(d, 'ww-fini-held', [this.wwClass.mutexClass.name], 'DEBUG_LOCKS_WARN_ON(ctx->acquired)', [`ww_acquire_fini with ${this.acquired} lock(s) still held under the context`]);
    }
    this.doneAcquire = true;
    Atomics.store(d.i32, this.word(CTX_STAMP), 0);
  }
}

function allocSlot(d: LockDomain, stamp: number): number {
  const n = d.i32[CAP_CTX]!;
  for (let i = 0; i < n; i++) {
    const b = d.ctxBase + i * CTX_WORDS;
    const cur = Atomics.load(d.i32, b + CTX_STAMP);
    // A slot of a dead worker's context is reclaimed: its owner token is no longer alive.
    if (cur !== 0 && d.isAlive(Atomics.load(d.i32, b + CTX_OWNER))) continue;
    if (Atomics.compareExchange(d.i32, b + CTX_STAMP, cur, stamp) !== cur) continue;
    Atomics.store(d.i32, b + CTX_WOUNDED, 0);
    Atomics.store(d.i32, b + CTX_ACQUIRED, 0);
    Atomics.store(d.i32, b + CTX_OWNER, d.token);
    return i;
  }
  throw Object.assign(new RangeError(`lock domain: all ${n} ww_acquire_ctx slots are in use`), { code: 'ERR_OUT_OF_RANGE' });
}

/**
 * Stores the holder context's words (L_STAMP, L_CTX_SLOT), skipping a store that would not change the word: a
 * context-less lock (most reservation locks) then costs two plain loads instead of two fenced stores.
 */
function setCtxWords(w: Int32Array, stamp: number, slot: number): void {
  // Plain reads: the caller holds the lock, and only holders write these words.
  if (w[L_STAMP] !== stamp) Atomics.store(w, L_STAMP, stamp);
  if (w[L_CTX_SLOT] !== slot) Atomics.store(w, L_CTX_SLOT, slot);
}

/** A reservation lock: ww_mutex of a WwClass. */
export class WwMutex extends SharedLock {
  readonly wwClass: WwClass;
  /** The context this worker holds it under (ww->ctx; null when held without one or not held here). */
  ctx: WwAcquireCtx | null = null;

  /**
   * A new ww_mutex of `wwClass` in a lock word of its own; or, with `at`, a view of the initialised lock words at
   * `at.byteOffset` of `at.sab` (a table of locks, e.g. the reservation table: src/fence/resv-table.ts).
   */
  constructor(wwClass: WwClass, opts: MutexOptions = {}, at?: { readonly sab: SharedArrayBuffer; readonly byteOffset: number }) {
    super(wwClass.mutexClass, 'sleep', opts.domain, at ? at.sab : null, at ? at.byteOffset : 0);
    this.wwClass = wwClass;
  }

  get waitKind(): number {
    return WAIT_WW;
  }

  static from(h: LockHandle): WwMutex {
    if (!h || h.kind !== 'ww_mutex' || !h.ww) throw Object.assign(new TypeError('The "handle" argument must be a ww_mutex handle'), { code: 'ERR_INVALID_ARG_TYPE' });
    const m = Object.create(WwMutex.prototype) as WwMutex;
    fromHandle(m, h);
    Object.assign(m, { wwClass: new WwClass(h.ww.name, { woundWait: h.ww.woundWait }), ctx: null });
    return m;
  }

  get handle(): LockHandle {
    return { kind: 'ww_mutex', word: this.word.buffer as SharedArrayBuffer, ...(this.word.byteOffset ? { offset: this.word.byteOffset } : {}), domain: this.domain.sab, className: this.lockClass.name, ww: { name: this.wwClass.name, woundWait: this.wwClass.woundWait } };
  }

  /**
   * ww_mutex_lock(lock, ctx). Returns 0 (or -EOWNERDEAD with the lock held after a dead holder); throws a
   * SyscallError EALREADY when `ctx` holds it, EDEADLK when the context must back off (release everything, then
   * lockSlow this lock). With ctx null it is a plain mutex_lock of the lock.
   */
  lock(ctx: WwAcquireCtx | null): number {
    return this.wwLock(ctx, false, Infinity);
  }

  /**
   * ww_mutex_lock that gives up after `timeoutMs` (0: never sleeps — a trylock that also recovers a dead holder's
   * lock and applies the context's back-off rules): 0, -EOWNERDEAD (held), -ETIMEDOUT (not held); throws as lock().
   * For callers that must not sleep on another worker (the broker waits with Atomics.waitAsync between tries).
   */
  lockTimeout(ctx: WwAcquireCtx | null, timeoutMs: number): number {
    return this.wwLock(ctx, false, timeoutMs);
  }

  /** ww_mutex_lock_slow: after -EDEADLK and releasing every lock, sleeps for the contended lock (cannot fail). */
  lockSlow(ctx: WwAcquireCtx): number {
    if (ctx.contending === null) {
      reportMisuse(this.domain, 'ww-unneeded-slow', [this.wwClass.name], 'DEBUG_LOCKS_WARN_ON(!ctx->contending_lock)', ['ww_mutex_lock_slow without a prior -EDEADLK']);
    }
    return this.wwLock(ctx, true, Infinity);
  }

  /** ww_mutex_trylock(lock, ctx): true when taken (never validated, never waits). */
  trylock(ctx: WwAcquireCtx | null = null): boolean {
    const d = this.domain;
    if (Atomics.compareExchange(this.word, L_STATE, 0, d.token) !== 0) return false;
    lockAcquire(this, 0, true, 0, ctx ? ctx.depMap : null);
    this.setHolder(ctx);
    return true;
  }

  /** ww_mutex_unlock. */
  unlock(): boolean {
    const ctx = this.ctx;
    if (ctx && this.heldByMe()) {
      if (ctx.acquired <= 0) {
        reportMisuse(this.domain, 'ww-unlock-unbalanced', [this.wwClass.name], 'DEBUG_LOCKS_WARN_ON(!lock->ctx->acquired)', ['ww_mutex_unlock of a lock its context does not count as acquired']);
      } else {
        ctx.setAcquired(ctx.acquired - 1);
      }
    }
    if (this.heldByMe()) {
      this.ctx = null;
      setCtxWords(this.word, 0, 0);
    }
    return this.unlockFast('ww_mutex_unlock');
  }

  /**
   * Records `ctx` as the holder's context (ww->ctx) in this view and in the lock word. `takenOver`: the word came
   * from a dead holder, whose context words are left over, not stale.
   */
  private setHolder(ctx: WwAcquireCtx | null, takenOver = false): void {
    if (ctx !== null && !takenOver && (this.ctx !== null || Atomics.load(this.word, L_CTX_SLOT) !== 0)) {
      // ww_mutex_lock_acquired's DEBUG_LOCKS_WARN_ON(ww->ctx): the lock still names a context although it was
      // free — it was released with a plain mutex unlock, or its ctx was written by hand.
      reportMisuse(this.domain, 'ww-stale-context', [this.wwClass.name], 'DEBUG_LOCKS_WARN_ON(ww->ctx)', [
        `ww_mutex_lock of a ${this.wwClass.name} mutex that still names a context: released without ww_mutex_unlock?`,
      ]);
    }
    this.ctx = ctx;
    setCtxWords(this.word, ctx ? ctx.stamp : 0, ctx ? ctx.slot + 1 : 0);
    if (ctx) this.acquiredUnder(ctx);
  }

  /** ww_mutex_lock_acquired's DEBUG_WW_MUTEXES checks, then acquired++. */
  private acquiredUnder(ctx: WwAcquireCtx): void {
    const d = this.domain;
    if (ctx.doneAcquire) {
      reportMisuse(d, 'ww-lock-after-done', [this.wwClass.name], 'DEBUG_LOCKS_WARN_ON(ww_ctx->done_acquire)', [`ww_mutex_lock after ww_acquire_done (${this.wwClass.name})`]);
    }
    if (ctx.contending !== null) {
      if (ctx.contending !== this && ctx.contending.id !== this.id) {
        reportMisuse(d, 'ww-wrong-lock-after-edeadlk', [this.wwClass.name], 'DEBUG_LOCKS_WARN_ON(ww_ctx->contending_lock != ww)', ['after -EDEADLK the next lock must be the contended one']);
      }
      if (ctx.acquired > 0) {
        reportMisuse(d, 'ww-held-after-edeadlk', [this.wwClass.name], 'DEBUG_LOCKS_WARN_ON(ww_ctx->acquired > 0)', ['after -EDEADLK every lock of the context must be released before taking the contended one']);
      }
      ctx.contending = null;
    }
    if (ctx.wwClass.name !== this.wwClass.name) {
      reportMisuse(d, 'ww-class-mismatch', [ctx.wwClass.name, this.wwClass.name], 'DEBUG_LOCKS_WARN_ON(ww_ctx->ww_class != ww->ww_class)', [`a ${ctx.wwClass.name} context locking a ${this.wwClass.name} mutex`]);
    }
    ctx.setAcquired(ctx.acquired + 1);
  }

  private wwLock(ctx: WwAcquireCtx | null, slow: boolean, timeoutMs: number): number {
    const d = this.domain;
    const w = this.word;
    const me = d.token;
    if (ctx !== null) {
      if (ctx.finished) {
        reportMisuse(d, 'ww-lock-after-fini', [this.wwClass.name], 'DEBUG_LOCKS_WARN_ON(ctx->acquired == ~0U)', ['ww_mutex_lock with a finished context']);
      }
      if ((Atomics.load(w, L_STATE) & TOKEN_MASK) === me && Atomics.load(w, L_STAMP) === ctx.stamp) {
        throw wwError(E.EALREADY, slow ? 'ww_mutex_lock_slow' : 'ww_mutex_lock');
      }
      if (ctx.acquired === 0) ctx.clearWounded();
    }
    const nest: LockdepMap | null = ctx ? ctx.depMap : null;
    lockAcquire(this, 0, false, 0, nest);
    let r = Atomics.compareExchange(w, L_STATE, 0, me) === 0 ? ACQUIRED : -1;
    if (r !== ACQUIRED) {
      const check = ctx !== null && !slow ? () => this.mustBackOff(ctx) : null;
      const slice = ctx === null ? SLICE_MS : this.wwClass.woundWait && ctx.acquired > 0 ? WOUND_SLICE_MS : WW_SLICE_MS;
      r = lockWordSlow(d, w, me, timeoutMs === Infinity ? Infinity : performance.now() + timeoutMs, slice, check, this);
    }
    if (r === DEADLOCKED) {
      // The watchdog broke a real deadlock through this wait: fail it as a back-off would (with a context, the
      // caller's usual EDEADLK path — release everything, lockSlow this lock — lets the others go on).
      lockRelease(this);
      if (ctx !== null && ctx.contending === null) ctx.contending = this;
      throw wwError(E.EDEADLK, slow ? 'ww_mutex_lock_slow' : 'ww_mutex_lock');
    }
    if (r === BACK_OFF) {
      lockRelease(this);
      if (ctx!.contending !== null) {
        reportMisuse(d, 'ww-edeadlk-twice', [this.wwClass.name], 'DEBUG_LOCKS_WARN_ON(ww_ctx->contending_lock)', ['a second -EDEADLK before the first contended lock was taken']);
      }
      ctx!.contending = this;
      throw wwError(E.EDEADLK, 'ww_mutex_lock');
    }
    if (r === TIMED_OUT) {
      lockRelease(this);
      return -E.ETIMEDOUT;
    }
    this.setHolder(ctx, r === OWNER_DIED);
    if (r === OWNER_DIED) {
      this.ownerDiedReport();
      return -E.EOWNERDEAD;
    }
    return 0;
  }

  /**
   * Runs before each sleep of a context holding locks: Wait-Die dies when the holder is older; Wound-Wait dies
   * when this context was wounded, and wounds a younger holder (then keeps waiting). The holder's stamp is read
   * from its word, stored right after the holder's compareExchange: a context-less-looking holder (stamp 0) is
   * looked at again after the next slice.
   */
  private mustBackOff(ctx: WwAcquireCtx): boolean {
    if (ctx.acquired === 0) return false;
    const d = this.domain;
    const holderStamp = Atomics.load(this.word, L_STAMP);
    if (!this.wwClass.woundWait) return holderStamp !== 0 && holderStamp < ctx.stamp;
    if (ctx.wounded) return true;
    if (holderStamp !== 0 && holderStamp > ctx.stamp) {
      const slot = Atomics.load(this.word, L_CTX_SLOT) - 1;
      if (slot >= 0) {
        const b = d.ctxBase + slot * CTX_WORDS;
        if (Atomics.load(d.i32, b + CTX_STAMP) === holderStamp && Atomics.load(d.i32, b + CTX_ACQUIRED) > 0) {
          Atomics.store(d.i32, b + CTX_WOUNDED, 1);
        }
      }
    }
    return false;
  }
}
