/**
 * The real-deadlock watchdog: every worker sleeping on a checked lock or a fence publishes what it waits for in
 * its wait slot of the lock domain; a watchdog scans the slots, finds cycles in the wait-for graph, reports them
 * (kind 'deadlock') and breaks each one by failing one waiter with -EDEADLK, and reports waits longer than the
 * hung-task time (kind 'hung').
 *
 * ## Wait slot (Int32 words from domain.waitBase + slot · WAIT_WORDS; every word accessed with Atomics)
 *
 * | word     | name         | meaning                                                                          |
 * |----------|--------------|----------------------------------------------------------------------------------|
 * | 0        | W_OWNER      | owner token of the worker owning the slot (claimed at attach, domain.ts)          |
 * | 1        | W_GEN        | 0 = not waiting; else this wait's number (WAIT_SEQ, unique in the domain). Stored |
 * |          |              | last when a wait begins, cleared first when it ends: the seqlock of the words    |
 * |          |              | below (a reader's snapshot is good when W_GEN read before and after agree)       |
 * | 2        | W_KIND       | WAIT_MUTEX, WAIT_WW, WAIT_SPIN or WAIT_FENCE                                      |
 * | 3        | W_OBJ        | lock instance id, or the fence slot index of the leaf blocking the wait          |
 * | 4        | W_OBJ2       | fence: that leaf's slot generation                                               |
 * | 5        | W_HOLDER     | owner token of who can end the wait: the lock's holder (from its lock word), the |
 * |          |              | fence's annotated signaller (dmaFenceSetSignaller); 0 = unknown / nobody         |
 * | 6        | W_BEAT       | +1 each time the waiter re-read what it waits on (once per sleep slice)          |
 * | 7        | W_VERDICT    | the W_GEN the watchdog condemned: that wait fails with -EDEADLK                  |
 * | 8        | W_WORKER_NO  | the worker's number ("worker N"), written at attach (domain.ts publishName)      |
 * | 9, 10    | W_NAME_LEN, W_TEXT_LEN | byte lengths of the name and text below                                |
 * | 11, 12   | W_CTX, W_SEQNO | fence: context and low 32 bits of the seqno of the fence waited on             |
 * | 13       | W_FLAGS      | FLAG_PARKED: a syscall parked in the kernel (published after one reply slice)     |
 * | 16..31   | text         | UTF-8: the lock class, or the fence's driver:timeline (≤ 64 bytes)               |
 * | 32..47   | name         | UTF-8: the worker's display name (≤ 64 bytes)                                    |
 *
 * ## Cost
 * Publication happens only on the sleeping path (a lock whose word was taken after the spin, a fence that is not
 * signaled), and only while a watchdog runs (WATCHDOG ≠ 0): the uncontended lock and unlock never touch a slot.
 *
 * ## Why the watchdog runs in the main thread (Machine) and what makes a verdict sound
 * The main thread owns every worker (it sees every exit), holds the machine's fence table with its kernel state
 * (the signaller annotations) and the lock domain, and is never part of the kernel's serving loop: a scan every
 * `periodMs` (a timer) costs the broker nothing. It must never block: a scan only loads and stores words and
 * records reports; and when the main thread itself sleeps on a lock or a fence, its own wait loop runs the scan
 * between slices (`hosted` below), so a cycle through the main thread is still found.
 *
 * A cycle seen once may be stale (a waiter had not yet re-read its lock word), so a cycle is only acted on when a
 * later scan sees the same waits (same W_GEN, same holders) and every member's W_BEAT advanced meanwhile: then
 * every member re-read its lock word (or fence) after the first sighting and still found the same holder, and that
 * holder was itself waiting the whole time — so it released nothing and signalled nothing. None of them can move:
 * a real deadlock. The victim is the member whose wait began last (highest W_GEN): the acquisition that closed
 * the cycle, deterministic when the steps are ordered. Its W_VERDICT is set; it sees it at its next slice (≤ 50 ms)
 * and fails with -EDEADLK. Cycle first seen → broken: two scans plus a slice, well within a second. The verdict
 * names the wait's number: if that wait ended meanwhile (it got its lock after all), no later wait has that number,
 * so the verdict is ignored — a condemned wait is always the one the watchdog saw.
 */
