/**
 * The lock domain: one SharedArrayBuffer that every worker using checked locks maps — owner liveness, ww_mutex
 * tickets and contexts, and the lock validator's class, edge and report tables — so one dependency graph is shared
 * by all workers and a verdict never depends on which worker saw what first.
 *
 * ## Why a shared table and not a graph owner thread
 * Validation must finish before the acquirer blocks (a real ABBA is reported before it hangs) and must give the
 * same verdict in every run whose steps are ordered. A graph owned by one thread (the broker) would need a
 * synchronous round trip on every unseen chain, and that thread may itself be the one blocked on a lock (the
 * broker takes resv locks). So the acquirer validates itself, under GRAPH_LOCK, against tables in shared memory.
 * Only an unseen chain pays (the per-worker chain cache in lockdep.ts); the graph lock is held for a bounded
 * search, never across a sleep on a lock word.
 *
 * ## Layout (Int32 words unless noted, all shared words accessed with Atomics)
 *
 * | word                    | name          | meaning                                                              |
 * |-------------------------|---------------|----------------------------------------------------------------------|
 * | 0                       | MAGIC         | DOMAIN_MAGIC                                                         |
 * | 1                       | GRAPH_LOCK    | 0, or the owner token of the worker updating the graph (| WAITERS)    |
 * | 2                       | TICKET        | last ww_acquire_ctx stamp handed out (stamps start at 1)             |
 * | 3                       | LOCK_ID       | last lock instance id handed out (ids start at 1)                    |
 * | 4                       | OFF           | 1 once the validator switched itself off (a table ran out)           |
 * | 5                       | N_CLASSES     | classes in use                                                       |
 * | 6                       | N_EDGES       | edge records reserved (a record is filled, then linked, under GRAPH_LOCK) |
 * | 7                       | ARENA_USED    | bytes of the string arena reserved                                   |
 * | 8                       | N_REPORTS     | report records in use                                                |
 * | 9                       | N_SUPPRESSED  | reports dropped by a suppression rule or as a repeat of a known key  |
 * | 10..15                  | CAP_*         | capacities: classes, edges, arena bytes, reports, contexts, alive    |
 * | 16                      | ALIVE_GEN     | generation counter for owner tokens                                  |
 * | 17                      | WORKER_SEQ    | last worker number handed out ("worker N" in reports)                |
 * | 18                      | ENABLED       | 1 while the validator runs (0 = locks only, no checking)             |
 * | 19                      | MODE          | MODE_CONTINUE or MODE_THROW (what the acquirer does after a report)  |
 * | 20                      | PRIMED        | 1 once dma_resv_lockdep() primed this domain                         |
 * | 21                      | SUPPR_OFF     | arena offset of the suppression rules (JSON), 0 = none               |
 * | 22                      | SUPPR_LEN     | their length in bytes                                                |
 * | 23                      | LIVENESS_SRC  | 0: owner tokens from the alive table below; 1: from the machine's    |
 * |                         |               | (each worker's fence runtime token, src/shm/alive.ts)                |
 * | 24..26                  | DOMAIN_ID     | who made it (creator's thread id, a per-thread counter, its clock):   |
 * |                         |               | two SharedArrayBuffer objects of one domain (each postMessage makes a |
 * |                         |               | new one) are recognised as the same domain by it                      |
 * | 27                      | WATCHDOG      | 1 while a lock watchdog scans this domain: sleeping waiters publish   |
 * |                         |               | what they wait for (watchdog.ts); 0 = they publish nothing           |
 * | 28                      | WAIT_SEQ      | last wait number handed out (a published wait's W_GEN)               |
 * | 29, 30                  | EXPECT_OFF/LEN| arena offset / length of the expected-report rules (JSON), 0 = none  |
 * | 31                      | N_EXPECTED    | reports an expectation matched (counted, marked, not printed)        |
 * | HEADER_WORDS ..         | alive[i]      | CAP_ALIVE words: 0 = free/dead, else the owner token registered there|
 * | ctxBase + 4i + 0..3     | ctx slot i    | stamp (0 = free), wounded, acquired, owner token                     |
 * | classBase + 2i + 0..1   | class i       | arena offset and byte length of the class name                       |
 * | headBase + node         | adjacency     | 1 + index of the newest edge out of node (class·8 + subclass), 0 none |
 * | edgeBase + 8e + 0..7    | edge e        | from, to, dep bits, next (1 + index, 0 end), text off, text len,      |
 * |                         |               | worker number, 0                                                     |
 * | reportBase + 4r + 0..3  | report r      | arena offset and length of its dedup key, of the report (JSON)       |
 * | waitBase + 48w + 0..47  | wait slot w   | one per attached worker (CAP_ALIVE of them): what it sleeps on, for   |
 * |                         |               | the watchdog — layout (W_*) in watchdog.ts                           |
 * | arenaByte ..            | arena (bytes) | UTF-8 strings: class names, where each edge was first seen, reports  |
 *
 * Owner tokens are `(gen << ALIVE_INDEX_BITS) | i` (> 0, < 2^29): bit 29 marks an untracked owner (never presumed
 * dead), bit 30 is a lock word's waiters bit — the same conventions as the machine's alive table (src/shm/alive.ts).
 * A domain takes its tokens from one table only (LIVENESS_SRC), so two workers never share a token: a domain made
 * by a Machine uses the machine's table (processes' tokens are cleared by reap when they die, so their locks are
 * recovered with no help from the test), a standalone one its own (then whoever created a worker calls
 * ownerDied(token) when it ends). A thread with no token in the machine's table is an untracked owner.
 */
