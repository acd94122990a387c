/**
 * The lock validator (the kernel's lockdep, Documentation/locking/lockdep-design.rst) for worker threads: lock
 * classes with subclasses, a held-lock stack and chain key per worker, a per-worker chain cache, one dependency
 * graph in the lock domain's shared tables (domain.ts), and reports in lockdep's text layout with workers in place
 * of CPUs, plus structured objects.
 *
 * ## What runs where
 * Every function here runs in the acquiring worker, synchronously, before the lock word is touched — so a cycle
 * is reported before the acquirer can block on it, and steps ordered by barriers give the same verdict in every
 * run. The fast path (a chain this worker validated before) reads one shared word (ENABLED) and a local Set; only
 * an unseen chain takes GRAPH_LOCK, searches and extends the shared graph.
 *
 * ## The rules, as mainline has them
 * - Nodes are (class, subclass); an edge prev → next means "next was taken while prev was held, once, by anyone".
 * - Edges come from the nearest held non-trylock lock and every trylock above it; a trylock is never validated
 *   and never becomes an edge target (validate_chain skips it).
 * - AA ("possible recursive locking") unless next is a recursive read over a read, or the acquisition names a nest
 *   lock that sits *below* the earlier same-class lock in the held stack (check_deadlock). A nest-locked
 *   acquisition of the class on top of the stack merges into it (hlock->references).
 * - Read modes: 0 write, 1 read, 2 recursive read. Edges carry lockdep's dependency bits (-(SR)-, -(ER)-,
 *   -(SN)-, -(EN)-) and the search follows only strong paths (no -(*R)-> followed by -(S*)->).
 * - Each distinct report (dedup key: kind + the cycle's canonical rotation) is recorded once per domain; the
 *   detector stays on (mainline turns itself off after the first report). Running out of table space records
 *   one loud report and switches the detector off for the whole domain.
 */
import { printLine } from '../bug.js';
import { DOMAIN_ID0, DOMAIN_ID1, EXPECT_LEN, EXPECT_OFF, N_EXPECTED, LockDomain, E_DEPS, E_FROM, E_NEXT, E_TEXT_LEN, E_TEXT_OFF, E_TO, E_WORKER, EDGE_WORDS, CAP_CLASSES, CAP_EDGES, CAP_REPORTS, ENABLED, MAX_SUBCLASSES, N_CLASSES, N_EDGES, N_REPORTS, N_SUPPRESSED, OFF, REPORT_WORDS, type Suppression } from './domain.js';

/** How an acquisition may wait: a sleeping lock, a spinning one (atomic context while held), or a pseudo-lock. */
export type WaitType = 'sleep' | 'spin' | 'map';

/**
 * A lock class: every lock that is logically the same (all buffers' reservation locks). A class is its name; two
 * LockClass objects with one name are the same class in every worker. Subclasses 0..7 are separate nodes.
 */
export class LockClass {
  constructor(
    readonly name: string,
    readonly waitType: WaitType = 'sleep',
  ) {
    if (typeof name !== 'string' || name.length === 0) {
      throw Object.assign(new TypeError('The "name" argument must be a non-empty string'), { code: 'ERR_INVALID_ARG_TYPE' });
    }
  }
}

/** What the validator tracks: a lock instance (id unique in its domain) of a class. Mutexes are maps. */
export interface LockdepMap {
  readonly id: number;
  readonly lockClass: LockClass;
  readonly domain: LockDomain;
  /** The class's index in `domain`, cached by the validator (-1 or absent until first use). */
  classCache?: number;
}

/** A plain annotation map (the kernel's struct lockdep_map without a lock): dma_fence_map, fs_reclaim. */
export class LockMap implements LockdepMap {
  readonly id: number;
  readonly lockClass: LockClass;
  classCache = -1;
  constructor(
    readonly domain: LockDomain,
    cls: LockClass | string,
    id?: number,
  ) {
    this.lockClass = typeof cls === 'string' ? new LockClass(cls, 'map') : cls;
    this.id = id ?? domain.newLockId();
  }
}

export type ReportKind = 'circular' | 'recursive' | 'api' | 'deadlock' | 'hung' | 'wait-context';

/** A report, as stored in the domain and returned by lockdepReports(). */
export interface LockdepReport {
  readonly kind: ReportKind;
  /** Dedup key: the kind and, for a cycle, its canonical rotation. */
  readonly key: string;
  /** Lock classes involved (for a cycle: in dependency order starting at the lock being acquired). */
  readonly locks: readonly string[];
  /** Workers involved ("worker N (name)"): the reporter first, then those who recorded the edges. */
  readonly workers: readonly string[];
  readonly text: string;
  /** True when an expectation (expectLockdepReports) matched it: stored, not printed by the default sink. */
  readonly expected?: boolean;
}

/** Thrown in the acquirer (before it blocks) when the domain's mode is 'throw'. */
export class LockdepError extends Error {
  readonly code = 'ELOCKDEP';
  constructor(readonly report: LockdepReport) {
    super(`lockdep: ${report.kind} (${report.key})`);
    this.name = 'LockdepError';
  }
}

// ---- per-worker state ----------------------------------------------------------------------------------------------

interface HeldLock {
  map: LockdepMap;
  node: number;
  read: number;
  trylock: boolean;
  nest: LockdepMap | null;
  refs: number;
  k1: number;
  k2: number;
  site: string | null;
}