import { CAP_ALIVE, LockDomain, W_GEN, W_NAME, W_NAME_LEN, W_OWNER, W_STR_BYTES, W_WORKER_NO, WAIT_SEQ, WAIT_WORDS, WATCHDOG } from './domain.js';
import { canonicalRotation, reportRaw, type LockdepReport } from './lockdep.js';
import { validateInteger } from '../validate.js';
import { S_GEN, type FenceTable } from '../fence/table.js';

export const W_KIND = 2;
export const W_OBJ = 3;
export const W_OBJ2 = 4;
export const W_HOLDER = 5;
export const W_BEAT = 6;
export const W_VERDICT = 7;
export const W_TEXT_LEN = 10;
export const W_CTX = 11;
export const W_SEQNO = 12;
export const W_FLAGS = 13;
/** W_FLAGS: the wait is a syscall parked in the kernel (the broker holds it): it cannot be failed, only reported. */
export const FLAG_PARKED = 1;
const W_TEXT = 16;
const STR_BYTES = W_STR_BYTES;

export const WAIT_MUTEX = 1;
export const WAIT_WW = 2;
export const WAIT_SPIN = 3;
export const WAIT_FENCE = 4;
/** A process's syscall parked in the kernel waiting for fences (DMA_BUF_IOCTL_SYNC START, poll): no edge known. */
export const WAIT_SYSCALL = 5;

const enc = new TextEncoder();
const dec = new TextDecoder();

function putStr(d: LockDomain, word: number, lenWord: number, s: string): void {
  let bytes = enc.encode(s);
  if (bytes.length > STR_BYTES) bytes = bytes.subarray(0, STR_BYTES);
  d.u8.set(bytes, word * 4);
  Atomics.store(d.i32, lenWord, bytes.length);
}

function getStr(d: LockDomain, word: number, len: number): string {
  const n = Math.min(Math.max(len, 0), STR_BYTES);
  return dec.decode(d.u8.slice(word * 4, word * 4 + n));
}

/**
 * Publishes that this worker is about to sleep on `kind` object `obj` (and `obj2`), which `holder` can end; `text`
 * names it. Returns the wait's number (pass it to waitBeat / waitEnd), or 0 when nothing was published (no watchdog
 * runs, or this worker has no slot). The sleeping path only; the caller's own thread.
 */
export function waitBegin(d: LockDomain, kind: number, obj: number, obj2: number, holder: number, text: string, ctx = 0, seqno = 0, flags = 0): number {
  const i32 = d.i32;
  if (Atomics.load(i32, WATCHDOG) === 0) return 0;
  const slot = d.waitSlot;
  if (slot < 0) return 0;
  const b = d.waitBase + slot * WAIT_WORDS;
  if (Atomics.load(i32, b + W_OWNER) !== d.token) {
    d.waitSlot = -1; // taken over: we were presumed dead (an untracked owner never is); publish nothing more
    return 0;
  }
  putStr(d, b + W_TEXT, b + W_TEXT_LEN, text);
  Atomics.store(i32, b + W_KIND, kind);
  Atomics.store(i32, b + W_OBJ, obj);
  Atomics.store(i32, b + W_OBJ2, obj2);
  Atomics.store(i32, b + W_HOLDER, holder);
  Atomics.store(i32, b + W_CTX, ctx);
  Atomics.store(i32, b + W_SEQNO, seqno);
  Atomics.store(i32, b + W_FLAGS, flags);
  const gen = ((Atomics.add(i32, WAIT_SEQ, 1) + 1) & 0x7fffffff) || 1;
  // Published last: a reader that sees this number sees every word above (seq-cst store / load).
  Atomics.store(i32, b + W_GEN, gen);
  return gen;
}