import { fenceRuntime, fenceRuntimeAttached } from '../fence/runtime.js';
import { untrackedOwner } from '../fence/table.js';
import { threadId } from 'node:worker_threads';

export const DOMAIN_MAGIC = 0x4c4b4450;
export const MAGIC = 0;
export const GRAPH_LOCK = 1;
export const TICKET = 2;
export const LOCK_ID = 3;
export const OFF = 4;
export const N_CLASSES = 5;
export const N_EDGES = 6;
export const ARENA_USED = 7;
export const N_REPORTS = 8;
export const N_SUPPRESSED = 9;
export const CAP_CLASSES = 10;
export const CAP_EDGES = 11;
export const CAP_ARENA = 12;
export const CAP_REPORTS = 13;
export const CAP_CTX = 14;
export const CAP_ALIVE = 15;
export const ALIVE_GEN = 16;
export const WORKER_SEQ = 17;
export const ENABLED = 18;
export const MODE = 19;
export const PRIMED = 20;
export const SUPPR_OFF = 21;
export const SUPPR_LEN = 22;
export const LIVENESS_SRC = 23;
export const DOMAIN_ID0 = 24;
export const DOMAIN_ID1 = 25;
export const DOMAIN_ID2 = 26;
export const WATCHDOG = 27;
export const WAIT_SEQ = 28;
export const EXPECT_OFF = 29;
export const EXPECT_LEN = 30;
export const N_EXPECTED = 31;
export const HEADER_WORDS = 32;

/** Words per wait slot (watchdog.ts: 16 words of fields, then 64 bytes of object text, 64 bytes of worker name). */
export const WAIT_WORDS = 48;
/** Wait-slot words: the worker owning the slot (0 = free), read by the watchdog and reclaimed when it died. */
export const W_OWNER = 0;
/** Wait-slot word: the published wait's number, 0 = not waiting (watchdog.ts). */
export const W_GEN = 1;
/** Wait-slot words written at attach (and on a rename): the worker's number, its name's length, its name (64 B). */
export const W_WORKER_NO = 8;
export const W_NAME_LEN = 9;
export const W_NAME = 32;
export const W_STR_BYTES = 64;

export const MODE_CONTINUE = 0;
export const MODE_THROW = 1;

export const CTX_WORDS = 4;
export const CTX_STAMP = 0;
export const CTX_WOUNDED = 1;
export const CTX_ACQUIRED = 2;
export const CTX_OWNER = 3;

export const REPORT_WORDS = 4;

export const EDGE_WORDS = 8;
export const E_FROM = 0;
export const E_TO = 1;
export const E_DEPS = 2;
export const E_NEXT = 3;
export const E_TEXT_OFF = 4;
export const E_TEXT_LEN = 5;
export const E_WORKER = 6;

/** Subclasses per class (lockdep's MAX_LOCKDEP_SUBCLASSES): node = class · 8 + subclass. */
export const MAX_SUBCLASSES = 8;

export const ALIVE_INDEX_BITS = 10;
const ALIVE_GEN_MASK = (1 << 19) - 1;
/** An owner that is in no alive table: never presumed dead. */
export const TOKEN_UNTRACKED = 1 << 29;
/** The owner part of a lock word. */
export const TOKEN_MASK = (1 << 30) - 1;
/** A lock word's "a waiter may sleep" bit. */
export const WAITERS = 1 << 30;