interface WorkerState {
  held: HeldLock[];
  depth: number;
  /** Chains this worker validated (chainLookupAdd): a hit costs no shared traffic. */
  chainTab: Int32Array;
  chainCount: number;
  /** Class name → class index in the domain. */
  classIdx: Map<string, number>;
  className: string[];
  /** Report keys already recorded (by anyone) as this worker learned. */
  seen: Map<string, LockdepReport | null>;
  /** Throw mode: chains whose validation threw; validated again on every attempt so each one throws. */
  bad: Set<string> | null;
  suppress: Suppression[];
  /** Spin locks held plus atomic sections entered (fence callbacks). */
  atomic: number;
  visit: Int32Array;
  visitGen: number;
  /** True while this worker holds GRAPH_LOCK (reports made during validation store without re-taking it). */
  graphHeld: boolean;
}

/** Runs `fn` under GRAPH_LOCK (re-entrant for this worker). */
function underGraphLock<T>(d: LockDomain, s: WorkerState, fn: () => T): T {
  if (s.graphHeld) return fn();
  d.graphLock();
  s.graphHeld = true;
  try {
    return fn();
  } finally {
    s.graphHeld = false;
    d.graphUnlock();
  }
}

function state(d: LockDomain): WorkerState {
  let s = d.validatorState as WorkerState | null;
  if (!s) {
    s = { held: [], depth: 0, chainTab: new Int32Array(2 * 256), chainCount: 0, classIdx: new Map(), className: [], seen: new Map(), bad: null, suppress: d.suppressions(), atomic: 0, visit: new Int32Array(0), visitGen: 0, graphHeld: false };
    d.validatorState = s;
  }
  return s;
}

export type ReportSink = (r: LockdepReport) => void;
/** The default: every report no expectation matched, on stderr (at once: a worker may be terminated next). */
const stderrSink: ReportSink = (r) => {
  if (!r.expected) printLine(r.text);
};
let sink: ReportSink = stderrSink;

/**
 * Where this worker prints new reports (null: stderr, except expected ones). Reports are stored in the domain
 * either way; a custom sink sees expected ones too (`r.expected`).
 */
export function setLockdepSink(next: ReportSink | null): void {
  sink = next ?? stderrSink;
}

// ---- expected reports ------------------------------------------------------------------------------------------------

/** Which reports a test provokes on purpose: every given field must match. */
export interface ReportPattern {
  readonly kind?: ReportKind | readonly ReportKind[];
  /** Tested against the report's dedup key. */
  readonly key?: RegExp;
}

interface StoredPattern {
  readonly kinds: string[] | null;
  readonly key: [string, string] | null;
}

/** An open expectation (beginExpectLockdepReports), closed by endExpectLockdepReports. */
export interface ReportExpectation {
  readonly domain: LockDomain;
  readonly label: string;
  readonly pattern: ReportPattern;
  /** N_REPORTS when it began: the reports it can have matched are those recorded after. */
  readonly from: number;
  readonly prev: [number, number];
  ended: boolean;
}

/**
 * Opens a window in which reports of `d` matching `pattern` are expected — in every worker of the domain, since
 * the pattern lives in the domain's arena: they are stored marked `expected` and the default sinks do not print
 * them. Close it with endExpectLockdepReports (windows nest; the innermost is the one in force). Each window costs
 * its pattern's bytes of the domain's arena.
 */
export function beginExpectLockdepReports(d: LockDomain, pattern: ReportPattern, label: string): ReportExpectation {
  const kinds = pattern.kind === undefined ? null : typeof pattern.kind === 'string' ? [pattern.kind] : [...pattern.kind];
  const stored: StoredPattern = { kinds, key: pattern.key ? [pattern.key.source, pattern.key.flags] : null };
  const str = d.putString(JSON.stringify(stored));
  if (!str) throw new RangeError('lock domain arena full: cannot store an expected-report pattern');
  const prev: [number, number] = [Atomics.load(d.i32, EXPECT_OFF), Atomics.load(d.i32, EXPECT_LEN)];
  Atomics.store(d.i32, EXPECT_LEN, str[1]);
  Atomics.store(d.i32, EXPECT_OFF, str[0]);
  return { domain: d, label, pattern, from: Atomics.load(d.i32, N_REPORTS), prev, ended: false };
}

/**
 * Closes `exp` (idempotent): returns the expected reports recorded since it opened and, when there were any, prints
 * one line "lockdep: N expected reports in <label>, not printed" (as expectWarnings does for WARNs).
 */
export function endExpectLockdepReports(exp: ReportExpectation): LockdepReport[] {
  const d = exp.domain;
  const got = lockdepReports(d)
    .slice(exp.from)
    .filter((r) => r.expected === true);
  if (exp.ended) return got;
  exp.ended = true;
  Atomics.store(d.i32, EXPECT_OFF, 0);
  Atomics.store(d.i32, EXPECT_LEN, exp.prev[1]);
  Atomics.store(d.i32, EXPECT_OFF, exp.prev[0]);
  const n = got.length;
  if (n > 0 && sink === stderrSink) {
    const kinds = [...new Set(got.map((r) => r.kind))].join(', ');
    printLine(`dmabuf-sim: lockdep: ${n} expected report${n === 1 ? '' : 's'} (${kinds}) in ${exp.label}, not printed`);
  }
  return got;
}

/**
 * Runs `fn` (sync or async) with reports matching `pattern` expected (see beginExpectLockdepReports); returns its
 * result and the expected reports. Reports that do not match print loudly as usual.
 */
export async function expectLockdepReports<R>(d: LockDomain, pattern: ReportPattern, label: string, fn: () => R | Promise<R>): Promise<{ result: R; reports: LockdepReport[] }> {
  const exp = beginExpectLockdepReports(d, pattern, label);
  let result: R;
  try {
    result = await fn();
  } finally {
    endExpectLockdepReports(exp);
  }
  return { result, reports: endExpectLockdepReports(exp) };
}