/**
 * The waiter re-read what it waits on and is about to sleep again: refreshes the holder (and, for fences, the
 * blocking leaf), counts a beat, runs the hosted watchdog's scan when one lives in this thread and is due.
 * Returns true when the watchdog condemned this wait (the caller ends it with -EDEADLK).
 */
export function waitBeat(d: LockDomain, gen: number, holder: number, obj = -1, obj2 = 0): boolean {
  const i32 = d.i32;
  const b = d.waitBase + d.waitSlot * WAIT_WORDS;
  if (obj >= 0) {
    Atomics.store(i32, b + W_OBJ, obj);
    Atomics.store(i32, b + W_OBJ2, obj2);
  }
  Atomics.store(i32, b + W_HOLDER, holder);
  Atomics.add(i32, b + W_BEAT, 1);
  if (hosted !== null) hosted.poll();
  return Atomics.load(i32, b + W_VERDICT) === gen;
}

/** The wait ended (any way): clears the publication. */
export function waitEnd(d: LockDomain, gen: number): void {
  if (d.waitSlot < 0) return;
  Atomics.compareExchange(d.i32, d.waitBase + d.waitSlot * WAIT_WORDS + W_GEN, gen, 0);
}

// ---- the watchdog ------------------------------------------------------------------------------------------------

/**
 * What the watchdog asks the fence table's kernel state about a fence slot (index, gen) a waiter published — for
 * waiters that could not read it themselves (plain processes attach the table wait-only). The Machine passes one.
 */
export interface FenceLookup {
  /** The annotated signaller's owner token (0: none, or the slot no longer holds that fence). */
  signaller(index: number, gen: number): number;
  /** "driver:timeline" of the fence, or null when the slot no longer holds it. */
  name(index: number, gen: number): string | null;
}

/** One published wait (LockWatchdog.waits()). */
export interface PublishedWait {
  readonly worker: string;
  readonly kind: 'lock' | 'fence';
  readonly object: string;
  /** Who can end it (the lock's holder, the fence's annotated signaller), null when unknown. */
  readonly holder: string | null;
}

export interface WatchdogOptions {
  /**
   * A wait longer than this without a cycle is reported as 'hung' (the kernel's hung_task_timeout_secs, in ms).
   * 0 disables the report. Default 10000.
   */
  readonly hungTaskTimeoutMs?: number;
  /** Time between scans (default 100 ms, 10..1000). */
  readonly periodMs?: number;
  /** The fence table's kernel state, for waiters that could not read a fence's annotation themselves. */
  readonly fences?: FenceLookup;
}

/** One published wait, as a scan read it. */
interface Waiter {
  readonly slot: number;
  readonly token: number;
  readonly gen: number;
  readonly kind: number;
  readonly obj: number;
  readonly holder: number;
  readonly beat: number;
  readonly text: string;
  readonly name: string;
  readonly workerNo: number;
  readonly ctx: number;
  readonly seqno: number;
  readonly flags: number;
}

interface Candidate {
  /** slot → beat at first sighting. */
  readonly beats: Map<number, number>;
}

/** The watchdog hosted by this thread: its waits run its scans (see the file comment). */
let hosted: LockWatchdog | null = null;

export const DEFAULT_HUNG_TASK_TIMEOUT_MS = 10_000;

/**
 * A watchdog over one lock domain. start() marks the domain watched (waiters publish from then on) and scans every
 * `periodMs` on a timer that does not keep the thread alive; stop() undoes both. scan() may also be called by hand
 * (tests). Any event-loop thread may host one; a Machine hosts one in the main thread.
 */