/** Longest single sleep on another worker's store: after it the sleeper re-checks the owner's liveness. */
export const SLICE_MS = 50;

export interface DomainOptions {
  /** Validator on (default true). Off: the locks work, nothing is checked, acquisitions cost one branch. */
  readonly lockdep?: boolean;
  /** What the acquirer does after a report: carry on (default) or throw a LockdepError before blocking. */
  readonly onReport?: 'continue' | 'throw';
  readonly maxClasses?: number;
  readonly maxEdges?: number;
  readonly arenaBytes?: number;
  readonly maxReports?: number;
  readonly maxContexts?: number;
  readonly maxWorkers?: number;
  /** Reports matching one of these are counted, not stored or printed. */
  readonly suppress?: readonly Suppression[];
  /** Where owner tokens and liveness come from: this domain's table (default) or the machine's alive table. */
  readonly liveness?: 'domain' | 'machine';
}

/** A suppression rule: every given field must match (kind equal; every name in `locks` among the report's locks). */
export interface Suppression {
  readonly kind?: string;
  readonly locks?: readonly string[];
}

/**
 * Who is alive. A standalone domain carries its own table; a machine's domain is pointed at the machine-wide alive
 * table (src/shm/alive.ts) with setLiveness(), so the broker's reap of a dead process makes its locks recoverable —
 * the token conventions are the same.
 */
export interface Liveness {
  isAlive(token: number): boolean;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A per-worker view of one lock domain. Obtain with LockDomain.create() or LockDomain.attach(sab). */
export class LockDomain {
  readonly i32: Int32Array;
  readonly u8: Uint8Array;
  readonly ctxBase: number;
  readonly classBase: number;
  readonly headBase: number;
  readonly edgeBase: number;
  readonly reportBase: number;
  /** First word of the wait slots (watchdog.ts). */
  readonly waitBase: number;
  readonly arenaByte: number;
  /** This worker's wait slot (watchdog.ts), −1 when every slot was taken (its waits are then not published). */
  waitSlot = -1;
  /** This worker's owner token in this domain's alive table. */
  readonly token: number;
  /** This worker's number in reports ("worker N"). */
  readonly workerNo: number;
  /** This worker's display name. */
  workerName: string;
  liveness: Liveness;
  /** Per-worker validator state (lockdep.ts keeps it here so every domain has its own). */
  validatorState: unknown = null;

  private constructor(
    readonly sab: SharedArrayBuffer,
    name: string | undefined,
    who: AttachOwner,
  ) {
    const i32 = new Int32Array(sab);
    if (i32[MAGIC] !== DOMAIN_MAGIC) throw new TypeError('not a lock domain SharedArrayBuffer');
    this.i32 = i32;
    this.u8 = new Uint8Array(sab);
    const nAlive = i32[CAP_ALIVE]!;
    this.ctxBase = HEADER_WORDS + nAlive;
    this.classBase = this.ctxBase + i32[CAP_CTX]! * CTX_WORDS;
    this.headBase = this.classBase + i32[CAP_CLASSES]! * 2;
    this.edgeBase = this.headBase + i32[CAP_CLASSES]! * MAX_SUBCLASSES;
    this.reportBase = this.edgeBase + i32[CAP_EDGES]! * EDGE_WORDS;
    this.waitBase = this.reportBase + i32[CAP_REPORTS]! * REPORT_WORDS;
    this.arenaByte = (this.waitBase + nAlive * WAIT_WORDS) * 4;
    this.workerNo = Atomics.add(i32, WORKER_SEQ, 1) + 1;
    this.workerName = name ?? `worker ${this.workerNo}`;
    if (i32[LIVENESS_SRC] === 1) {
      const rt = fenceRuntimeAttached() ? fenceRuntime() : null;
      this.token = who.owner ?? (rt ? rt.owner : untrackedOwner());
      this.liveness = who.liveness ?? rt?.table.alive ?? { isAlive: () => true };
    } else {
      this.token = this.register();
      this.liveness = { isAlive: (t) => this.isAliveLocal(t) };
    }
    this.waitSlot = this.claimWaitSlot();
    this.publishName();
  }

