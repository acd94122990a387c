/**
 * WARN() labelling (src/bug.ts): warnings a test provokes on purpose are declared with expectWarnings() and are
 * neither printed one by one nor recorded as unexpected; every other warning still prints loudly and is recorded.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { expectWarnings, setWarningSink, takeWarnings, warn, warnOn } from '../src/bug.js';

/** Runs `body` (an ES module's text) in a fresh node process; resolves to its stdout and stderr. */
function node(body: string): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--input-type=module', '-e', body], { timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${err.message}\n${stderr}`));
      else resolve({ stdout, stderr });
    });
  });
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
