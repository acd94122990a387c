/**
 * The public boundary: what Machine exposes (its methods, not the kernel's control object; hooks in
 * dmabuf-sim/testing), errors that keep their code/errno/syscall across the control plane, coded main-thread
 * errors for misuse (a missing module or export at spawn, another machine's process, anything after shutdown).
 */
import test from 'ava';
import { formatHeld, Machine, SyscallError } from '../src/index.js';
import type { Outcome } from './fixtures/dmabuf.js';
import { kunit } from '../src/testing.js';
import { bootChecked, withMachine } from './helpers/sim.js';

const basic = new URL('./fixtures/basic.js', import.meta.url);
const noMain = new URL('./fixtures/no-main.js', import.meta.url);
const dmabuf = new URL('./fixtures/dmabuf.js', import.meta.url);

test('the kernel control object is not public; test hooks are the dmabuf-sim/testing export', async (t) => {
  await withMachine(t, async (m) => {
    // @ts-expect-error Machine has no public kernel proxy (compile-time half of this test)
    t.is(typeof m.kernel?.testDmaBufAddFence, 'function', 'still there at runtime, behind TypeScript’s private');
    const pkg = (await import('dmabuf-sim/testing')) as Record<string, unknown>;
    for (const hook of ['kunit', 'dmaBufAddFence', 'dmaBufCpuAccessAsync', 'dmaBufMapAsync', 'liveObjects', 'beginShutdown', 'fenceTable']) {
      t.is(typeof pkg[hook], 'function', hook);
    }
    t.false('transferFd' in pkg, 'fd passing replaced the transferFd hook');
    t.false(Object.getOwnPropertyNames(Machine.prototype).some((n) => n.startsWith('test')), 'no test hooks on Machine');
  });
});

test('a kernel errno crosses the control plane as a SyscallError with code, errno and syscall', async (t) => {
  await withMachine(t, async (m) => {
    const p = await m.spawn(basic, { name: 'p' });
    const e = await t.throwsAsync(m.socketpair(p, p, 4));
    t.true(e instanceof SyscallError, `${e?.constructor.name}`);
    t.like(e, { code: 'ESOCKTNOSUPPORT', errno: 94, syscall: 'socketpair' });
    const k = await t.throwsAsync(kunit(m, 'no_such_case'));
    t.like(k, { code: 'ERR_DMABUF_SIM_NO_KUNIT_CASE' });
    t.like(await t.throwsAsync(m.debugfs.read('nope')), { code: 'ERR_DMABUF_SIM_NO_DEBUGFS_FILE' });
  });
});

test('a SyscallError thrown in a process reaches Proc.call’s caller as a SyscallError', async (t) => {
  await withMachine(t, async (m) => {
    const p = await m.spawn(basic, { name: 'p' });
    const e = await t.throwsAsync(p.call('closeBadFd'));
    t.true(e instanceof SyscallError, `${e?.constructor.name}`);
    t.like(e, { code: 'EBADF', errno: 9, syscall: 'close', message: 'EBADF: bad file descriptor, close' });
    t.regex(e?.stack ?? '', /closeBadFd/, 'the stack is where it was thrown, in the process');
    const r = await t.throwsAsync(p.call('closeAny', 3.5), { instanceOf: RangeError });
    t.like(r, { code: 'ERR_OUT_OF_RANGE' }, 'an argument error keeps its class and Node code too');
    t.regex(r?.message ?? '', /"fd"/);
  });
});

test('spawn of a missing module or a module without main rejects at spawn, and leaves nothing behind', async (t) => {
  await withMachine(t, async (m) => {
    const missing = await t.throwsAsync(m.spawn(new URL('./fixtures/does-not-exist.js', import.meta.url)));
    t.like(missing, { code: 'ERR_DMABUF_SIM_MODULE_LOAD' });
    t.like((missing?.cause ?? {}) as object, { code: 'ERR_MODULE_NOT_FOUND' });
    const nomain = await t.throwsAsync(m.spawn(noMain, { args: [] }));
    t.like(nomain, { code: 'ERR_DMABUF_SIM_NO_EXPORT' });
    t.regex(nomain?.message ?? '', /no-main\.js has no exported function 'main'$/);
    t.is((await m.stats()).processes, 0, 'both were torn down before spawn rejected');
    const p = await m.spawn(noMain);
    t.is(await p.call('openNull'), 3);
    t.like(await t.throwsAsync(p.call('nosuch')), { code: 'ERR_DMABUF_SIM_NO_EXPORT' });
    // The same for Proc.fork / Proc.thread: the clone's module failing to load rejects the call itself (the child
    // exits with status 1, which the parent's waitpid still sees), instead of resolving to a process about to die.
    const forked = await t.throwsAsync(p.fork(new URL('./fixtures/does-not-exist.js', import.meta.url)));
    t.like(forked, { code: 'ERR_DMABUF_SIM_MODULE_LOAD' });
    t.like(await t.throwsAsync(p.thread(noMain, { args: [] })), { code: 'ERR_DMABUF_SIM_NO_EXPORT' });
  });
});