export class LockWatchdog {
  readonly hungTaskTimeoutMs: number;
  readonly periodMs: number;
  private readonly fences: FenceLookup | null;
  private timer: ReturnType<typeof setInterval> | null = null;
  private lastScan = -Infinity;
  private scanning = false;
  /** Cycles seen once, waiting for confirmation: signature → beats. */
  private candidates = new Map<string, Candidate>();
  /** "slot:gen" → when this watchdog first saw the wait (performance.now()). */
  private firstSeen = new Map<string, number>();
  /** Waits already reported hung, or condemned ("slot:gen"). */
  private readonly done = new Set<string>();
  /** Deadlocks broken so far (every occurrence, not only the first of a key). */
  broken = 0;
  /**
   * The longest wait in no cycle this watchdog has seen (ms, as of its last scan that saw it) and what it was:
   * what a hungTaskTimeoutMs must stay above for a workload whose waits are all legitimate.
   */
  longestWait: { readonly ms: number; readonly what: string } = { ms: 0, what: '' };

  constructor(
    readonly domain: LockDomain,
    opts: WatchdogOptions = {},
  ) {
    this.hungTaskTimeoutMs = opts.hungTaskTimeoutMs === undefined ? DEFAULT_HUNG_TASK_TIMEOUT_MS : validateInteger(opts.hungTaskTimeoutMs, 'hungTaskTimeoutMs', 0, 2 ** 31 - 1);
    this.periodMs = opts.periodMs === undefined ? 100 : validateInteger(opts.periodMs, 'periodMs', 10, 1000);
    this.fences = opts.fences ?? null;
  }

  get running(): boolean {
    return this.timer !== null;
  }

  /** Starts watching: waiters of the domain publish, a timer scans. Idempotent. */
  start(): this {
    if (this.timer !== null) return this;
    Atomics.add(this.domain.i32, WATCHDOG, 1);
    this.timer = setInterval(() => this.poll(), this.periodMs);
    this.timer.unref();
    if (hosted === null) hosted = this;
    return this;
  }

  /** Stops watching (waiters stop publishing once no watchdog is left on the domain). Idempotent. */
  stop(): void {
    if (this.timer === null) return;
    clearInterval(this.timer);
    this.timer = null;
    Atomics.sub(this.domain.i32, WATCHDOG, 1);
    if (hosted === this) hosted = null;
  }

  /** Scans when one is due (from the timer, or from a wait of this thread). */
  poll(): void {
    if (this.scanning || performance.now() - this.lastScan < this.periodMs * 0.9) return;
    this.scan();
  }

  /**
   * One pass: reads every published wait, acts on confirmed cycles (report + -EDEADLK for the victim), reports
   * waits past the hung-task time. Returns the reports recorded by this pass (repeats of a known key are counted by
   * the domain, not returned). Loads and stores only; never sleeps.
   */
  scan(): LockdepReport[] {
    if (this.scanning) return [];
    this.scanning = true;
    try {
      return this.scanOnce(performance.now());
    } finally {
      this.lastScan = performance.now();
      this.scanning = false;
    }
  }

  /** Every published wait now, as a list (diagnostics, tests): who waits, on what, for whom. */
  waits(): PublishedWait[] {
    const { names, waiters } = this.read();
    const out: PublishedWait[] = [];
    for (const w of waiters.values()) {
      out.push({ worker: names.get(w.token) ?? label(w.workerNo, w.name, w.token), kind: w.kind === WAIT_FENCE ? 'fence' : 'lock', object: shortObj(w), holder: w.holder === 0 ? null : (names.get(w.holder) ?? tokenText(w.holder)) });
    }
    return out;
  }