/** Parsed patterns by arena offset (per worker: the arena is append-only, so an offset's text never changes). */
const patternCache = new Map<string, { kinds: string[] | null; key: RegExp | null }>();

/** Whether the expectation in force in `d` (if any) matches `r`. */
function isExpected(d: LockDomain, r: LockdepReport): boolean {
  const off = Atomics.load(d.i32, EXPECT_OFF);
  if (off === 0) return false;
  const len = Atomics.load(d.i32, EXPECT_LEN);
  const ck = `${d.i32[DOMAIN_ID0]}.${d.i32[DOMAIN_ID1]}:${off}:${len}`;
  let p = patternCache.get(ck);
  if (!p) {
    try {
      const sp = JSON.parse(d.getString(off, len)) as StoredPattern;
      p = { kinds: sp.kinds, key: sp.key ? new RegExp(sp.key[0], sp.key[1]) : null };
    } catch {
      return false; // torn by a concurrent end/begin: not expected
    }
    patternCache.set(ck, p);
  }
  return (p.kinds === null || p.kinds.includes(r.kind)) && (p.key === null || p.key.test(r.key));
}

// ---- classes --------------------------------------------------------------------------------------------------------

/** The class index of `name` in `d`, registering it (under GRAPH_LOCK) the first time any worker uses it. */
function classIndex(d: LockDomain, s: WorkerState, name: string): number {
  const hit = s.classIdx.get(name);
  if (hit !== undefined) return hit;
  const i32 = d.i32;
  return underGraphLock(d, s, () => {
    const n = Atomics.load(i32, N_CLASSES);
    for (let i = 0; i < n; i++) {
      const base = d.classBase + 2 * i;
      if (d.getString(i32[base]!, i32[base + 1]!) === name) return remember(s, name, i);
    }
    if (n >= i32[CAP_CLASSES]! - 1) return limitHit(d, s, 'MAX_LOCKDEP_KEYS', name);
    const str = d.putString(name);
    if (!str) return limitHit(d, s, 'the name arena', name);
    i32[d.classBase + 2 * n] = str[0];
    i32[d.classBase + 2 * n + 1] = str[1];
    Atomics.store(i32, N_CLASSES, n + 1);
    return remember(s, name, n);
  });
}

function remember(s: WorkerState, name: string, i: number): number {
  s.classIdx.set(name, i);
  s.className[i] = name;
  return i;
}

function nodeName(s: WorkerState, node: number): string {
  const sub = node % MAX_SUBCLASSES;
  const name = s.className[(node - sub) / MAX_SUBCLASSES] ?? `class#${(node - sub) / MAX_SUBCLASSES}`;
  return sub ? `${name}/${sub}` : name;
}

function loadClassNames(d: LockDomain, s: WorkerState): void {
  const n = Atomics.load(d.i32, N_CLASSES);
  for (let i = s.className.length; i < n; i++) {
    if (s.className[i] !== undefined) continue;
    const base = d.classBase + 2 * i;
    remember(s, d.getString(d.i32[base]!, d.i32[base + 1]!), i);
  }
  for (let i = 0; i < n; i++) {
    if (s.className[i] === undefined) {
      const base = d.classBase + 2 * i;
      remember(s, d.getString(d.i32[base]!, d.i32[base + 1]!), i);
    }
  }
}

// ---- chain keys ------------------------------------------------------------------------------------------------------

const K1_INIT = 0x2545f491;
const K2_INIT = 0x6a09e667;

function mix1(k: number, id: number): number {
  let h = Math.imul(k ^ id, 0x9e3779b1);
  h ^= h >>> 15;
  return Math.imul(h, 0x85ebca77);
}
function mix2(k: number, id: number): number {
  let h = Math.imul((k + id) | 0, 0xc2b2ae3d);
  h ^= h >>> 13;
  return Math.imul(h ^ 0x27d4eb2f, 0x165667b1);
}
/**
 * The chain cache: an open-addressing table of (k1, k2) pairs in an Int32Array — integer compares only, no heap
 * numbers on the hot path. Returns true when the chain was there; adds it otherwise. (0, 0) marks a free slot,
 * so a key whose halves are both 0 is stored as (0, 1) — a collision lockdep's 64-bit key also tolerates.
 */
function chainLookupAdd(s: WorkerState, k1: number, k2: number): boolean {
  if (k1 === 0 && k2 === 0) k2 = 1;
  let tab = s.chainTab;
  let mask = (tab.length >> 1) - 1;
  for (let i = k1 & mask; ; i = (i + 1) & mask) {
    const a = tab[2 * i]!;
    const b = tab[2 * i + 1]!;
    if (a === k1 && b === k2) return true;
    if (a === 0 && b === 0) break;
  }
  if (++s.chainCount * 2 > tab.length >> 1) {
    const old = tab;
    tab = s.chainTab = new Int32Array(old.length * 2);
    mask = (tab.length >> 1) - 1;
    for (let j = 0; j < old.length; j += 2) {
      const a = old[j]!;
      const b = old[j + 1]!;
      if (a === 0 && b === 0) continue;
      let i = a & mask;
      while (tab[2 * i] !== 0 || tab[2 * i + 1] !== 0) i = (i + 1) & mask;
      tab[2 * i] = a;
      tab[2 * i + 1] = b;
    }
  }
  let i = k1 & mask;
  while (tab[2 * i] !== 0 || tab[2 * i + 1] !== 0) i = (i + 1) & mask;
  tab[2 * i] = k1;
  tab[2 * i + 1] = k2;
  return false;
}

// ---- acquire / release -------------------------------------------------------------------------------------------

