/**
 * WARN() labelling (src/bug.ts): warnings a test provokes on purpose are declared with expectWarnings() and are
 * neither printed one by one nor recorded as unexpected; every other warning still prints loudly and is recorded.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beginExpectWarnings, endExpectWarnings, expectWarnings, setWarningSink, takeWarnings, warn, warnOn } from '../src/bug.js';
import { attachFenceTable, dmaFenceArrayCreate, dmaFenceContextAlloc, dmaFenceInit, dmaFencePut, dmaFenceSignal, fenceHandle } from '../src/fence/index.js';
import { bootChecked } from './helpers/sim.js';
import { dmaBufAddFence, DMA_RESV_USAGE_WRITE, expectKernelWarnings, fenceTable } from '../src/testing.js';

/**
 * Runs `body` (an ES module's text, written to a temporary .mjs file: workers would inherit --input-type) in a fresh
 * node process, bounded in time; resolves to its stdout and stderr.
 */
async function node(body: string): Promise<{ stdout: string; stderr: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'dmabuf-sim-bug-'));
  try {
    const file = join(dir, 'script.mjs');
    await writeFile(file, body);
    return await new Promise((resolve, reject) => {
      execFile(process.execPath, [file], { timeout: 30_000, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
        if (err) reject(new Error(`${err.message}\n${stderr}`));
        else resolve({ stdout, stderr });
      });
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const bugUrl = new URL('../src/bug.js', import.meta.url).href;

test.serial('expected warnings go to expectWarnings, unexpected ones to the record; the sink is told which', (t) => {
  const seen: [string, boolean][] = [];
  const prev = setWarningSink((m, expected) => void seen.push([m, expected]));
  try {
    takeWarnings();
    const { result, warnings } = expectWarnings(/^dma_foo: WARN_ON/, 'test', () => {
      warnOn(true, 'dma_foo: WARN_ON(x)');
      warn('something else');
      warnOn(false, 'dma_foo: WARN_ON(never)');
      warn('dma_foo: WARN_ON(y)');
      return 42;
    });
    t.is(result, 42);
    t.deepEqual(warnings, ['dma_foo: WARN_ON(x)', 'dma_foo: WARN_ON(y)']);
    t.deepEqual(takeWarnings().map((w) => w.message), ['something else'], 'only the unexpected one is recorded');
    t.deepEqual(seen, [
      ['dma_foo: WARN_ON(x)', true],
      ['something else', false],
      ['dma_foo: WARN_ON(y)', true],
    ]);
    warn('dma_foo: WARN_ON(after)');
    t.deepEqual(takeWarnings().map((w) => w.message), ['dma_foo: WARN_ON(after)'], 'the expectation ends with its call');
  } finally {
    setWarningSink(prev);
  }
});

test.serial('an expectation ends even when its body throws; nested ones match innermost first', (t) => {
  const prev = setWarningSink(() => {});
  try {
    takeWarnings();
    t.throws(() => expectWarnings(/a/, 'throws', () => {
      throw new Error('boom');
    }), { message: 'boom' });
    warn('a');
    t.is(takeWarnings().length, 1, 'no expectation left behind');
    const outer = expectWarnings(/a|b/, 'outer', () => expectWarnings(/a/, 'inner', () => (warn('a'), warn('b'))).warnings);
    t.deepEqual(outer.result, ['a']);
    t.deepEqual(outer.warnings, ['b']);
  } finally {
    setWarningSink(prev);
  }
});

test('stderr: an unexpected warning prints loudly, expected ones are one labelled count line', async (t) => {
  const { stdout, stderr } = await node(`
    import { expectWarnings, warn } from ${JSON.stringify(bugUrl)};
    const r = expectWarnings(/^expected:/, 'demo case', () => {
      warn('expected: one');
      warn('surprise');
      warn('expected: two');
    });
    warn('later');
    console.log(r.warnings.length);
  `);
  t.is(stdout, '2\n');
  t.deepEqual(stderr.split('\n'), [
    'dmabuf-sim: WARNING: surprise',
    'dmabuf-sim: 2 expected WARNINGs in demo case (/^expected:/), not printed',
    'dmabuf-sim: WARNING: later',
    '',
  ]);
});

const kernelUrl = new URL('../src/kernel/kernel.js', import.meta.url).href;
const machineUrl = new URL('../src/machine.js', import.meta.url).href;
const testingUrl = new URL('../src/testing.js', import.meta.url).href;

test('the broker\'s sink: unexpected warnings print with pid and call, expected ones are marked and counted', async (t) => {
  const { stdout, stderr } = await node(`
    import { expectWarnings, setWarningSink, warn } from ${JSON.stringify(bugUrl)};
    import { Kernel } from ${JSON.stringify(kernelUrl)};
    const k = new Kernel();
    setWarningSink((m, expected) => k.recordWarning(m, expected), true); // what the control plane installs at boot
    expectWarnings(/^dma_x: WARN_ON/, 'kunit(case)', () => {
      warn('dma_x: WARN_ON(a)');
      warn('dma_y: WARN_ON(b)');
    });
    console.log(JSON.stringify(k.warnings));
  `);
  t.deepEqual(JSON.parse(stdout), [
    { pid: 0, call: 'control', message: 'dma_x: WARN_ON(a)', expected: true },
    { pid: 0, call: 'control', message: 'dma_y: WARN_ON(b)', expected: false },
  ]);
  t.deepEqual(stderr.split('\n'), [
    'dmabuf-sim: WARNING in pid 0 control: dma_y: WARN_ON(b)',
    'dmabuf-sim: 1 expected WARNING in kunit(case) (/^dma_x: WARN_ON/), not printed',
    '',
  ]);
});

test('KUnit cases that WARN or BUG on purpose print one labelled line each, not WARNING lines or stacks', async (t) => {
  const { stdout, stderr } = await node(`
    import { Machine } from ${JSON.stringify(machineUrl)};
    import { kunit } from ${JSON.stringify(testingUrl)};
    const m = await Machine.boot();
    const results = [];
    for (const name of ['dma_buf_export_checks', 'dma_buf_dynamic_attach', 'dma_buf_release_with_attachment', 'dma_buf_vunmap_bug']) {
      const r = await kunit(m, name);
      results.push({ name, ok: r.ok, failures: r.failures });
    }
    const rep = await m.shutdown({ quiet: true });
    console.log(JSON.stringify({ results, warnings: rep.warnings, oopses: rep.oopses }));
  `);
  const out = JSON.parse(stdout) as {
    results: { name: string; ok: boolean; failures: string[] }[];
    warnings: { message: string; expected: boolean }[];
    oopses: { call: string; expected: boolean }[];
  };
  for (const r of out.results) t.deepEqual(r.failures, [], r.name);
  t.is(out.warnings.length, 7 + 2 + 1, 'every warning is still in the report');
  t.true(out.warnings.every((w) => w.expected), 'and each is marked expected');
  t.deepEqual(out.oopses.map((o) => [o.call, o.expected]), [['kunit(dma_buf_vunmap_bug)', true]]);
  t.deepEqual(stderr.trimEnd().split('\n'), [
    'dmabuf-sim: 7 expected WARNINGs in kunit(dma_buf_export_checks) (/^dma_buf_export: WARN_ON/), not printed',
    'dmabuf-sim: 2 expected WARNINGs in kunit(dma_buf_dynamic_attach) (/^dma_buf_(dynamic_attach|pin): WARN_ON/), not printed',
    'dmabuf-sim: 1 expected WARNING in kunit(dma_buf_release_with_attachment) ' +
      '(/^dma_buf_release: WARN_ON\\(!list_empty\\(&dmabuf->attachments\\)\\)/), not printed',
    'dmabuf-sim: expected kernel oops in pid 0 kunit(dma_buf_vunmap_bug), stack not printed: ' +
      'BUG: dma_buf_vunmap: dma-buf ino 6 unmapping a different mapping',
  ]);
});

test.serial('an expectation across awaits (begin/end) covers what happens in between, and ends once', async (t) => {
  const prev = setWarningSink(() => {});
  try {
    takeWarnings();
    const exp = beginExpectWarnings(/^late:/, 'async window');
    await new Promise((r) => setTimeout(r, 1));
    warn('late: one');
    t.deepEqual(endExpectWarnings(exp), ['late: one']);
    t.deepEqual(endExpectWarnings(exp), ['late: one'], 'a second end changes nothing');
    warn('late: two');
    t.deepEqual(takeWarnings().map((w) => w.message), ['late: two']);
  } finally {
    setWarningSink(prev);
  }
});

test.serial('expectKernelWarnings: a kernel WARN a test provokes through the control plane is marked expected', async (t) => {
  const m = await bootChecked(t);
  try {
    // A container fence added to a buffer's reservation: dma_resv_add_fence WARNs in the broker (arrays must be
    // unwrapped first), and carries on.
    attachFenceTable(await fenceTable(m));
    const ops = { driverName: 'test', timelineName: 'expect' };
    const ctx = dmaFenceContextAlloc(1);
    const arr = dmaFenceArrayCreate(2, [dmaFenceInit(ops, ctx, 1), dmaFenceInit(ops, ctx, 2)], dmaFenceContextAlloc(1), 1, false);
    const p = await m.spawn(new URL('./fixtures/dmabuf-sync.js', import.meta.url), { name: 'owner' });
    const fd = await p.call<number>('alloc', 'system', 4096);
    const expecting = await expectKernelWarnings(m, /^dma_resv_add_fence of a container/, 'the container test');
    await dmaBufAddFence(m, p, fd, fenceHandle(arr), DMA_RESV_USAGE_WRITE);
    const matched = await expecting.end();
    t.is(matched.length, 1);
    t.regex(matched[0]!, /^dma_resv_add_fence of a container/);
    dmaFenceSignal(arr);
    dmaFencePut(arr);
    await p.call('close', fd);
  } finally {
    const rep = await m.shutdown();
    t.deepEqual(rep.leaks, []);
    t.deepEqual(rep.warnings.map((w) => [w.message.slice(0, 33), w.expected]), [['dma_resv_add_fence of a container', true]]);
  }
});