  /** Reads every wait slot: worker labels by token, and the published waits by token (seqlock-checked). */
  private read(): { names: Map<number, string>; waiters: Map<number, Waiter> } {
    const d = this.domain;
    const i32 = d.i32;
    const names = new Map<number, string>();
    const waiters = new Map<number, Waiter>();
    const n = i32[CAP_ALIVE]!;
    for (let slot = 0; slot < n; slot++) {
      const b = d.waitBase + slot * WAIT_WORDS;
      const token = Atomics.load(i32, b + W_OWNER);
      // A worker killed mid-wait leaves its publication until its reap frees the slot (domain.releaseWaitSlot):
      // it waits for nothing any more.
      if (token === 0 || !d.isAlive(token)) continue;
      const nameLen = Atomics.load(i32, b + W_NAME_LEN);
      const workerNo = Atomics.load(i32, b + W_WORKER_NO);
      const name = nameLen > 0 ? getStr(d, b + W_NAME, nameLen) : '';
      names.set(token, label(workerNo, name, token));
      const gen = Atomics.load(i32, b + W_GEN);
      if (gen === 0) continue;
      const kind = Atomics.load(i32, b + W_KIND);
      const obj = Atomics.load(i32, b + W_OBJ);
      const obj2 = Atomics.load(i32, b + W_OBJ2);
      let holder = Atomics.load(i32, b + W_HOLDER);
      const beat = Atomics.load(i32, b + W_BEAT);
      let text = getStr(d, b + W_TEXT, Atomics.load(i32, b + W_TEXT_LEN));
      const ctx = Atomics.load(i32, b + W_CTX);
      const seqno = Atomics.load(i32, b + W_SEQNO);
      const flags = Atomics.load(i32, b + W_FLAGS);
      // Seqlock: the snapshot is good only if the wait is still the same one.
      if (Atomics.load(i32, b + W_GEN) !== gen) continue;
      if (kind === WAIT_FENCE && obj >= 0 && this.fences !== null) {
        if (holder === 0) holder = this.fences.signaller(obj, obj2);
        if (text.startsWith('?')) text = this.fences.name(obj, obj2) ?? text;
      }
      waiters.set(token, { slot, token, gen, kind, obj, holder, beat, text, name, workerNo, ctx, seqno, flags });
    }
    return { names, waiters };
  }

  private scanOnce(now: number): LockdepReport[] {
    const out: LockdepReport[] = [];
    const { names, waiters } = this.read();
    // Forget what is no longer waiting.
    const live = new Set<string>();
    for (const w of waiters.values()) {
      const k = `${w.slot}:${w.gen}`;
      live.add(k);
      if (!this.firstSeen.has(k)) this.firstSeen.set(k, now);
    }
    for (const k of this.firstSeen.keys()) if (!live.has(k)) this.firstSeen.delete(k);
    for (const k of this.done) if (!live.has(k)) this.done.delete(k);

    // Cycles: every waiter has at most one out-edge (to its holder), so a walk from each finds any cycle.
    const state = new Map<number, number>(); // token → 1 on the current walk, 2 finished
    const inCycle = new Set<number>();
    const seenCycles = new Set<string>();
    for (const start of waiters.values()) {
      if (state.has(start.token)) continue;
      const path: Waiter[] = [];
      let cur: Waiter | undefined = start;
      while (cur !== undefined && !state.has(cur.token)) {
        state.set(cur.token, 1);
        path.push(cur);
        cur = cur.holder !== 0 && cur.holder !== cur.token ? waiters.get(cur.holder) : undefined;
      }
      if (cur !== undefined && state.get(cur.token) === 1) {
        const cycle = path.slice(path.indexOf(cur));
        for (const w of cycle) inCycle.add(w.token);
        const sig = cycle
          .map((w) => `${w.slot}:${w.gen}:${w.holder}`)
          .sort()
          .join(',');
        seenCycles.add(sig);
        const cand = this.candidates.get(sig);
        if (cand === undefined) {
          this.candidates.set(sig, { beats: new Map(cycle.map((w) => [w.slot, w.beat])) });
        } else if (cycle.every((w) => w.beat > (cand.beats.get(w.slot) ?? Infinity))) {
          this.candidates.delete(sig);
          const r = this.breakCycle(cycle, names);
          if (r) out.push(r);
        }
      }
      for (const w of path) state.set(w.token, 2);
    }
    for (const sig of this.candidates.keys()) if (!seenCycles.has(sig)) this.candidates.delete(sig);

    for (const w of waiters.values()) {
      const age = now - this.firstSeen.get(`${w.slot}:${w.gen}`)!;
      if (age > this.longestWait.ms && !inCycle.has(w.token)) this.longestWait = { ms: Math.round(age), what: `${names.get(w.token) ?? w.name} on ${shortObj(w)}` };
    }
    // Hung tasks: waits older than the hung-task time that are in no cycle, each reported once.
    const hungMs = this.hungTaskTimeoutMs;
    if (hungMs > 0) {
      for (const w of waiters.values()) {
        const k = `${w.slot}:${w.gen}`;
        if (inCycle.has(w.token) || this.done.has(k)) continue;
        const since = this.firstSeen.get(k)!;
        if (now - since < hungMs) continue;
        this.done.add(k);
        const r = this.hungReport(w, names, waiters, Math.round(now - since));
        if (r) out.push(r);
      }
    }
    return out;
  }