/**
 * lock_acquire: records that this worker takes `map` (subclass `sub`, `read` 0/1/2, `trylock`, optional nest
 * lock) and validates the new chain unless this worker validated it before. Call it before blocking on the lock.
 * Returns false when a report was made (and the domain says continue), true otherwise; throws LockdepError in
 * throw mode — then nothing was recorded as held. A no-op while the domain's validator is off.
 */
export function lockAcquire(map: LockdepMap, sub = 0, trylock = false, read = 0, nest: LockdepMap | null = null): boolean {
  if (Atomics.load(map.domain.i32, ENABLED) !== 1) return true;
  return acquireOn(map, sub, trylock, read, nest);
}

/** lockAcquire without the ENABLED check (the caller made it). */
export function acquireOn(map: LockdepMap, sub: number, trylock: boolean, read: number, nest: LockdepMap | null): boolean {
  const d = map.domain;
  const s = (d.validatorState as WorkerState | null) ?? state(d);
  let cls = map.classCache ?? -1;
  if (cls < 0) cls = map.classCache = classIndex(d, s, map.lockClass.name);
  const node = cls * MAX_SUBCLASSES + sub;
  const depth = s.depth;
  const top = depth > 0 ? s.held[depth - 1]! : null;
  let ok = true;
  if (nest !== null) {
    if (!isHeldIn(s, nest)) {
      ok = apiReport(d, s, 'nest-not-held', [map.lockClass.name, nest.lockClass.name], nestNotHeldText(d, s, map, nest));
    } else if (top !== null && top.node === node) {
      // Same class on top of the stack under its nest lock: one held entry with references (lockdep does this).
      top.refs = top.refs ? top.refs + 1 : 2;
      return ok;
    }
  }
  if (map.lockClass.waitType === 'sleep' && !trylock && s.atomic > 0) {
    ok = waitContextReport(d, s, map, sub) && ok;
  }
  const id = ((node * 3 + read) << 1) | (trylock ? 1 : 0);
  const p1 = top ? top.k1 : K1_INIT;
  const p2 = top ? top.k2 : K2_INIT;
  const k1 = mix1(p1, id);
  const k2 = mix2(p2, id);
  let site: string | null = null;
  if (!trylock) {
    const hit = chainLookupAdd(s, k1, k2);
    if (!hit || (s.bad !== null && s.bad.has(`${k1}:${k2}`))) {
      site = callerSite();
      const verdict = validate(d, s, node, read, nest, site);
      if (verdict) {
        ok = false;
        if (verdict !== true && d.throwOnReport) {
          (s.bad ??= new Set()).add(`${k1}:${k2}`);
          throw new LockdepError(verdict);
        }
      }
    }
  }
  push(s, map, node, read, trylock, nest, k1, k2, site);
  if (map.lockClass.waitType === 'spin') s.atomic++;
  return ok;
}

function push(s: WorkerState, map: LockdepMap, node: number, read: number, trylock: boolean, nest: LockdepMap | null, k1: number, k2: number, site: string | null): void {
  let h = s.held[s.depth];
  if (!h) {
    h = { map, node, read, trylock, nest, refs: 0, k1, k2, site };
    s.held.push(h);
  } else {
    h.map = map;
    h.node = node;
    h.read = read;
    h.trylock = trylock;
    h.nest = nest;
    h.refs = 0;
    h.k1 = k1;
    h.k2 = k2;
    h.site = site;
  }
  s.depth++;
}

function matches(d: LockDomain, s: WorkerState, h: HeldLock, map: LockdepMap): boolean {
  if (h.map === map || h.map.id === map.id) return true;
  if (h.refs > 0) {
    const cls = s.classIdx.get(map.lockClass.name);
    return cls !== undefined && Math.floor(h.node / MAX_SUBCLASSES) === cls && d === map.domain;
  }
  return false;
}

function isHeldIn(s: WorkerState, map: LockdepMap): boolean {
  for (let i = s.depth - 1; i >= 0; i--) {
    const h = s.held[i]!;
    if (h.map === map || h.map.id === map.id) return true;
  }
  return false;
}

/**
 * lock_release: drops `map` from this worker's held stack. Releasing a lock from the middle re-acquires the locks
 * above it (their chains are validated again, as lockdep's reacquire does). Releasing a lock this worker does not
 * hold is reported ("bad unlock balance") and returns false.
 */
export function lockRelease(map: LockdepMap): boolean {
  if (Atomics.load(map.domain.i32, ENABLED) !== 1) return true;
  return releaseOn(map);
}

/** lockRelease without the ENABLED check (the caller made it). */
export function releaseOn(map: LockdepMap): boolean {
  const d = map.domain;
  const s = (d.validatorState as WorkerState | null) ?? state(d);
  const depth = s.depth;
  if (depth > 0) {
    const top = s.held[depth - 1]!;
    if (top.map === map && top.refs === 0) {
      s.depth = depth - 1;
      if (map.lockClass.waitType === 'spin') s.atomic--;
      top.map = NO_MAP;
      top.nest = null;
      return true;
    }
  }
  for (let i = depth - 1; i >= 0; i--) {
    const h = s.held[i]!;
    if (!matches(d, s, h, map)) continue;
    if (h.refs > 0) {
      // A merged entry (nest-locked locks of one class) stays until its last reference goes.
      h.refs--;
      if (h.refs > 0) return true;
    }
    if (h.map.lockClass.waitType === 'spin') s.atomic--;
    const above = s.held.slice(i + 1, depth).map((x) => ({ ...x }));
    s.depth = i;
    for (const x of above) {
      const refs = x.refs;
      reacquire(x);
      if (refs > 0 && s.depth > 0) s.held[s.depth - 1]!.refs = refs;
    }
    return true;
  }
  return apiReport(d, s, 'bad-unlock', [map.lockClass.name], badUnlockText(d, s, map));
}

