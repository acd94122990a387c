/**
 * The README's "Example" runs as written from an empty folder: its files are taken from README.md itself (so the
 * two cannot drift), the package is packed from this checkout and installed from the tarball without network, and
 * `node main.js` must print exactly the README's "Output" block.
 *
 * Why a tarball and not `npm install /path/to/checkout`: a folder install is a symlink whose `prepare` script
 * rebuilds dist/ in the checkout — under the very tests that are running from it. `npm pack --ignore-scripts` packs
 * the tree this suite was built from, and installing the tarball checks what actually ships (the "files" field).
 * The package's own dependencies (comlink, piscina) are packed from this checkout's node_modules and handed to the
 * same offline install, because npm's cache need not hold them (npm --offline fails with ENOTCACHED otherwise); the
 * install uses a private, empty cache so it neither reads nor pollutes the user's.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** Every child process is bounded; together they stay well under the test's own timeout. */
const STEP_TIMEOUT_MS = 40_000;

interface Run {
  readonly stdout: string;
  readonly stderr: string;
}

function run(cmd: string, args: string[], cwd: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd, timeout: STEP_TIMEOUT_MS, killSignal: 'SIGKILL', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')} (in ${cwd}) failed: ${err.message}\n${stdout}\n${stderr}`));
      else resolve({ stdout, stderr });
    });
  });
}

interface ReadmeExample {
  /** File name → contents, from each code block that follows a line naming the file ("**`main.js`**"). */
  readonly files: Map<string, string>;
  /** The shell block: the commands a reader types. */
  readonly commands: string;
  /** The block after "Output": what `node main.js` prints. */
  readonly output: string;
}

/** Parses README.md's "## Example" section: named file blocks, the sh block and the output block. */
function parseReadmeExample(readme: string): ReadmeExample {
  const start = readme.indexOf('\n## Example\n');
  if (start < 0) throw new Error('README.md has no "## Example" section');
  const end = readme.indexOf('\n## ', start + 1);
  const lines = readme.slice(start, end < 0 ? undefined : end).split('\n');
  const files = new Map<string, string>();
  let commands: string | null = null;
  let output: string | null = null;
  // A block's label is the first line of the paragraph before it.
  let label = '';
  let newParagraph = true;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const fence = /^```(\w*)$/.exec(line);
    if (!fence) {
      if (line.trim() === '') newParagraph = true;
      else if (newParagraph) [label, newParagraph] = [line.trim(), false];
      continue;
    }
    const body: string[] = [];
    for (i++; i < lines.length && lines[i] !== '```'; i++) body.push(lines[i]!);
    const text = body.join('\n') + '\n';
    const file = /^\*\*`([\w.-]+)`\*\*/.exec(label);
    if (file) files.set(file[1]!, text);
    else if (fence[1] === 'sh') commands = text;
    else if (/^Output/.test(label)) output = text;
    [label, newParagraph] = ['', true];
  }
  if (commands === null) throw new Error('README example: no sh block');
  if (output === null) throw new Error('README example: no block after an "Output" line');
  return { files, commands, output };
}

test('the README example runs from an empty folder and prints what the README shows', async (t) => {
  t.timeout(60_000);
  const ex = parseReadmeExample(await readFile(join(ROOT, 'README.md'), 'utf8'));
  t.deepEqual([...ex.files.keys()].sort(), ['camera.js', 'main.js', 'package.json', 'viewer.js']);
  t.regex(ex.commands, /^npm install$/m);
  t.regex(ex.commands, /^node main\.js$/m);
  const appPkg = JSON.parse(ex.files.get('package.json')!) as { type?: string; dependencies?: Record<string, string> };
  t.is(appPkg.type, 'module', '.js user modules are ES modules');

  const tmp = await mkdtemp(join(tmpdir(), 'dmabuf-sim-readme-'));
  try {
    // The checkout, as the README's commands leave it: dmabuf-sim/ with the packed tarball in it.
    const checkout = join(tmp, 'dmabuf-sim');
    await mkdir(checkout);
    const packed = JSON.parse(
      (await run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', checkout], ROOT)).stdout,
    ) as { filename: string; files: { path: string }[] }[];
    const pack = packed[0]!;
    const shipped = new Set(pack.files.map((f) => f.path));
    const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as {
      exports: unknown;
      bin: Record<string, string>;
      dependencies: Record<string, string>;
    };
    const targets: string[] = [];
    const collect = (v: unknown): void => {
      if (typeof v === 'string') targets.push(v.replace(/^\.\//, ''));
      else if (v && typeof v === 'object') for (const x of Object.values(v)) collect(x);
    };
    collect(pkg.exports);
    collect(pkg.bin);
    for (const target of targets) t.true(shipped.has(target), `the package ships ${target} ("files" in package.json)`);
    t.true(shipped.has('dist/workers/process.js') && shipped.has('dist/workers/broker.js'), 'the workers ship');
    t.false([...shipped].some((p) => p.startsWith('dist/test/') || p.startsWith('src/')), 'tests and sources do not ship');
    t.is(appPkg.dependencies?.['dmabuf-sim'], `file:../dmabuf-sim/${pack.filename}`, 'the README names the tarball npm pack writes');

    // The package's dependencies, packed from this checkout's node_modules (no network).
    const deps = join(tmp, 'deps');
    await mkdir(deps);
    const depTarballs: string[] = [];
    for (const name of Object.keys(pkg.dependencies)) {
      const out = await run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', deps, join(ROOT, 'node_modules', name)], deps);
      depTarballs.push(join(deps, (JSON.parse(out.stdout) as { filename: string }[])[0]!.filename));
    }

    // The empty folder, the README's four files, `npm install` (offline) and `node main.js`.
    const app = join(tmp, 'hello-dmabuf');
    await mkdir(app);
    for (const [name, text] of ex.files) await writeFile(join(app, name), text);
    await run(
      'npm',
      ['install', '--offline', '--no-audit', '--no-fund', '--no-save', '--cache', join(tmp, 'npm-cache'), ...depTarballs],
      app,
    );
    const { stdout, stderr } = await run(process.execPath, ['main.js'], app);
    t.is(stdout, ex.output, `node main.js printed what the README shows (stderr: ${stderr})`);
    t.is(stderr, '', 'and nothing on stderr');
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
});