  /** Writes this worker's number and display name into its wait slot (the watchdog names holders from it). */
  publishName(): void {
    if (this.waitSlot < 0) return;
    const b = this.waitBase + this.waitSlot * WAIT_WORDS;
    let bytes = enc.encode(this.workerName);
    if (bytes.length > W_STR_BYTES) bytes = bytes.subarray(0, W_STR_BYTES);
    Atomics.store(this.i32, b + W_NAME_LEN, 0);
    this.u8.set(bytes, (b + W_NAME) * 4);
    Atomics.store(this.i32, b + W_WORKER_NO, this.workerNo);
    Atomics.store(this.i32, b + W_NAME_LEN, bytes.length);
  }

  /**
   * Claims a wait slot for this worker (compareExchange from free, or from a dead owner's token): the watchdog
   * learns every attached worker's name from it, and the worker publishes its sleeps there. −1 when all are taken.
   * A free slot is looked for first, without asking whether anyone is alive: for a plain process each such
   * question is a syscall (SYS.owner_alive), and attaching must cost none — the broker frees a dead worker's slot
   * when it reaps it (releaseWaitSlot), so taking over a dead owner's slot is only the fallback of a full table.
   */
  private claimWaitSlot(): number {
    const i32 = this.i32;
    const n = i32[CAP_ALIVE]!;
    for (let pass = 0; pass < 2; pass++) {
      for (let i = 0; i < n; i++) {
        const w = this.waitBase + i * WAIT_WORDS + W_OWNER;
        const cur = Atomics.load(i32, w);
        if (cur === this.token) return i;
        if (cur !== 0 && (pass === 0 || this.isAlive(cur))) continue;
        if (Atomics.compareExchange(i32, w, cur, this.token) === cur) {
          // A dead owner may have died mid-wait: its publication goes with it.
          Atomics.store(i32, this.waitBase + i * WAIT_WORDS + W_GEN, 0);
          return i;
        }
      }
    }
    return -1;
  }

  /**
   * Frees the wait slot of `token`'s worker, which has ended (the broker's reap, after clearing the token in the
   * machine's alive table): its publication is dropped and the slot is free for the next worker to attach. Any
   * thread may call it; a slot another worker already took over is left alone (compareExchange on the owner).
   */
  releaseWaitSlot(token: number): void {
    const i32 = this.i32;
    const n = i32[CAP_ALIVE]!;
    for (let i = 0; i < n; i++) {
      const b = this.waitBase + i * WAIT_WORDS;
      if (Atomics.load(i32, b + W_OWNER) !== token) continue;
      Atomics.store(i32, b + W_GEN, 0);
      Atomics.compareExchange(i32, b + W_OWNER, token, 0);
    }
  }

  /** Creates a new domain (all tables empty) and attaches the calling worker to it. */
  static create(opts: DomainOptions = {}, workerName?: string): LockDomain {
    const caps = {
      classes: opts.maxClasses ?? 1024,
      edges: opts.maxEdges ?? 16384,
      arena: opts.arenaBytes ?? 2 * 1024 * 1024,
      reports: opts.maxReports ?? 256,
      ctx: opts.maxContexts ?? 512,
      alive: opts.maxWorkers ?? 256,
    };
    for (const [k, v] of Object.entries(caps)) {
      if (!Number.isInteger(v) || v < 1 || v > 1 << 24) {
        throw Object.assign(new RangeError(`The value of "${k}" is out of range. It must be an integer in 1..2^24`), { code: 'ERR_OUT_OF_RANGE' });
      }
    }
    const words =
      HEADER_WORDS +
      caps.alive +
      caps.ctx * CTX_WORDS +
      caps.classes * (2 + MAX_SUBCLASSES) +
      caps.edges * EDGE_WORDS +
      caps.reports * REPORT_WORDS +
      caps.alive * WAIT_WORDS;
    const sab = new SharedArrayBuffer(words * 4 + caps.arena);
    const i32 = new Int32Array(sab);
    i32[CAP_CLASSES] = caps.classes;
    i32[CAP_EDGES] = caps.edges;
    i32[CAP_ARENA] = caps.arena;
    i32[CAP_REPORTS] = caps.reports;
    i32[CAP_CTX] = caps.ctx;
    i32[CAP_ALIVE] = caps.alive;
    i32[ENABLED] = opts.lockdep === false ? 0 : 1;
    i32[MODE] = opts.onReport === 'throw' ? MODE_THROW : MODE_CONTINUE;
    i32[LIVENESS_SRC] = opts.liveness === 'machine' ? 1 : 0;
    i32[DOMAIN_ID0] = threadId;
    i32[DOMAIN_ID1] = ++created;
    i32[DOMAIN_ID2] = Math.floor(performance.timeOrigin) | 0;
    i32[ARENA_USED] = 8; // offset 0 means "none"
    Atomics.store(i32, MAGIC, DOMAIN_MAGIC);
    const d = LockDomain.attach(sab, workerName);
    if (opts.suppress && opts.suppress.length > 0) {
      const bytes = enc.encode(JSON.stringify(opts.suppress));
      const off = d.arenaAlloc(bytes.length);
      if (off === 0) throw new RangeError('suppression rules do not fit the lock domain arena');
      d.u8.set(bytes, d.arenaByte + off);
      Atomics.store(i32, SUPPR_LEN, bytes.length);
      Atomics.store(i32, SUPPR_OFF, off);
    }
    return d;
  }