function reacquire(x: HeldLock): void {
  const sub = x.node % MAX_SUBCLASSES;
  // Throw mode must not fire here: the caller's unlock already happened.
  try {
    lockAcquire(x.map, sub, x.trylock, x.read, x.nest);
  } catch (e) {
    if (!(e instanceof LockdepError)) throw e;
    const s = state(x.map.domain);
    push(s, x.map, x.node, x.read, x.trylock, x.nest, x.k1, x.k2, x.site);
  }
}

const NO_MAP: LockdepMap = { id: -1, lockClass: new LockClass('(released)', 'map'), domain: null as unknown as LockDomain };

/**
 * lock_is_held_type: whether this worker holds `map` (read: -1 any mode, 0 write, 1 any read). While the
 * validator is off the answer is true (lockdep_is_held says so when debug_locks is off).
 */
export function lockIsHeld(map: LockdepMap, read = -1): boolean {
  const d = map.domain;
  if (Atomics.load(d.i32, ENABLED) !== 1) return true;
  const s = state(d);
  for (let i = s.depth - 1; i >= 0; i--) {
    const h = s.held[i]!;
    if (!matches(d, s, h, map)) continue;
    if (read === -1 || (read === 0 ? h.read === 0 : h.read !== 0)) return true;
  }
  return false;
}

/** Names of the locks this worker holds in `d`, bottom first (diagnostics and tests). */
export function heldLocks(d: LockDomain): string[] {
  const s = state(d);
  loadClassNames(d, s);
  const out: string[] = [];
  for (let i = 0; i < s.depth; i++) out.push(nodeName(s, s.held[i]!.node));
  return out;
}

/** The maps this worker holds in `d`, bottom first (a merged entry counts once). */
export function heldMaps(d: LockDomain): LockdepMap[] {
  const s = d.validatorState as WorkerState | null;
  if (!s) return [];
  return s.held.slice(0, s.depth).map((h) => h.map);
}

/** How many locks this worker holds in `d`. */
export function heldCount(d: LockDomain): number {
  return (d.validatorState as WorkerState | null)?.depth ?? 0;
}

/** Enters / leaves atomic context (a fence callback runs under the fence's spinlock in the kernel). */
export function enterAtomic(d: LockDomain): void {
  state(d).atomic++;
}
export function exitAtomic(d: LockDomain): void {
  state(d).atomic--;
}
export function inAtomic(d: LockDomain): boolean {
  return ((d.validatorState as WorkerState | null)?.atomic ?? 0) > 0;
}

/** might_sleep(): reports a sleep (a fence wait) in atomic context. */
export function mightSleep(d: LockDomain, what: string): boolean {
  if (Atomics.load(d.i32, ENABLED) !== 1) return true;
  const s = state(d);
  if (s.atomic === 0) return true;
  loadClassNames(d, s);
  const w = workerLabel(d);
  const text = [
    '=============================',
    '[ BUG: Invalid wait context ]',
    '-----------------------------',
    `${w} is trying to sleep in ${what}`,
    'other info that might help us debug this:',
    `context-{sleep:atomic}`,
    heldText(d, s),
    'stack backtrace:',
    stackText(),
  ].join('\n');
  const r = record(d, s, { kind: 'wait-context', key: `wait-context:${what}`, locks: held(s), workers: [w], text });
  return r === null;
}

/** Forgets this worker's held locks and chain cache in `d` (a test case ends; a worker is reused). */
export function lockdepResetWorker(d: LockDomain): void {
  d.validatorState = null;
}

// ---- validation ------------------------------------------------------------------------------------------------

const DEP_SR = 1;
const DEP_ER = 2;
const DEP_SN = 4;
const DEP_EN = 8;

function depBits(prevRead: number, nextRead: number): number {
  const shared = prevRead === 2;
  const recursive = nextRead === 2;
  return shared ? (recursive ? DEP_SR : DEP_SN) : recursive ? DEP_ER : DEP_EN;
}

/**
 * check_deadlock + check_prevs_add for an acquisition of `node` (read mode, nest lock) on top of this worker's
 * held stack, the graph part under GRAPH_LOCK. Returns null (fine), the report (new, or a repeat of a recorded
 * one), or true (swallowed by a suppression or a full table: still a bad verdict, nothing to throw).
 */
function validate(d: LockDomain, s: WorkerState, node: number, read: number, nest: LockdepMap | null, site: string): LockdepReport | true | null {
  // check_deadlock: same class already held?
  let nestHeld: HeldLock | null = null;
  for (let i = 0; i < s.depth; i++) {
    const prev = s.held[i]!;
    if (nest !== null && (prev.map === nest || prev.map.id === nest.id)) nestHeld = prev;
    if (prev.node !== node) continue;
    if (read === 2 && prev.read !== 0) continue;
    if (nestHeld !== null) return null; // the nest lock serializes it: no AA, no new dependency
    return recursiveReport(d, s, node, prev, site);
  }
  if (s.depth === 0) return null;
  return underGraphLock(d, s, () => {
    for (let i = s.depth - 1; i >= 0; i--) {
      const prev = s.held[i]!;
      const r = checkPrevAdd(d, s, prev, node, read, site);
      if (r !== null) return r;
      if (!prev.trylock) break;
    }
    return null;
  });
}