  /**
   * Condemns the victim of a confirmed cycle — the member whose wait began last, among those that can be failed (a
   * syscall parked in the kernel cannot) — and records the report. A cycle of parked syscalls only is reported.
   */
  private breakCycle(cycle: Waiter[], names: Map<number, string>): LockdepReport | null {
    const d = this.domain;
    let victim: Waiter | null = null;
    for (const w of cycle) if ((w.flags & FLAG_PARKED) === 0 && (victim === null || w.gen > victim.gen)) victim = w;
    for (const w of cycle) this.done.add(`${w.slot}:${w.gen}`);
    if (victim !== null) {
      Atomics.store(d.i32, d.waitBase + victim.slot * WAIT_WORDS + W_VERDICT, victim.gen);
      this.broken++;
    }
    // Order the cycle from the victim: victim waits for X held by A, A waits for Y held by B, ...
    const vi = victim === null ? 0 : cycle.indexOf(victim);
    const ordered = cycle.slice(vi).concat(cycle.slice(0, vi));
    const who = (w: Waiter): string => names.get(w.token) ?? label(w.workerNo, w.name, w.token);
    const lines = [
      '============================================',
      'WARNING: deadlock detected (wait-for cycle)',
      '--------------------------------------------',
      `${ordered.length} workers are blocked on each other and none of them can go on:`,
      '',
    ];
    for (const w of ordered) {
      lines.push(`${who(w)} is blocked on:`, ` ${objText(w)}, ${holderVerb(w)} ${names.get(w.holder) ?? tokenText(w.holder)}`);
    }
    lines.push('', ' Deadlock scenario:', '');
    // lockdep's two-column layout (WORKER1 at column 31), one more column of 29 per further worker.
    const col = (i: number): number => 2 + 29 * i;
    const row = (cells: string[]): string => cells.reduce((acc, c, i) => acc.padEnd(col(i)) + c, '').trimEnd();
    lines.push(row(ordered.map((_, i) => `${i === 0 ? '     ' : ''}WORKER${i}`)), row(ordered.map((_, i) => `${i === 0 ? '     ' : ''}-------`)));
    // Worker i holds (or will signal) what worker i−1 waits for, and waits for what worker i+1 holds; one line per
    // step, as lockdep prints its scenario.
    ordered.forEach((_, i) => {
      const prev = ordered[(i + ordered.length - 1) % ordered.length]!;
      lines.push(row(ordered.map((__, j) => (j === i ? `${prev.kind === WAIT_FENCE ? 'will signal' : 'holds'}(${shortObj(prev)});` : ''))));
    });
    ordered.forEach((w, i) => lines.push(row(ordered.map((__, j) => (j === i ? `${w.kind === WAIT_FENCE ? 'wait' : 'lock'}(${shortObj(w)});` : '')))));
    lines.push(
      '',
      ' *** DEADLOCK ***',
      '',
      ...(victim !== null
        ? [`breaking it: ${who(victim)}'s wait on ${shortObj(victim)} fails with -EDEADLK`, '(the victim is the member whose wait began last: the acquisition that closed the cycle)']
        : ['not broken: every member is a syscall parked in the kernel, which the watchdog cannot fail']),
    );
    const objs = ordered.map((w) => keyObj(w));
    const r: LockdepReport = {
      kind: 'deadlock',
      key: `deadlock:${canonicalRotation(objs)}`,
      locks: ordered.map((w) => shortObj(w)),
      workers: ordered.map((w) => who(w)),
      text: lines.join('\n'),
    };
    return reportRaw(d, r);
  }