test('socketpair of processes from two machines throws', async (t) => {
  await withMachine(t, async (m1) => {
    await withMachine(t, async (m2) => {
      const a = await m1.spawn(basic, { name: 'a' });
      const b = await m2.spawn(basic, { name: 'b' });
      t.like(await t.throwsAsync(m1.socketpair(a, b)), { code: 'ERR_DMABUF_SIM_FOREIGN_PROCESS', message: 'process 1 (b) is not a process of this machine' });
      t.like(await t.throwsAsync(kunit(m1, 'dma_buf_fd_get_put', b)), { code: 'ERR_DMABUF_SIM_FOREIGN_PROCESS' });
      t.deepEqual(await a.call('openNull'), 3, 'nothing was installed in a');
    });
  });
});

test('every method after shutdown() says the machine is shut down', async (t) => {
  const m = await bootChecked(t);
  const p = await m.spawn(basic, { name: 'p' });
  await m.shutdown();
  const code = 'ERR_DMABUF_SIM_SHUT_DOWN';
  t.like(await t.throwsAsync(m.spawn(basic)), { code, message: 'spawn: the machine is shut down' });
  t.like(await t.throwsAsync(m.socketpair(p, p)), { code });
  t.like(await t.throwsAsync(m.debugfs.read('dma_buf/bufinfo')), { code });
  t.like(await t.throwsAsync(m.heaps()), { code });
  t.like(await t.throwsAsync(m.dmabufs()), { code });
  t.like(await t.throwsAsync(m.dmabufDump()), { code });
  t.like(await t.throwsAsync(m.stats()), { code });
  t.like(await t.throwsAsync(m.shutdown()), { code });
  t.like(await t.throwsAsync(kunit(m, 'dma_buf_vmap')), { code });
});