/** check_prev_add under GRAPH_LOCK: prev → next, unless present; a path next ⇝ prev first is a cycle. */
function checkPrevAdd(d: LockDomain, s: WorkerState, prev: HeldLock, node: number, read: number, site: string): LockdepReport | true | null {
  const i32 = d.i32;
  const deps = depBits(prev.read, read);
  if (prev.node === node) return null;
  for (let e = i32[d.headBase + prev.node]!; e !== 0; ) {
    const b = d.edgeBase + (e - 1) * EDGE_WORDS;
    if (i32[b + E_TO] === node && (i32[b + E_DEPS]! & deps) === deps) return null;
    e = i32[b + E_NEXT]!;
  }
  const path = findPath(d, s, node, read === 2, prev.node, prev.read);
  if (path) return circularReport(d, s, node, prev, path, site);
  // Record the edge: reserve a record, fill it, then link it with one store (a dead updater leaves no half edge).
  const n = Atomics.load(i32, N_EDGES);
  if (n >= i32[CAP_EDGES]!) return limitHitReport(d, s, 'MAX_LOCKDEP_ENTRIES', nodeName(s, node));
  Atomics.store(i32, N_EDGES, n + 1);
  const text = d.putString(`${workerLabel(d)}:\n${indent(site)}`);
  if (!text) return limitHitReport(d, s, 'the lockdep arena', nodeName(s, node));
  const b = d.edgeBase + n * EDGE_WORDS;
  i32[b + E_FROM] = prev.node;
  i32[b + E_TO] = node;
  i32[b + E_DEPS] = deps;
  i32[b + E_NEXT] = i32[d.headBase + prev.node]!;
  i32[b + E_TEXT_OFF] = text[0];
  i32[b + E_TEXT_LEN] = text[1];
  i32[b + E_WORKER] = d.workerNo;
  Atomics.store(i32, d.headBase + prev.node, n + 1);
  return null;
}

/**
 * Breadth-first search from `from` (entered as a recursive reader when fromXr) for `target` held with
 * `targetRead`, along strong paths only. Returns the edges of the path (indices), or null.
 */
function findPath(d: LockDomain, s: WorkerState, from: number, fromXr: boolean, target: number, targetRead: number): number[] | null {
  const i32 = d.i32;
  const nodes = i32[CAP_CLASSES]! * MAX_SUBCLASSES * 2;
  if (s.visit.length < nodes) s.visit = new Int32Array(nodes);
  const gen = ++s.visitGen;
  const parent = new Map<number, number>(); // state → edge index + 1 it was reached by (0 = root)
  const parentState = new Map<number, number>();
  const queue: number[] = [from * 2 + (fromXr ? 1 : 0)];
  s.visit[queue[0]!] = gen;
  parent.set(queue[0]!, 0);
  for (let q = 0; q < queue.length; q++) {
    const st = queue[q]!;
    const node = st >> 1;
    const onlyXr = (st & 1) === 1;
    if (node === target && (targetRead === 0 || !onlyXr)) {
      const path: number[] = [];
      for (let cur = st; ; ) {
        const e = parent.get(cur)!;
        if (e === 0) break;
        path.push(e - 1);
        cur = parentState.get(cur)!;
      }
      return path.reverse();
    }
    for (let e = i32[d.headBase + node]!; e !== 0; ) {
      const b = d.edgeBase + (e - 1) * EDGE_WORDS;
      let dep = i32[b + E_DEPS]!;
      if (onlyXr) dep &= ~(DEP_SR | DEP_SN);
      if (dep !== 0) {
        const nx = i32[b + E_TO]! * 2 + ((dep & (DEP_SN | DEP_EN)) === 0 ? 1 : 0);
        if (s.visit[nx] !== gen) {
          s.visit[nx] = gen;
          parent.set(nx, e);
          parentState.set(nx, st);
          queue.push(nx);
        }
      }
      e = i32[b + E_NEXT]!;
    }
  }
  return null;
}

// ---- reports -----------------------------------------------------------------------------------------------------

function workerLabel(d: LockDomain): string {
  return d.workerName === `worker ${d.workerNo}` ? d.workerName : `worker ${d.workerNo} (${d.workerName})`;
}

function held(s: WorkerState): string[] {
  const out: string[] = [];
  for (let i = 0; i < s.depth; i++) out.push(nodeName(s, s.held[i]!.node));
  return out;
}

function heldText(d: LockDomain, s: WorkerState): string {
  if (s.depth === 0) return `no locks held by ${workerLabel(d)}.\n`;
  const lines = [`${s.depth} lock${s.depth > 1 ? 's' : ''} held by ${workerLabel(d)}:`];
  for (let i = 0; i < s.depth; i++) {
    const h = s.held[i]!;
    lines.push(` #${i}: (${nodeName(s, h.node)})${modeText(h.read)}${h.refs ? `, references ${h.refs}` : ''}${h.site ? `, at: ${firstLine(h.site)}` : ''}`);
  }
  return lines.join('\n') + '\n';
}

function modeText(read: number): string {
  return read === 0 ? '{+.+.}' : read === 1 ? '{++++}' : '{.+.+}';
}

/** The first stack frame outside src/locking and src/fence (where the caller took the lock). */
function callerSite(): string {
  const stack = new Error().stack ?? '';
  const lines = stack.split('\n').slice(1).map((l) => l.trim());
  const useful = lines.filter((l) => !/[/\\]src[/\\](locking|fence)[/\\]/.test(l));
  return (useful.length ? useful : lines).slice(0, 8).join('\n');
}

function stackText(): string {
  return indent(callerSite());
}

function firstLine(s: string): string {
  const i = s.indexOf('\n');
  const line = i < 0 ? s : s.slice(0, i);
  return line.startsWith('at ') ? line.slice(3) : line;
}

function indent(s: string): string {
  return s
    .split('\n')
    .map((l) => `       ${l}`)
    .join('\n');
}

/** A cycle's dedup form: the rotation of its names that sorts first, joined with ' -> '. */
export function canonicalRotation(names: string[]): string {
  let best = -1;
  let bestKey = '';
  for (let i = 0; i < names.length; i++) {
    const rot = names.slice(i).concat(names.slice(0, i)).join(' -> ');
    if (best < 0 || rot < bestKey) {
      best = i;
      bestKey = rot;
    }
  }
  return bestKey;
}