  private hungReport(w: Waiter, names: Map<number, string>, waiters: Map<number, Waiter>, ms: number): LockdepReport | null {
    const who = names.get(w.token) ?? label(w.workerNo, w.name, w.token);
    const holder = w.holder;
    const hw = holder !== 0 ? waiters.get(holder) : undefined;
    const holderText =
      w.kind === WAIT_SYSCALL && holder === 0
        ? 'whose fences are in the kernel (dma_buf/bufinfo and sync/info list them, and who created them)'
        : holder === 0
        ? w.kind === WAIT_FENCE
          ? 'signaller unknown (annotate it: dmaFenceSetSignaller)'
          : 'held by nobody now (released as the watchdog looked)'
        : `${holderVerb(w)} ${names.get(holder) ?? tokenText(holder)}${hw ? `, itself blocked on ${objText(hw)}` : ', which is not blocked on anything the watchdog sees'}`;
    const text = [
      `INFO: task ${who} blocked for more than ${ms} ms.`,
      `      waiting for ${objText(w)},`,
      `      ${holderText}.`,
      `"hungTaskTimeoutMs: 0" disables this message.`,
    ].join('\n');
    return reportRaw(this.domain, {
      kind: 'hung',
      key: `hung:${w.name || who}:${keyObj(w)}`,
      locks: [shortObj(w)],
      workers: holder !== 0 ? [who, names.get(holder) ?? tokenText(holder)] : [who],
      text,
    });
  }
}

function label(workerNo: number, name: string, token: number): string {
  if (workerNo === 0 && name === '') return tokenText(token);
  const base = `worker ${workerNo}`;
  return name === '' || name === base ? base : `${base} (${name})`;
}

function tokenText(token: number): string {
  return `owner token 0x${token.toString(16)}`;
}

function holderVerb(w: Waiter): string {
  return w.kind === WAIT_FENCE ? 'signalled by' : 'held by';
}

function shortObj(w: Waiter): string {
  return w.kind === WAIT_FENCE ? `fence ${w.text} ${w.ctx >>> 0}:${w.seqno >>> 0}` : w.text;
}

function keyObj(w: Waiter): string {
  return w.kind === WAIT_FENCE ? `fence ${w.text}` : w.text;
}

function objText(w: Waiter): string {
  switch (w.kind) {
    case WAIT_SYSCALL:
      return `(${w.text}), a syscall parked in the kernel waiting for fences`;
    case WAIT_FENCE:
      return `(dma_fence ${w.text} context ${w.ctx >>> 0} seqno ${w.seqno >>> 0})`;
    case WAIT_WW:
      return `(${w.text}){+.+.}, ww_mutex #${w.obj}`;
    case WAIT_SPIN:
      return `(${w.text}){-.-.}, spinlock #${w.obj}`;
    default:
      return `(${w.text}){+.+.}, mutex #${w.obj}`;
  }
}

/**
 * The FenceLookup of a fence table view that has the kernel state (the Machine's main thread). Slot indices come
 * from the lock domain, which processes can write: anything outside the table, or a slot that no longer holds
 * that generation, answers "unknown".
 */
export function fenceTableLookup(table: FenceTable): FenceLookup {
  const live = (index: number, gen: number): boolean =>
    Number.isInteger(index) && index >= 0 && index < table.nslots && Atomics.load(table.i32, table.base(index) + S_GEN) === gen;
  return {
    signaller: (index, gen) => (live(index, gen) ? table.slotSignaller(index) : 0),
    name: (index, gen) => {
      if (!live(index, gen)) return null;
      const [drv, tl] = table.names(table.slotNameId(index));
      return `${drv}:${tl}`;
    },
  };
}
