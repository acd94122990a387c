/**
 * Golden tests of /sys/kernel/debug/dma_buf/bufinfo (byte for byte the format of dma_buf_debug_show) and of the
 * dmabuf_dump view (Android's dmabuf_dump raw output: per process, totals, buffer × process table).
 */
import test from 'ava';
import { uapi } from '../src/index.js';
import type { Outcome } from './fixtures/dmabuf.js';
import { kunit } from '../src/testing.js';
import { bootFor, passFd, shutdownClean } from './helpers/sim.js';

const fixture = new URL('./fixtures/dmabuf.js', import.meta.url);
const HEADER = '\nDma-buf Objects:\nsize    \tflags   \tmode    \tcount   \texp_name\tino     \tname\n';

test.serial('bufinfo: empty', async (t) => {
  const m = await bootFor(t);
  t.is(await m.debugfs.read('dma_buf/bufinfo'), `${HEADER}\nTotal 0 objects, 0 bytes\n`);
  // The same text through the file, from a process.
  const p = await m.spawn(fixture, { name: 'reader' });
  t.is(await p.call('readFile', '/sys/kernel/debug/dma_buf/bufinfo'), `${HEADER}\nTotal 0 objects, 0 bytes\n`);
  await shutdownClean(t, m);
});

test.serial('bufinfo: buffers newest first, flags, mode, counts, names (none, named, "")', async (t) => {
  const m = await bootFor(t);
  const p = await m.spawn(fixture, { name: 'golden' });
  const a = await p.call<number>('alloc', 'system', 4096); // ino 1
  await p.call('setName', a, 'camera-frame');
  const a2 = await p.call<number>('dup', a);
  await p.call('fcntl', a, uapi.F_SETFL, uapi.O_NONBLOCK);
  const b = await p.call<number>('alloc', 'reserved', 1 << 20, uapi.O_RDONLY | uapi.O_CLOEXEC); // ino 2
  const addr = ((await p.call<Outcome>('map', b, 1 << 20, uapi.PROT_READ)) as { ok: number }).ok;
  const c = await p.call<number>('alloc', 'system', 5000, uapi.O_RDWR); // ino 3, 8192 bytes
  await p.call('setName', c, '');

  const none = '\tAttached Devices:\nTotal 0 devices attached\n\n';
  t.is(
    await m.debugfs.read('dma_buf/bufinfo'),
    HEADER +
      '00008192\t00000002\t00080007\t00000001\tsystem\t00000003\t\n' +
      none +
      '01048576\t00000000\t00080005\t00000002\treserved\t00000002\t<none>\n' +
      none +
      '00004096\t00000802\t00080007\t00000002\tsystem\t00000001\tcamera-frame\n' +
      none +
      '\nTotal 3 objects, 1060864 bytes\n',
  );

  await p.call('close', c);
  await p.call('close', b);
  await p.call('setName', a, 'renamed');
  t.is(
    await m.debugfs.read('dma_buf/bufinfo'),
    HEADER +
      '01048576\t00000000\t00080005\t00000001\treserved\t00000002\t<none>\n' +
      none +
      '00004096\t00000802\t00080007\t00000002\tsystem\t00000001\trenamed\n' +
      none +
      '\nTotal 2 objects, 1052672 bytes\n',
    'mapping keeps ino 2 alive; rename shows',
  );
  await p.call('unmap', addr);
  await p.call('close', a);
  await p.call('close', a2);
  t.is(await m.debugfs.read('dma_buf/bufinfo'), `${HEADER}\nTotal 0 objects, 0 bytes\n`);
  await shutdownClean(t, m);
});