function circularReport(d: LockDomain, s: WorkerState, node: number, prev: HeldLock, path: number[], site: string): LockdepReport | true {
  loadClassNames(d, s);
  const i32 = d.i32;
  const w = workerLabel(d);
  const next = nodeName(s, node);
  const tgt = nodeName(s, prev.node);
  // Path: next = n0 -e1-> n1 ... -ek-> nk = prev; the new edge prev → next closes it.
  const chain = [node];
  const edgeTexts: string[] = [];
  const workers = [w];
  for (const e of path) {
    const b = d.edgeBase + e * EDGE_WORDS;
    chain.push(i32[b + E_TO]!);
    edgeTexts.push(d.getString(i32[b + E_TEXT_OFF]!, i32[b + E_TEXT_LEN]!));
    const label = firstLine(edgeTexts[edgeTexts.length - 1]!).replace(/:$/, '');
    if (!workers.includes(label)) workers.push(label);
  }
  const names = chain.map((n) => nodeName(s, n));
  const parent = names.length >= 2 ? names[names.length - 2]! : next;
  const lines = [
    '======================================================',
    'WARNING: possible circular locking dependency detected',
    '------------------------------------------------------',
    `${w} is trying to acquire lock:`,
    ` (${next})${modeText(0)}, at: ${firstLine(site)}`,
    '',
    `but ${w} is already holding lock:`,
    ` (${tgt})${modeText(prev.read)}${prev.site ? `, at: ${firstLine(prev.site)}` : ''}`,
    '',
    'which lock already depends on the new lock.',
    '',
    '',
    'the existing dependency chain (in reverse order) is:',
  ];
  for (let k = path.length; k >= 1; k--) {
    lines.push('', `-> #${k} (${names[k]}):`, `       first recorded by ${edgeTexts[k - 1]!.trimStart()}`);
  }
  lines.push('', `-> #0 (${next}):`, `       recorded now by ${w}:`, indent(site), '', 'other info that might help us debug this:', '');
  if (parent !== next) lines.push('Chain exists of:', `  ${next} --> ${parent} --> ${tgt}`, '');
  lines.push(
    ' Possible unsafe locking scenario:',
    '',
    '       WORKER0                 WORKER1',
    '       -------                 -------',
    `  lock(${tgt});`,
    `                               lock(${parent});`,
    `                               lock(${tgt});`,
    `  lock(${next});`,
    '',
    ' *** DEADLOCK ***',
    '',
    heldText(d, s),
    'stack backtrace:',
    indent(site),
  );
  return verdictOf(d, s, { kind: 'circular', key: `circular:${canonicalRotation(names)}`, locks: names, workers, text: lines.join('\n') });
}

function recursiveReport(d: LockDomain, s: WorkerState, node: number, prev: HeldLock, site: string): LockdepReport | true {
  loadClassNames(d, s);
  const w = workerLabel(d);
  const name = nodeName(s, node);
  const text = [
    '============================================',
    'WARNING: possible recursive locking detected',
    '--------------------------------------------',
    `${w} is trying to acquire lock:`,
    ` (${name})${modeText(0)}, at: ${firstLine(site)}`,
    '',
    `but ${w} is already holding lock:`,
    ` (${nodeName(s, prev.node)})${modeText(prev.read)}${prev.site ? `, at: ${firstLine(prev.site)}` : ''}`,
    '',
    'other info that might help us debug this:',
    ' Possible unsafe locking scenario:',
    '',
    '       WORKER0',
    '       -------',
    `  lock(${name});`,
    `  lock(${name});`,
    '',
    ' *** DEADLOCK ***',
    '',
    ' May be due to missing lock nesting notation',
    '',
    heldText(d, s),
    'stack backtrace:',
    indent(site),
  ].join('\n');
  return verdictOf(d, s, { kind: 'recursive', key: `recursive:${name}`, locks: [name], workers: [w], text });
}

function waitContextReport(d: LockDomain, s: WorkerState, map: LockdepMap, sub: number): boolean {
  loadClassNames(d, s);
  const w = workerLabel(d);
  const name = sub ? `${map.lockClass.name}/${sub}` : map.lockClass.name;
  const text = [
    '=============================',
    '[ BUG: Invalid wait context ]',
    '-----------------------------',
    `${w} is trying to lock:`,
    ` (${name}){+.+.}-{sleep}`,
    'other info that might help us debug this:',
    'context-{spin:spin}',
    heldText(d, s),
    'stack backtrace:',
    stackText(),
  ].join('\n');
  return record(d, s, { kind: 'wait-context', key: `wait-context:${held(s).join(',')}:${name}`, locks: [...held(s), name], workers: [w], text }) === null;
}

function badUnlockText(d: LockDomain, s: WorkerState, map: LockdepMap): string {
  loadClassNames(d, s);
  return [
    '=====================================',
    'WARNING: bad unlock balance detected!',
    '-------------------------------------',
    `${workerLabel(d)} is trying to release lock (${map.lockClass.name}) at:`,
    stackText(),
    'but there are no more locks to release!',
    '',
    'other info that might help us debug this:',
    heldText(d, s),
  ].join('\n');
}

function nestNotHeldText(d: LockDomain, s: WorkerState, map: LockdepMap, nest: LockdepMap): string {
  loadClassNames(d, s);
  return [
    '==================================',
    'WARNING: Nested lock was not taken',
    '----------------------------------',
    `${workerLabel(d)} is trying to lock:`,
    ` (${map.lockClass.name})`,
    '',
    `but this worker is not holding (${nest.lockClass.name}):`,
    heldText(d, s),
    'stack backtrace:',
    stackText(),
  ].join('\n');
}

