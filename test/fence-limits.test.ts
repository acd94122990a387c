/**
 * Fence resources that must not run out for good: the names table is refcounted (a fence holds its names entry,
 * the last put frees it for reuse, no cache hands out a freed-and-reused id), and the table sizes are validated
 * boot options whose limits are loud errors naming the option.
 */
import test from 'ava';
import { Machine } from '../src/index.js';
import {
  FenceTableFullError,
  createAndAttachFenceTable,
  dmaFenceContextAlloc,
  dmaFenceEnableSwSignaling,
  dmaFenceInit,
  dmaFenceIsSignaled,
  dmaFencePut,
  dmaFenceSignal,
  type DmaFence,
} from '../src/fence/index.js';
import { FenceTable } from '../src/fence/table.js';
import { bootChecked, shutdownNoLeaks, spawnSock, syncFixture } from './helpers/sim.js';

/** Runs `fn` with stderr captured; returns what it printed. */
function captureStderr(fn: () => void): string {
  const saved = process.stderr.write;
  let printed = '';
  process.stderr.write = ((s: string) => {
    printed += s;
    return true;
  }) as typeof process.stderr.write;
  try {
    fn();
  } finally {
    process.stderr.write = saved;
  }
  return printed;
}

test.serial('1000 distinct timeline names, each made and released in turn, fit an 8-entry names table', (t) => {
  const { sab } = createAndAttachFenceTable({ names: 8, slots: 64 });
  const table = new FenceTable(sab);
  for (let i = 0; i < 1000; i++) {
    const f = dmaFenceInit({ driverName: 'limits', timelineName: `timeline-${i}` }, dmaFenceContextAlloc(1), 1);
    if (f.timelineName !== `timeline-${i}`) t.fail(`fence ${i} is named ${f.timelineName}`);
    dmaFenceSignal(f);
    dmaFencePut(f);
  }
  t.deepEqual(table.namesUsage(), { live: 3, capacity: 8 }, 'only the fixed entries are left');
});

test.serial('a freed names id reused for another pair is never handed out, nor its hooks found, for the old pair', (t) => {
  createAndAttachFenceTable({ names: 4, slots: 16 });
  // The one dynamic entry: "a" takes it, is freed, "b" reuses the id; "a" again must not get b's entry from the
  // worker's cache, and b's fences must not run a's hooks.
  let aHook = 0;
  const a = { driverName: 'drv', timelineName: 'a', signaled: () => (aHook++, true) };
  const fa = dmaFenceInit(a, dmaFenceContextAlloc(1), 1);
  const idA = fa.nameId;
  dmaFencePut(fa);
  const fb = dmaFenceInit({ driverName: 'drv', timelineName: 'b' }, dmaFenceContextAlloc(1), 1);
  t.is(fb.nameId, idA, 'the freed entry was reused');
  t.false(dmaFenceIsSignaled(fb), "b's fence does not run a's signaled hook");
  t.is(aHook, 0);
  // The table is full now (b holds the only dynamic entry): "a" must fail loudly, not alias b's entry.
  let err: unknown;
  const printed = captureStderr(() => {
    try {
      dmaFenceInit(a, dmaFenceContextAlloc(1), 1);
    } catch (e) {
      err = e;
    }
  });
  t.true(err instanceof FenceTableFullError, 'no entry left: an error, not a stale id');
  t.regex((err as Error).message, /names table full: all 4 .*Machine\.boot\(\{ fences: \{ names \} \}\)/);
  t.regex(printed, /names table full/);
  t.is(fb.timelineName, 'b');
  dmaFencePut(fb);
  const fa2 = dmaFenceInit(a, dmaFenceContextAlloc(1), 1);
  t.is(fa2.timelineName, 'a');
  t.true(dmaFenceIsSignaled(fa2), "a's own hook runs for a's fence");
  t.is(aHook, 1);
  dmaFencePut(fa2);
});

test.serial('a names entry lives as long as any fence holding it, across puts in any order', (t) => {
  const { sab } = createAndAttachFenceTable({ names: 4, slots: 16 });
  const table = new FenceTable(sab);
  const ops = { driverName: 'drv', timelineName: 'shared' };
  const fences: DmaFence[] = [];
  for (let i = 0; i < 5; i++) fences.push(dmaFenceInit(ops, dmaFenceContextAlloc(1), i));
  t.is(new Set(fences.map((f) => f.nameId)).size, 1, 'one entry for one pair');
  t.deepEqual(table.namesUsage(), { live: 4, capacity: 4 });
  for (const i of [3, 0, 4, 1]) dmaFencePut(fences[i]!);
  dmaFenceEnableSwSignaling(fences[2]!);
  t.is(fences[2]!.timelineName, 'shared', 'still named while one fence holds the entry');
  dmaFencePut(fences[2]!);
  t.deepEqual(table.namesUsage(), { live: 3, capacity: 4 }, 'freed with the last fence');
});