  /**
   * Attaches this worker to `sab` (idempotent per worker: the same view is returned). Registers an owner token;
   * whoever created this worker should call ownerDied(token) when it ends, so waiters on its locks recover them.
   */
  static attach(sab: SharedArrayBuffer, workerName?: string, who: AttachOwner = {}): LockDomain {
    let d = views.get(sab);
    if (!d) {
      const i32 = new Int32Array(sab, 0, HEADER_WORDS);
      const id = `${i32[DOMAIN_ID0]}.${i32[DOMAIN_ID1]}.${i32[DOMAIN_ID2]}`;
      d = byId.get(id)?.deref();
      if (!d) {
        d = new LockDomain(sab, workerName, who);
        byId.set(id, new WeakRef(d));
      }
      views.set(sab, d);
    }
    if (workerName !== undefined && workerName !== d.workerName) {
      d.workerName = workerName;
      d.publishName();
    }
    return d;
  }

  /** The domain locks use when none is named: set with setCurrent(), else one created for this worker. */
  static current(): LockDomain {
    if (!current) current = LockDomain.create();
    return current;
  }

  /** Makes `d` this worker's default domain (null: forget it; the next current() creates a fresh one). */
  static setCurrent(d: LockDomain | null): void {
    current = d;
  }

  get enabled(): boolean {
    return Atomics.load(this.i32, ENABLED) === 1 && Atomics.load(this.i32, OFF) === 0;
  }

  /** Switches the validator on or off for every worker of the domain. */
  setEnabled(on: boolean): void {
    Atomics.store(this.i32, ENABLED, on ? 1 : 0);
  }

  get throwOnReport(): boolean {
    return Atomics.load(this.i32, MODE) === MODE_THROW;
  }

  setOnReport(mode: 'continue' | 'throw'): void {
    Atomics.store(this.i32, MODE, mode === 'throw' ? MODE_THROW : MODE_CONTINUE);
  }

  /** Points owner liveness at another table (the machine's alive table once it lands). */
  setLiveness(l: Liveness): void {
    this.liveness = l;
  }

  isAlive(token: number): boolean {
    return this.liveness.isAlive(token);
  }

  /**
   * Marks `token`'s worker dead: its lock words become recoverable by waiters. Called by the worker's creator
   * (a machine's domain needs no call: reap clears the process's token in the machine's table).
   */
  ownerDied(token: number): void {
    if (token <= 0 || token >= TOKEN_UNTRACKED || this.i32[LIVENESS_SRC] === 1) return;
    const i = token & ((1 << ALIVE_INDEX_BITS) - 1);
    if (i >= this.i32[CAP_ALIVE]!) return;
    Atomics.compareExchange(this.i32, HEADER_WORDS + i, token, 0);
  }

  private isAliveLocal(token: number): boolean {
    if (token <= 0 || token >= TOKEN_UNTRACKED) return true;
    const i = token & ((1 << ALIVE_INDEX_BITS) - 1);
    if (i >= this.i32[CAP_ALIVE]!) return true;
    return Atomics.load(this.i32, HEADER_WORDS + i) === token;
  }

  private register(): number {
    const i32 = this.i32;
    const n = Math.min(i32[CAP_ALIVE]!, 1 << ALIVE_INDEX_BITS);
    for (let i = 0; i < n; i++) {
      if (Atomics.load(i32, HEADER_WORDS + i) !== 0) continue;
      let gen = (Atomics.add(i32, ALIVE_GEN, 1) + 1) & ALIVE_GEN_MASK;
      if (gen === 0) gen = 1;
      const token = (gen << ALIVE_INDEX_BITS) | i;
      if (Atomics.compareExchange(i32, HEADER_WORDS + i, 0, token) === 0) return token;
    }
    // Every entry is taken: run untracked (never presumed dead) rather than refuse to lock.
    return TOKEN_UNTRACKED | (threadId & 0xffff);
  }