/**
 * An API-misuse report (kind 'api'): `what` names the check (dedup key with the lock names). Returns false
 * (the verdict) so callers can write `ok = apiReport(...)`; throws in throw mode for a new report.
 */
export function apiReport(d: LockDomain, s0: unknown, what: string, locks: string[], text: string): false {
  const s = (s0 as WorkerState | null) ?? state(d);
  const r = record(d, s, { kind: 'api', key: `api:${what}:${locks.join(',')}`, locks, workers: [workerLabel(d)], text });
  if (r && d.throwOnReport) throw new LockdepError(r);
  return false;
}

/**
 * Records an API misuse found outside the validator (mutex word checks, ww_mutex checks): `title` is the
 * headline, `detail` lines follow; the held locks and the stack are appended.
 */
export function reportMisuse(d: LockDomain, what: string, locks: string[], title: string, detail: string[] = []): false {
  const s = state(d);
  loadClassNames(d, s);
  const bar = '-'.repeat(Math.min(70, title.length));
  const text = [bar.replace(/-/g, '='), title, bar, `${workerLabel(d)}:`, ...detail, '', 'other info that might help us debug this:', heldText(d, s), 'stack backtrace:', stackText()].join('\n');
  return apiReport(d, s, what, locks, text);
}

/** Records a report of any kind built by another module (the watchdog's 'deadlock' / 'hung' later). */
export function reportRaw(d: LockDomain, r: LockdepReport): LockdepReport | null {
  return record(d, state(d), r);
}

function limitHit(d: LockDomain, s: WorkerState, what: string, at: string): number {
  limitHitReport(d, s, what, at);
  return 0;
}

/** Out of table space: one loud report, then the validator switches itself off for the whole domain. */
function limitHitReport(d: LockDomain, s: WorkerState, what: string, at: string): true {
  if (Atomics.compareExchange(d.i32, OFF, 0, 1) === 0) {
    Atomics.store(d.i32, ENABLED, 0);
    const text = [`BUG: ${what} too low!`, `(while recording a dependency on ${at} in ${workerLabel(d)})`, 'turning off the locking correctness validator.', stackText()].join('\n');
    record(d, s, { kind: 'api', key: `api:limit:${what}`, locks: [at], workers: [workerLabel(d)], text }, true);
  }
  return true;
}

function suppressed(s: WorkerState, r: LockdepReport): boolean {
  return s.suppress.some((rule) => (rule.kind === undefined || rule.kind === r.kind) && (rule.locks === undefined || rule.locks.every((l) => r.locks.includes(l))));
}

/**
 * Stores `r` in the domain unless its key is known or a suppression matches; prints it through this worker's
 * sink. Returns the report when it is new, null otherwise. `reserved` lets the limit report use the last slot.
 */
function record(d: LockDomain, s: WorkerState, r: LockdepReport, reserved = false): LockdepReport | null {
  if (s.seen.has(r.key)) return null;
  if (suppressed(s, r)) {
    s.seen.set(r.key, null);
    Atomics.add(d.i32, N_SUPPRESSED, 1);
    return null;
  }
  if (r.expected !== true && isExpected(d, r)) {
    r = { ...r, expected: true };
    Atomics.add(d.i32, N_EXPECTED, 1);
  }
  const i32 = d.i32;
  const stored = underGraphLock(d, s, () => {
    const n = Atomics.load(i32, N_REPORTS);
    for (let i = 0; i < n; i++) {
      const b = d.reportBase + i * REPORT_WORDS;
      if (d.getString(i32[b]!, i32[b + 1]!) === r.key) return 'repeat';
    }
    const cap = i32[CAP_REPORTS]! - (reserved ? 0 : 1);
    const key = n < cap ? d.putString(r.key) : null;
    const body = key ? d.putString(JSON.stringify(r)) : null;
    if (!key || !body) {
      limitHitReport(d, s, 'MAX_LOCKDEP_REPORTS', r.key);
      return 'full';
    }
    const b = d.reportBase + n * REPORT_WORDS;
    i32[b] = key[0];
    i32[b + 1] = key[1];
    i32[b + 2] = body[0];
    i32[b + 3] = body[1];
    Atomics.store(i32, N_REPORTS, n + 1);
    return 'new';
  });
  if (stored !== 'new') {
    s.seen.set(r.key, stored === 'repeat' ? r : null);
    if (stored === 'repeat') Atomics.add(i32, N_SUPPRESSED, 1);
    return null;
  }
  s.seen.set(r.key, r);
  sink(r);
  return r;
}

/**
 * The verdict of a validation report: the report (new, or a repeat of a recorded one — throw mode throws for
 * both), or true when a suppression rule or a full table swallowed it.
 */
function verdictOf(d: LockDomain, s: WorkerState, r: LockdepReport): LockdepReport | true {
  return record(d, s, r) ?? s.seen.get(r.key) ?? true;
}

/** Every report recorded in `d` so far, oldest first (any worker may ask). */
export function lockdepReports(d: LockDomain): LockdepReport[] {
  const i32 = d.i32;
  const n = Atomics.load(i32, N_REPORTS);
  const out: LockdepReport[] = [];
  for (let i = 0; i < n; i++) {
    const b = d.reportBase + i * REPORT_WORDS;
    out.push(JSON.parse(d.getString(i32[b + 2]!, i32[b + 3]!)) as LockdepReport);
  }
  return out;
}

/** Reports dropped as repeats or by suppression rules. */
export function lockdepSuppressedCount(d: LockDomain): number {
  return Atomics.load(d.i32, N_SUPPRESSED);
}
