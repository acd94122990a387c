/**
 * Layout rules a reader relies on, checked over the sources: one home for BUG/WARN (src/bug.ts), uAPI facts only
 * in src/uapi/ (dma_resv_usage and dma_data_direction are kernel-internal, each defined once), per-module kernel
 * state instead of a string-keyed map, KUnit cases loaded only on demand and named kunit.
 */
import test from 'ava';
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KernelControl } from '../src/kernel/control-plane.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

async function sources(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const e of await readdir(join(ROOT, dir), { withFileTypes: true, recursive: true })) {
    if (!e.isFile() || !e.name.endsWith('.ts')) continue;
    const path = join(e.parentPath, e.name);
    out.set(relative(ROOT, path), await readFile(path, 'utf8'));
  }
  return out;
}

/** Files of `files` whose text matches `re`, with the first matching line. */
function offenders(files: Map<string, string>, re: RegExp, except: (path: string) => boolean = () => false): string[] {
  const hits: string[] = [];
  for (const [path, text] of files) {
    if (except(path)) continue;
    const line = text.split('\n').find((l) => re.test(l));
    if (line !== undefined) hits.push(`${path}: ${line.trim()}`);
  }
  return hits;
}

test('BUG() and WARN() have one home: no private bug(), inline BUG errors or kernel warn methods', async (t) => {
  const src = new Map([...(await sources('src')), ...(await sources('workers'))]);
  const notBugTs = (p: string): boolean => p === join('src', 'bug.ts');
  t.deepEqual(offenders(src, /new Error\(\s*[`'"]BUG/, notBugTs), [], 'BUG("…") instead of throw new Error("BUG…")');
  t.deepEqual(offenders(src, /function bug\(|BUG as bug/, notBugTs), [], 'no private bug()');
  t.deepEqual(offenders(src, /\bk\.warn\(|this\.k\.warn\(|\bkernel\.warn\(|^\s+warn\(message: string\): void/, notBugTs), [], 'warn() from src/bug.ts');
});

test('uapi/ holds only uAPI facts; dma_resv_usage and dma_data_direction are defined once, outside it', async (t) => {
  const src = await sources('src');
  const uapi = new Map([...src].filter(([p]) => p.startsWith(join('src', 'uapi'))));
  t.deepEqual(offenders(uapi, /DMA_RESV_USAGE_|DMA_TO_DEVICE|DMA_FROM_DEVICE|DMA_BIDIRECTIONAL/), []);
  t.deepEqual(offenders(src, /export const DMA_RESV_USAGE_KERNEL\b/).map((l) => l.split(':')[0]), [join('src', 'fence', 'dma-resv.ts')]);
  t.deepEqual(offenders(src, /export const DMA_TO_DEVICE\b/).map((l) => l.split(':')[0]), [join('src', 'kernel', 'dma-direction.ts')]);
});

test('kernel state is per module and typed: no string-keyed subsystems map', async (t) => {
  const src = await sources('src');
  t.deepEqual(offenders(src, /\bsubsystems\.(get|set)\(|\.subsystem<|readonly subsystems\b/), []);
});

test('KUnit cases are loaded only when asked, and the control plane names them kunit', async (t) => {
  const src = await sources('src');
  t.deepEqual(
    offenders(src, /^import .*['"]\.\/dma-buf-kunit\.js['"]/),
    [],
    'no static import of the cases: kunit.ts imports them with import() on first use',
  );
  const methods = Object.getOwnPropertyNames(KernelControl.prototype);
  t.true(methods.includes('kunitRun'));
  t.false(methods.some((m) => /selftest/i.test(m)), methods.join(', '));
});