test('shutdown() reports what each process still held when it ended (fds, mappings, their calls and stacks)', async (t) => {
  const m = await bootChecked(t, { recordStacks: true });
  const cam = await m.spawn(dmabuf, { name: 'camera' });
  const fd = await cam.call<number>('alloc', 'system', 8192);
  const addr = ((await cam.call<Outcome>('map', fd, 8192)) as { ok: number }).ok;
  const q = await m.spawn(basic, { name: 'quitter' });
  const nul = await q.call<number>('leakNull');
  await t.throwsAsync(q.call('exitNow', 7));
  await q.exited;
  const idle = await m.spawn(basic, { name: 'idle' }); // holds only fds 0–2: not listed
  t.truthy(idle);
  const report = await m.shutdown({ quiet: true });
  t.deepEqual(report.leaks, [], 'exit and kill released everything: nothing leaked');
  t.deepEqual(report.held.map((h) => [h.comm, h.killed, h.exitCode, h.fds.map((f) => f.fd), h.mappings.map((x) => x.address)]), [
    ['camera', true, 1, [fd], [addr]],
    ['quitter', false, 7, [nul], []],
  ]);
  const camera = report.held[0]!;
  t.regex(camera.fds[0]!.what, /^dmabuf \/dmabuf:/);
  t.like(camera.fds[0]!.createdBy, { pid: cam.pid, comm: 'camera', call: 'ioctl(DMA_HEAP_IOCTL_ALLOC)' });
  t.regex(camera.fds[0]!.createdBy.stack ?? '', /^at alloc .*fixtures[/\\]dmabuf\.[jt]s/);
  t.like(camera.mappings[0]!, { length: 8192, createdBy: { pid: cam.pid, call: 'mmap' } });
  t.regex(camera.mappings[0]!.what, /^dmabuf /);
  const text = formatHeld(report.held);
  t.regex(text, /pid \d+ \(camera\) was killed holding 1 fd\(s\) and 1 mapping\(s\):\n  fd 4: dmabuf /);
  t.regex(text, /mapping 0x[0-9a-f]+ \+8192: dmabuf .*\n    created by pid \d+ \(camera\) in mmap, syscall #\d+\n(        at .*\n)*        at map /);
});

test('Machine.boot options are validated, naming the field, before anything starts', async (t) => {
  const cases: [unknown, ErrorConstructor, string, RegExp][] = [
    [42, TypeError, 'ERR_INVALID_ARG_TYPE', /^The "options" argument must be of type object/],
    [{ heap: {} }, TypeError, 'ERR_INVALID_ARG_VALUE', /^The property 'options\.heap' is not an option \(known: heaps, maxSpinners, recordStacks, fences\b/],
    [{ heaps: [] }, TypeError, 'ERR_INVALID_ARG_TYPE', /"options\.heaps" property must be/],
    [{ heaps: { 'a/b': {} } }, TypeError, 'ERR_INVALID_ARG_VALUE', /'options\.heaps\.a\/b' must be named by 1 to 64 characters/],
    [{ heaps: { reserved: { sizeBytes: '1M' } } }, TypeError, 'ERR_INVALID_ARG_TYPE', /"options\.heaps\.reserved\.sizeBytes" property must be of type number/],
    [{ heaps: { reserved: { sizeBytes: 100 } } }, RangeError, 'ERR_OUT_OF_RANGE', /"options\.heaps\.reserved\.sizeBytes" is out of range. It must be an integer >= 4096/],
    [{ heaps: { reserved: { size: 1 << 20 } } }, TypeError, 'ERR_INVALID_ARG_VALUE', /'options\.heaps\.reserved\.size' is not an option/],
    [{ maxSpinners: 1.5 }, RangeError, 'ERR_OUT_OF_RANGE', /"options\.maxSpinners"/],
    [{ maxSpinners: -1 }, RangeError, 'ERR_OUT_OF_RANGE', /"options\.maxSpinners"/],
    [{ recordStacks: 'yes' }, TypeError, 'ERR_INVALID_ARG_TYPE', /"options\.recordStacks" property must be of type boolean/],
    [{ driverLanes: 1 }, TypeError, 'ERR_INVALID_ARG_TYPE', /"options\.driverLanes" property must be of type boolean/],
    [{ fences: { slot: 64 } }, TypeError, 'ERR_INVALID_ARG_VALUE', /'options\.fences\.slot' is not an option/],
  ];
  for (const [opts, cls, code, re] of cases) {
    const e = await t.throwsAsync(Machine.boot(opts as never), { instanceOf: cls }, JSON.stringify(opts));
    t.is((e as Error & { code?: string }).code, code, JSON.stringify(opts));
    t.regex(e?.message ?? '', re);
  }
});

test('spawn options are validated, naming the field', async (t) => {
  await withMachine(t, async (m) => {
    const cases: [unknown, unknown, ErrorConstructor, string, RegExp][] = [
      [42, {}, TypeError, 'ERR_INVALID_ARG_TYPE', /"module" argument must be of type string or an instance of URL/],
      [basic, { nmae: 'x' }, TypeError, 'ERR_INVALID_ARG_VALUE', /'options\.nmae' is not an option/],
      [basic, { name: '' }, TypeError, 'ERR_INVALID_ARG_VALUE', /'options\.name' must be a non-empty string/],
      [basic, { args: 'main' }, TypeError, 'ERR_INVALID_ARG_TYPE', /"options\.args" property must be an instance of Array/],
      [basic, { nofile: 2 }, RangeError, 'ERR_OUT_OF_RANGE', /"options\.nofile" is out of range. It must be an integer >= 3/],
      [basic, { nofile: NaN }, RangeError, 'ERR_OUT_OF_RANGE', /"options\.nofile"/],
      [basic, { kernelFences: 'yes' }, TypeError, 'ERR_INVALID_ARG_TYPE', /"options\.kernelFences" property must be of type boolean/],
    ];
    for (const [mod, opts, cls, code, re] of cases) {
      const e = await t.throwsAsync(m.spawn(mod as never, opts as never), { instanceOf: cls });
      t.is((e as Error & { code?: string }).code, code);
      t.regex(e?.message ?? '', re);
    }
    t.is((await m.stats()).processes, 0, 'nothing was created');
  });
});