test.serial('processes with more distinct names than the table holds make sw_sync fences in turn (no ENOMEM)', async (t) => {
  // names: 6 leaves 3 entries beyond the fixed ones; sw_sync names each timeline after its process.
  const m = await bootChecked(t, { fences: { names: 6 } });
  try {
    for (let i = 0; i < 8; i++) {
      const p = await spawnSock(m, `namer-${i}`, {}, syncFixture);
      const tl = await p.ok<number>('swSyncTimelineCreate');
      const fd = await p.ok<number>('swSyncFenceCreate', tl, 'pt', 1);
      await p.ok('close', fd);
      await p.ok('close', tl);
      await p.proc.kill();
    }
    // Three live timelines' fences fill the table; a fourth name gets ENOMEM (loud), and succeeds once one is gone.
    const holders = [];
    for (let i = 0; i < 3; i++) {
      const p = await spawnSock(m, `holder-${i}`, {}, syncFixture);
      const tl = await p.ok<number>('swSyncTimelineCreate');
      holders.push({ p, tl, fd: await p.ok<number>('swSyncFenceCreate', tl, 'pt', 1) });
    }
    const late = await spawnSock(m, 'late', {}, syncFixture);
    const tl = await late.ok<number>('swSyncTimelineCreate');
    t.is(await late.err('swSyncFenceCreate', tl, 'pt', 1), 'ENOMEM');
    await holders[0]!.p.ok('close', holders[0]!.fd);
    await holders[0]!.p.ok('close', holders[0]!.tl);
    await late.ok('close', await late.ok<number>('swSyncFenceCreate', tl, 'pt', 1));
    await late.ok('close', tl);
  } finally {
    await shutdownNoLeaks(t, m);
  }
});

test('Machine.boot validates the fence table sizes and names the field', async (t) => {
  for (const [fences, cls, code, re] of [
    [{ slots: 3.5 }, RangeError, 'ERR_OUT_OF_RANGE', /"options\.fences\.slots" is out of range.*Received 3\.5/],
    [{ slots: 1 }, RangeError, 'ERR_OUT_OF_RANGE', /"options\.fences\.slots"/],
    [{ slots: 2 ** 23 }, RangeError, 'ERR_OUT_OF_RANGE', /"options\.fences\.slots"/],
    [{ slots: NaN }, RangeError, 'ERR_OUT_OF_RANGE', /"options\.fences\.slots"/],
    [{ names: 3 }, RangeError, 'ERR_OUT_OF_RANGE', /"options\.fences\.names" is out of range. It must be an integer >= 4/],
    [{ names: 1 << 20 }, RangeError, 'ERR_OUT_OF_RANGE', /"options\.fences\.names"/],
    [{ names: '64' }, TypeError, 'ERR_INVALID_ARG_TYPE', /"options\.fences\.names" property must be of type number/],
  ] as const) {
    const e = await t.throwsAsync(Machine.boot({ fences: fences as { slots?: number; names?: number } }), { instanceOf: cls });
    t.is((e as Error & { code?: string }).code, code);
    t.regex(e!.message, re);
  }
});

test.serial('fences.slots sizes the machine fence table; a full table is ENOMEM and its message names the option', async (t) => {
  const m = await bootChecked(t, { fences: { slots: 8 } });
  try {
    const p = await spawnSock(m, 'filler', {}, syncFixture);
    const tl = await p.ok<number>('swSyncTimelineCreate');
    const fds: number[] = [];
    for (let i = 0; i < 7; i++) fds.push(await p.ok<number>('swSyncFenceCreate', tl, 'pt', i + 1));
    t.is(await p.err('swSyncFenceCreate', tl, 'pt', 99), 'ENOMEM', 'slot 0 is the stub: 7 fences fill 8 slots');
    for (const fd of fds) await p.ok('close', fd);
    await p.ok('close', tl);
  } finally {
    await shutdownNoLeaks(t, m);
  }
  // The loud message, seen where it is thrown.
  createAndAttachFenceTable({ slots: 2 });
  const one = dmaFenceInit({ driverName: 'd', timelineName: 't' }, dmaFenceContextAlloc(1), 1);
  let err: unknown;
  captureStderr(() => {
    try {
      dmaFenceInit({ driverName: 'd', timelineName: 't' }, dmaFenceContextAlloc(1), 2);
    } catch (e) {
      err = e;
    }
  });
  dmaFencePut(one);
  t.true(err instanceof FenceTableFullError);
  t.regex((err as Error).message, /all 2 slots in use.*Machine\.boot\(\{ fences: \{ slots \} \}\)/);
});