test.serial('bufinfo: attached devices (in-kernel importers)', async (t) => {
  const m = await bootFor(t);
  const r = await kunit(m, 'bufinfo_attached');
  t.deepEqual(r.failures, []);
  t.is(
    r.output,
    HEADER +
      '00004096\t00000000\t00080005\t00000001\treserved\t00000002\t<none>\n' +
      '\tAttached Devices:\n\tcamera.0\nTotal 1 devices attached\n\n' +
      '00008192\t00000002\t00080007\t00000001\tsystem\t00000001\tscanout\n' +
      '\tAttached Devices:\n\tdisplay.0\n\tgpu.0\nTotal 2 devices attached\n\n' +
      '\nTotal 2 objects, 12288 bytes\n',
  );
  t.is(await m.debugfs.read('dma_buf/bufinfo'), `${HEADER}\nTotal 0 objects, 0 bytes\n`, 'all released after the test');
  await shutdownClean(t, m);
});

test.serial('dmabuf_dump: per-process Rss/Pss, totals, buffer × process table', async (t) => {
  const m = await bootFor(t);
  t.is(await m.dmabufDump(), 'dmabuf info not found ¯\\_(ツ)_/¯\n');
  const prod = await m.spawn(fixture, { name: 'producer' });
  const cons = await m.spawn(fixture, { name: 'consumer' });
  const x = await prod.call<number>('alloc', 'system', 1 << 20); // ino 1, fd 4
  await prod.call('setName', x, 'frame');
  const px = ((await prod.call<Outcome>('map', x, 1 << 20)) as { ok: number }).ok;
  const y = await prod.call<number>('alloc', 'reserved', 64 << 10); // ino 2
  const cx = await passFd(m, prod, x, cons);
  const c1 = ((await cons.call<Outcome>('map', cx, 1 << 20)) as { ok: number }).ok;
  const c2 = ((await cons.call<Outcome>('map', cx, 4096)) as { ok: number }).ok;

  const expected =
    '        producer:1    \n' +
    '                  Name              Rss              Pss         nr_procs            Inode               Exporter\n' +
    '                 frame          1024 kB           512 kB                2                1                  system\n' +
    '             <unknown>            64 kB            64 kB                1                2                reserved\n' +
    '         PROCESS TOTAL          1088 kB           576 kB                 \n' +
    '----------------------\n' +
    '        consumer:2    \n' +
    '                  Name              Rss              Pss         nr_procs            Inode               Exporter\n' +
    '                 frame          1024 kB           512 kB                2                1                  system\n' +
    '         PROCESS TOTAL          1024 kB           512 kB                 \n' +
    '----------------------\n' +
    'dmabuf total: 1088 kB kernel_rss: 0 kB userspace_rss: 2112 kB userspace_pss: 1088 kB\n' +
    '\n----------------------- DMA-BUF Table buffer x process --------------------------\n' +
    '    Dmabuf Inode |            Size |   Fd Ref Counts |  Map Ref Counts |        producer:1     |        consumer:2     |\n' +
    '               1 |         1024 kB |               2 |               2 |        1(     1) refs |        1(     2) refs |\n' +
    '               2 |           64 kB |               1 |               0 |        1(     0) refs |                    -- |\n' +
    '------------------------------------\n' +
    'TOTALS                     1088 kB |             n/a |             n/a |               1088 kB |               1024 kB |\n';
  t.is(await m.dmabufDump(), expected);
  t.is(await m.debugfs.read('dmabuf_dump'), expected, 'the same through debugfs');

  // A buffer only the kernel holds (no fd, no mapping in any process) counts as kernel_rss.
  const k = await kunit(m, 'dmabuf_dump_kernel_held');
  t.true(k.ok);
  t.is(
    k.output,
    expected.replace(
      'dmabuf total: 1088 kB kernel_rss: 0 kB',
      'dmabuf total: 1092 kB kernel_rss: 4 kB',
    ),
  );
  await cons.call('unmap', c1);
  await cons.call('unmap', c2);
  await cons.call('close', cx);
  await prod.call('unmap', px);
  await prod.call('close', x);
  await prod.call('close', y);
  t.is(await m.dmabufDump(), 'dmabuf info not found ¯\\_(ツ)_/¯\n');
  await shutdownClean(t, m);
});