  /** A new lock instance id. */
  newLockId(): number {
    return Atomics.add(this.i32, LOCK_ID, 1) + 1;
  }

  /** Reserves `n` arena bytes; returns their offset from arenaByte, or 0 when the arena is full. */
  arenaAlloc(n: number): number {
    const cap = this.i32[CAP_ARENA]!;
    for (;;) {
      const used = Atomics.load(this.i32, ARENA_USED);
      if (used + n > cap) return 0;
      if (Atomics.compareExchange(this.i32, ARENA_USED, used, used + n) === used) return used;
    }
  }

  /** Stores a string in the arena; returns [offset, length] or null when it does not fit. */
  putString(s: string): [number, number] | null {
    const bytes = enc.encode(s);
    const off = this.arenaAlloc(bytes.length);
    if (off === 0) return null;
    this.u8.set(bytes, this.arenaByte + off);
    return [off, bytes.length];
  }

  getString(off: number, len: number): string {
    return dec.decode(this.u8.slice(this.arenaByte + off, this.arenaByte + off + len));
  }

  suppressions(): Suppression[] {
    const off = Atomics.load(this.i32, SUPPR_OFF);
    if (off === 0) return [];
    return JSON.parse(this.getString(off, Atomics.load(this.i32, SUPPR_LEN))) as Suppression[];
  }

  // ---- the graph lock ---------------------------------------------------------------------------------------------

  /**
   * Takes GRAPH_LOCK. Held only for a bounded table search or update (never across a lock-word sleep), so waiters
   * spin a little, then sleep in slices. Race-free sleep: a waiter sets WAITERS with a compareExchange and sleeps
   * only while the word still holds exactly that value; unlock exchanges 0 in and notifies when WAITERS was set,
   * so no unlock slips between the waiter's store and its sleep. A holder that died (its token cleared) is
   * replaced with a compareExchange from its exact word: the tables stay consistent because every update reserves
   * its record first and links it with one store last, so a half-written record is never reachable.
   */
  graphLock(): void {
    const i32 = this.i32;
    const me = this.token;
    if (Atomics.compareExchange(i32, GRAPH_LOCK, 0, me) === 0) return;
    for (let spin = 0; spin < 200; spin++) {
      if (Atomics.load(i32, GRAPH_LOCK) === 0 && Atomics.compareExchange(i32, GRAPH_LOCK, 0, me) === 0) return;
    }
    for (;;) {
      let v = Atomics.load(i32, GRAPH_LOCK);
      if (v === 0) {
        if (Atomics.compareExchange(i32, GRAPH_LOCK, 0, me | WAITERS) === 0) return;
        continue;
      }
      if (!this.isAlive(v & TOKEN_MASK)) {
        if (Atomics.compareExchange(i32, GRAPH_LOCK, v, me | WAITERS) === v) return;
        continue;
      }
      if ((v & WAITERS) === 0) {
        if (Atomics.compareExchange(i32, GRAPH_LOCK, v, v | WAITERS) !== v) continue;
        v |= WAITERS;
      }
      Atomics.wait(i32, GRAPH_LOCK, v, SLICE_MS);
    }
  }

  graphUnlock(): void {
    if (Atomics.exchange(this.i32, GRAPH_LOCK, 0) & WAITERS) Atomics.notify(this.i32, GRAPH_LOCK, 1);
  }
}

const views = new WeakMap<SharedArrayBuffer, LockDomain>();
/** Views by DOMAIN_ID: a domain's buffer arrives as a new object with every message. */
const byId = new Map<string, WeakRef<LockDomain>>();
let created = 0;
let current: LockDomain | null = null;

/**
 * For a domain whose tokens come from the machine (LIVENESS_SRC 1): this worker's token in the machine's alive
 * table and that table (a machine process passes its RuntimeInit.owner). Default: the worker's fence runtime's,
 * else an untracked owner.
 */
export interface AttachOwner {
  readonly owner?: number;
  readonly liveness?: Liveness;
}

/** Something that can be passed to another worker and names its domain. */
export interface DomainHandle {
  readonly domain: SharedArrayBuffer;
}
