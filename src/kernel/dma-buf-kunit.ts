/**
 * In-kernel self-tests of the dma-buf exporter/importer API (export checks, fd/get/put, attach/map caching,
 * dynamic importers, CPU access, vmap counting and its BUGs, the reservation object and its implicit fences) and
 * of the heaps' dma-buf ops, run on demand (kunit.ts). A mock exporter counts every op the core calls.
 */
import { KernelError } from '../errors.js';
import { DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE } from './dma-direction.js';
import { E } from '../uapi/errno.js';
import { O_APPEND, O_CLOEXEC, O_NONBLOCK, O_RDWR, PAGE_SIZE, POLLIN, POLLOUT } from '../uapi/posix.js';
import {
  IoMem,
  IosysMap,
  SgTable,
  dmaBufAttach,
  dmaBufBeginCpuAccess,
  dmaBufDebugShow,
  dmaBufDetach,
  dmaBufDynamicAttach,
  dmaBufEndCpuAccess,
  dmaBufFops,
  dmaBufExport,
  dmaBufFd,
  dmaBufGet,
  dmaBufList,
  dmaBufMapAttachment,
  dmaBufMoveNotify,
  dmaBufPin,
  dmaBufPut,
  dmaBufUnmapAttachment,
  dmaBufVmap,
  dmaBufVunmap,
  type DmaBuf,
  type DmaBufAttachment,
  type DmaBufOps,
} from './dma-buf.js';
import { dmaHeapFind } from './dma-heap.js';
import {
  DMA_RESV_USAGE_BOOKKEEP,
  DMA_RESV_USAGE_KERNEL,
  DMA_RESV_USAGE_READ,
  DMA_RESV_USAGE_WRITE,
  type DmaResv,
  type DmaResvUsage,
  dmaResvAddFence,
  dmaResvEntries,
  dmaResvFini,
  dmaResvInit,
  dmaResvLock,
  dmaResvReserveFences,
  dmaResvUnlock,
} from '../fence/dma-resv.js';
import {
  type DmaFence,
  dmaFenceContextAlloc,
  dmaFenceInit,
  dmaFencePut,
  dmaFenceRemoveCallback,
  dmaFenceSignal,
} from '../fence/dma-fence.js';
import { dmabufDump } from './dmabuf-dump.js';
import { FMODE_LSEEK, FMODE_READ, FMODE_WRITE, type PollTable } from './file.js';
import type { HeapBuffer } from './heaps/heap-helpers.js';
import type { Kernel } from './kernel.js';
import type { ShmRegion } from './mm.js';
import type { KunitContext, KunitSuite } from './kunit.js';

/** What the mock exporter saw. */
interface MockPriv {
  readonly region: ShmRegion;
  /** Every op call, in order, e.g. "map:1", "unmap:1", "detach", "release". */
  readonly calls: string[];
  vmapFails: boolean;
  iomem: boolean;
}

const count = (p: MockPriv, op: string): number => p.calls.filter((c) => c === op || c.startsWith(op + ':')).length;

function mockOps(extra: Partial<DmaBufOps<MockPriv>> = {}): DmaBufOps<MockPriv> {
  return {
    attach(buf, att) {
      buf.priv.calls.push('attach');
      if (att.dev.name === 'refuses') throw new KernelError(E.ENODEV);
    },
    detach(buf) {
      buf.priv.calls.push('detach');
    },
    mapDmaBuf(att, dir) {
      const p = att.dmabuf.priv;
      p.calls.push(`map:${dir}`);
      return new SgTable([{ region: p.region, offset: 0, length: p.region.size }]);
    },
    unmapDmaBuf(att, _sgt, dir) {
      att.dmabuf.priv.calls.push(`unmap:${dir}`);
    },
    release(buf) {
      buf.priv.calls.push('release');
    },
    beginCpuAccess(buf, dir) {
      buf.priv.calls.push(`begin:${dir}`);
    },
    endCpuAccess(buf, dir) {
      buf.priv.calls.push(`end:${dir}`);
    },
    vmap(buf) {
      const p = buf.priv;
      p.calls.push('vmap');
      if (p.vmapFails) throw new KernelError(E.ENOMEM);
      return p.iomem ? IosysMap.fromIomem(new IoMem(p.region.bytes())) : IosysMap.fromVaddr(p.region.bytes());
    },
    vunmap(buf) {
      buf.priv.calls.push('vunmap');
    },
    ...extra,
  };
}

function mockExport(
  k: Kernel,
  ops: DmaBufOps<MockPriv> = mockOps(),
  size = 4 * PAGE_SIZE,
  flags = O_RDWR,
  resv?: DmaResv,
): DmaBuf<MockPriv> {
  const region = k.newRegion(new SharedArrayBuffer(size), 0, size);
  const priv: MockPriv = { region, calls: [], vmapFails: false, iomem: false };
  return dmaBufExport(k, { ops, size, flags, priv, expName: 'mock_exporter', ...(resv ? { resv } : {}) });
}

// ---- implicit fences (st-dma-resv style, on dma-bufs) ----------------------------------------------------------

const kunitFenceOps = { driverName: 'kunit', timelineName: 'mock' };

/** A new unsignaled fence on its own context; signalled (if needed) and put at the end of the test. */
function mockFence(ctx: KunitContext, seqno = 1): DmaFence {
  const f = dmaFenceInit(kunitFenceOps, dmaFenceContextAlloc(1), seqno);
  ctx.defer(() => {
    dmaFenceSignal(f);
    dmaFencePut(f);
  });
  return f;
}

/** What a driver does after queueing work: lock, reserve, add (the resv takes its own reference), unlock. */
function addFence(resv: DmaResv, f: DmaFence, usage: DmaResvUsage): void {
  dmaResvLock(resv);
  try {
    if (dmaResvReserveFences(resv, 1)) throw new Error('dma_resv_reserve_fences failed');
    dmaResvAddFence(resv, f, usage);
  } finally {
    dmaResvUnlock(resv);
  }
}

/** A poll table asking for `events` (poll(2)'s _key), registering nowhere. */
const pollFor = (events: number): PollTable => ({ wait: () => {}, key: events });

/** Puts `buf` at the end of the test unless the test already did. */
function putLater(k: Kernel, ctx: KunitContext, buf: DmaBuf): void {
  ctx.defer(() => {
    if (buf.file.count > 0) dmaBufPut(k, buf);
  });
}

function exportChecks(k: Kernel, ctx: KunitContext): void {
  const base = mockOps();
  const without = (drop: keyof DmaBufOps<MockPriv>): DmaBufOps<MockPriv> => {
    const o: Partial<DmaBufOps<MockPriv>> = { ...base };
    delete o[drop];
    return o as DmaBufOps<MockPriv>;
  };
  const warned = ctx.expectWarnings(/^dma_buf_export: WARN_ON/, () => {
    ctx.expectErrno(E.EINVAL, () => mockExport(k, without('mapDmaBuf')), 'export without map_dma_buf');
    ctx.expectErrno(E.EINVAL, () => mockExport(k, without('unmapDmaBuf')), 'export without unmap_dma_buf');
    ctx.expectErrno(E.EINVAL, () => mockExport(k, without('release')), 'export without release');
    ctx.expectErrno(
      E.EINVAL,
      () => dmaBufExport(k, { ops: base, size: PAGE_SIZE, flags: O_RDWR, priv: null, expName: 'mock_exporter' }),
      'export without priv',
    );
    const pin = (): void => {};
    ctx.expectErrno(E.EINVAL, () => mockExport(k, { ...base, cacheSgtMapping: true, pin, unpin: pin }), 'cache_sgt_mapping with pin/unpin');
    ctx.expectErrno(E.EINVAL, () => mockExport(k, { ...base, pin }), 'pin without unpin');
    ctx.expectErrno(E.EINVAL, () => mockExport(k, { ...base, unpin: pin }), 'unpin without pin');
  });
  ctx.expect(warned.length === 7, `7 WARN_ONs (got ${warned.length})`);
  ctx.expect(dmaBufList(k).length === 0, 'failed exports leave nothing on the list');

  const a = mockExport(k, base, PAGE_SIZE, O_RDWR | O_CLOEXEC | O_NONBLOCK | O_APPEND);
  putLater(k, ctx, a);
  const b = mockExport(k, base, 2 * PAGE_SIZE, 0);
  putLater(k, ctx, b);
  ctx.expect(b.ino === a.ino + 1, `inode numbers from a counter (${a.ino}, ${b.ino})`);
  ctx.expect(a.file.count === 1, 'export returns one file reference');
  ctx.expect(a.file.flags === (O_RDWR | O_NONBLOCK), `f_flags keep O_ACCMODE|O_NONBLOCK (got 0${a.file.flags.toString(8)})`);
  ctx.expect(a.file.fmode === (FMODE_READ | FMODE_WRITE | FMODE_LSEEK), 'O_RDWR → FMODE_READ|FMODE_WRITE|FMODE_LSEEK');
  ctx.expect(b.file.fmode === (FMODE_READ | FMODE_LSEEK), 'O_RDONLY → FMODE_READ|FMODE_LSEEK');
  ctx.expect(dmaBufList(k)[0] === b && dmaBufList(k)[1] === a, 'global list is newest first');
  ctx.expect(k.tracker.count('dma_buf') === 2, 'both tracked as dma_buf');
  dmaBufPut(k, a);
  ctx.expect(count(a.priv, 'release') === 1, 'last put runs release');
  ctx.expect(!dmaBufList(k).includes(a as DmaBuf), 'released buffer left the list');
  ctx.expect(k.tracker.count('dma_buf') === 1, 'released buffer untracked');
}

function fdGetPut(k: Kernel, ctx: KunitContext): void {
  const t = ctx.task;
  if (!t) throw new Error('dma_buf_fd_get_put needs a process (pass its pid)');
  const buf = mockExport(k);
  let fd = -1;
  ctx.defer(() => {
    if (fd >= 0 && t.getFd(fd)) k.closeFd(t, fd);
  });
  fd = dmaBufFd(k, t, buf, O_CLOEXEC | O_NONBLOCK);
  ctx.expect(buf.file.count === 1, 'dma_buf_fd consumes the reference');
  ctx.expect(t.getFd(fd)?.cloexec === true, 'O_CLOEXEC honoured');
  const got = dmaBufGet(k, t, fd);
  ctx.expect(got === (buf as DmaBuf) && buf.file.count === 2, 'dma_buf_get: same buffer, +1 reference');
  dmaBufPut(k, got);
  ctx.expect(buf.file.count === 1, 'dma_buf_put: -1 reference');
  ctx.expectErrno(E.EBADF, () => dmaBufGet(k, t, 999), 'dma_buf_get on a closed fd');
  ctx.expectErrno(E.EBADF, () => dmaBufGet(k, t, -1), 'dma_buf_get on fd -1');
  ctx.expectErrno(E.EINVAL, () => dmaBufGet(k, t, 0), 'dma_buf_get on /dev/null');
  ctx.expectErrno(E.EINVAL, () => dmaBufFd(k, t, null, 0), 'dma_buf_fd(NULL)');

  // EMFILE: the reference is not consumed; the caller puts it, which releases the buffer.
  const other = mockExport(k);
  const saved = t.nofileCur;
  t.nofileCur = t.openFdCount();
  try {
    ctx.expectErrno(E.EMFILE, () => dmaBufFd(k, t, other, 0), 'dma_buf_fd with a full table');
  } finally {
    t.nofileCur = saved;
  }
  ctx.expect(other.file.count === 1 && count(other.priv, 'release') === 0, 'EMFILE leaves the reference with the caller');
  dmaBufPut(k, other);
  ctx.expect(count(other.priv, 'release') === 1, 'the caller’s put releases it');
  k.closeFd(t, fd);
  fd = -1;
  ctx.expect(count(buf.priv, 'release') === 1, 'close of the last fd releases');
}

function attachMapCached(k: Kernel, ctx: KunitContext): void {
  const buf = mockExport(k, mockOps({ cacheSgtMapping: true }));
  putLater(k, ctx, buf);
  const p = buf.priv;
  const a = dmaBufAttach(k, buf, { name: 'dev-a' });
  ctx.expect(buf.file.count === 1, 'attach takes no file reference');
  ctx.expect(k.tracker.count('dma_buf_attachment') === 1, 'attachment tracked');
  const s1 = dmaBufMapAttachment(k, a, DMA_TO_DEVICE);
  const s2 = dmaBufMapAttachment(k, a, DMA_TO_DEVICE);
  ctx.expect(s1 === s2 && count(p, 'map') === 1, 'repeat map returns the cached table without calling the exporter');
  ctx.expectErrno(E.EBUSY, () => dmaBufMapAttachment(k, a, DMA_FROM_DEVICE), 'other direction than the cached one');
  ctx.expectErrno(E.EBUSY, () => dmaBufMapAttachment(k, a, DMA_BIDIRECTIONAL), 'BIDIRECTIONAL over a TO_DEVICE cache');
  dmaBufUnmapAttachment(k, a, s1, DMA_TO_DEVICE);
  ctx.expect(count(p, 'unmap') === 0, 'unmapping the cached table is a no-op');

  const b = dmaBufAttach(k, buf, { name: 'dev-b' });
  const sb = dmaBufMapAttachment(k, b, DMA_BIDIRECTIONAL);
  ctx.expect(dmaBufMapAttachment(k, b, DMA_FROM_DEVICE) === sb, 'a BIDIRECTIONAL cache serves every direction');
  ctx.expect(buf.attachments[0] === b && buf.attachments[1] === a, 'attachments newest first');

  p.calls.length = 0;
  dmaBufDetach(k, buf, a);
  ctx.expect(p.calls.join(',') === `unmap:${DMA_TO_DEVICE},detach`, `detach unmaps the cached table first (calls: ${p.calls.join(',')})`);
  dmaBufDetach(k, buf, b);
  ctx.expect(buf.attachments.length === 0 && k.tracker.count('dma_buf_attachment') === 0, 'detached and untracked');

  ctx.expectErrno(E.ENODEV, () => dmaBufAttach(k, buf, { name: 'refuses' }), 'exporter refuses the device');
  ctx.expect(buf.attachments.length === 0 && k.tracker.count('dma_buf_attachment') === 0, 'a refused attach leaves nothing');
}

function attachMapUncached(k: Kernel, ctx: KunitContext): void {
  const buf = mockExport(k);
  putLater(k, ctx, buf);
  const p = buf.priv;
  const a = dmaBufAttach(k, buf, { name: 'dev-a' });
  ctx.defer(() => dmaBufDetach(k, buf, a));
  const s1 = dmaBufMapAttachment(k, a, DMA_TO_DEVICE);
  const s2 = dmaBufMapAttachment(k, a, DMA_FROM_DEVICE);
  ctx.expect(s1 !== s2 && count(p, 'map') === 2, 'without caching every map reaches the exporter, any direction');
  dmaBufUnmapAttachment(k, a, s1, DMA_TO_DEVICE);
  dmaBufUnmapAttachment(k, a, s2, DMA_FROM_DEVICE);
  ctx.expect(count(p, 'unmap') === 2, 'every unmap reaches the exporter');
  ctx.expect(a.sgt === null, 'nothing cached');
}

function dynamic(k: Kernel, ctx: KunitContext): void {
  const pinOps = (): Partial<DmaBufOps<MockPriv>> => ({
    pin: (att) => void att.dmabuf.priv.calls.push('pin'),
    unpin: (att) => void att.dmabuf.priv.calls.push('unpin'),
  });
  // Dynamic exporter, static importer: pinned and mapped BIDIRECTIONAL at attach, cached until detach.
  const dyn = mockExport(k, mockOps(pinOps()));
  putLater(k, ctx, dyn);
  const st = dmaBufAttach(k, dyn, { name: 'static-importer' });
  ctx.expect(dyn.priv.calls.join(',') === `attach,pin,map:${DMA_BIDIRECTIONAL}`, `static on dynamic: attach pins and maps (${dyn.priv.calls.join(',')})`);
  ctx.expect(st.sgt !== null && st.dir === DMA_BIDIRECTIONAL, 'mapping cached BIDIRECTIONAL');
  ctx.expect(dmaBufMapAttachment(k, st, DMA_TO_DEVICE) === st.sgt, 'map returns the attach-time table');
  dyn.priv.calls.length = 0;
  dmaBufDetach(k, dyn, st);
  ctx.expect(dyn.priv.calls.join(',') === `unmap:${DMA_BIDIRECTIONAL},unpin,detach`, `detach unmaps and unpins (${dyn.priv.calls.join(',')})`);

  // Dynamic importer on a dynamic exporter: nothing at attach; map pins (no move notify), unmap unpins.
  const notified: string[] = [];
  const importer = { moveNotify: (att: DmaBufAttachment<MockPriv>) => void notified.push(att.dev.name) };
  dyn.priv.calls.length = 0;
  const d = dmaBufDynamicAttach(k, dyn, { name: 'dynamic-importer' }, importer, 'importer-priv');
  ctx.defer(() => dmaBufDetach(k, dyn, d));
  ctx.expect(dyn.priv.calls.join(',') === 'attach' && d.sgt === null, 'dynamic on dynamic: attach maps nothing');
  const s = dmaBufMapAttachment(k, d, DMA_FROM_DEVICE);
  dmaBufUnmapAttachment(k, d, s, DMA_FROM_DEVICE);
  ctx.expect(
    dyn.priv.calls.join(',') === `attach,pin,map:${DMA_FROM_DEVICE},unmap:${DMA_FROM_DEVICE},unpin`,
    `map pins, unmap unpins (${dyn.priv.calls.join(',')})`,
  );
  dmaBufMoveNotify(k, dyn);
  ctx.expect(notified.join(',') === 'dynamic-importer', 'move_notify reaches dynamic importers');
  ctx.expect(d.importerPriv === 'importer-priv', 'importer_priv kept');

  // Dynamic importer on a static exporter: mapped BIDIRECTIONAL at attach, no pin.
  const stat = mockExport(k);
  putLater(k, ctx, stat);
  const d2 = dmaBufDynamicAttach(k, stat, { name: 'dynamic-importer' }, importer);
  ctx.expect(stat.priv.calls.join(',') === `attach,map:${DMA_BIDIRECTIONAL}` && d2.sgt !== null, 'dynamic on static: cached at attach');
  dmaBufDetach(k, stat, d2);

  const st2 = dmaBufAttach(k, stat, { name: 'static' });
  const warned = ctx.expectWarnings(/^dma_buf_(dynamic_attach|pin): WARN_ON/, () => {
    ctx.expectErrno(
      E.EINVAL,
      () => dmaBufDynamicAttach(k, stat, { name: 'x' }, {} as unknown as typeof importer),
      'importer ops without move_notify',
    );
    dmaBufPin(k, st2);
  });
  ctx.expect(warned.length === 2, 'both misuses WARN');
  dmaBufDetach(k, stat, st2);
}

function cpuAccess(k: Kernel, ctx: KunitContext): void {
  const buf = mockExport(k);
  putLater(k, ctx, buf);
  dmaBufBeginCpuAccess(k, buf, DMA_FROM_DEVICE);
  dmaBufEndCpuAccess(k, buf, DMA_FROM_DEVICE);
  dmaBufEndCpuAccess(k, buf, DMA_TO_DEVICE);
  ctx.expect(
    buf.priv.calls.join(',') === `begin:${DMA_FROM_DEVICE},end:${DMA_FROM_DEVICE},end:${DMA_TO_DEVICE}`,
    'begin/end reach the exporter; an unpaired end is accepted',
  );
  const failing = mockExport(k, mockOps({ beginCpuAccess: () => { throw new KernelError(E.EINTR); } }));
  putLater(k, ctx, failing);
  ctx.expectErrno(E.EINTR, () => dmaBufBeginCpuAccess(k, failing, DMA_BIDIRECTIONAL), 'exporter error returned');
}

function vmap(k: Kernel, ctx: KunitContext): void {
  const none = mockExport(k, mockOps({ vmap: undefined, vunmap: undefined }));
  putLater(k, ctx, none);
  ctx.expectErrno(E.EINVAL, () => dmaBufVmap(k, none), 'vmap without ops.vmap');

  const buf = mockExport(k);
  putLater(k, ctx, buf);
  const m1 = dmaBufVmap(k, buf);
  const m2 = dmaBufVmap(k, buf);
  ctx.expect(m1.isEqual(m2) && count(buf.priv, 'vmap') === 1 && buf.vmappingCounter === 2, 'second vmap: same mapping, exporter not called');
  ctx.expect(!m1.isIomem && m1.vaddr !== null && m1.vaddr.length === buf.size, 'system memory mapping of the whole buffer');
  dmaBufVunmap(k, buf, m2);
  ctx.expect(count(buf.priv, 'vunmap') === 0 && buf.vmappingCounter === 1, 'first vunmap only counts down');
  dmaBufVunmap(k, buf, m1);
  ctx.expect(count(buf.priv, 'vunmap') === 1 && buf.vmapPtr.isNull, 'last vunmap calls the exporter and clears the mapping');

  const io = mockExport(k);
  putLater(k, ctx, io);
  io.priv.iomem = true;
  const mi = dmaBufVmap(k, io);
  ctx.expect(mi.isIomem && mi.vaddr === null && mi.vaddrIomem !== null, 'I/O memory mapping has no plain vaddr');
  mi.vaddrIomem!.memcpyToIo(8, new Uint8Array([1, 2, 3]));
  ctx.expect(mi.vaddrIomem!.memcpyFromIo(8, 3).join(',') === '1,2,3', 'I/O memory through the accessors');
  dmaBufVunmap(k, io, mi);

  const bad = mockExport(k);
  putLater(k, ctx, bad);
  bad.priv.vmapFails = true;
  const warned = ctx.expectWarnings(/^dma_buf_vmap: WARN_ON_ONCE/, () => {
    ctx.expectErrno(E.ENOMEM, () => dmaBufVmap(k, bad), 'exporter vmap failure returned');
    ctx.expect(bad.vmappingCounter === 0 && bad.vmapPtr.isNull, 'failed vmap leaves nothing counted');
    ctx.expectErrno(E.ENOMEM, () => dmaBufVmap(k, bad), 'second failure');
  });
  ctx.expect(warned.length <= 1, 'WARN_ON_ONCE');
}

/** Deliberately BUG()s: vunmap of a mapping the core never handed out. The runner records the oops. */
function vunmapBug(k: Kernel, ctx: KunitContext): void {
  const buf = mockExport(k);
  putLater(k, ctx, buf);
  const m = dmaBufVmap(k, buf);
  ctx.defer(() => dmaBufVunmap(k, buf, m));
  const other = IosysMap.fromVaddr(new Uint8Array(16));
  ctx.expectBug(/^BUG: dma_buf_vunmap: .* unmapping a different mapping$/);
  dmaBufVunmap(k, buf, other); // BUG_ON(!iosys_map_is_equal(&dmabuf->vmap_ptr, map))
  ctx.expect(false, 'vunmap of a foreign mapping returned');
}

/** Releasing a buffer that still has an attachment is a WARN (the attachment is the importer's leak). */
function releaseWithAttachment(k: Kernel, ctx: KunitContext): void {
  const buf = mockExport(k);
  const att = dmaBufAttach(k, buf, { name: 'forgetful-importer' });
  const warned = ctx.expectWarnings(/^dma_buf_release: WARN_ON\(!list_empty\(&dmabuf->attachments\)\)/, () => dmaBufPut(k, buf));
  ctx.expect(count(buf.priv, 'release') === 1, 'release still runs');
  ctx.expect(warned.length === 1, 'WARN_ON(attachments)');
  // The importer's leaked attachment: the test frees it, as the importer should have (by detaching first).
  k.tracker.remove(att.trackId);
}

function heapApi(k: Kernel, ctx: KunitContext): void {
  for (const name of ['system', 'reserved']) {
    const heap = dmaHeapFind(k, name);
    if (!heap) {
      ctx.log(`no heap ${name}: skipped`);
      continue;
    }
    const len = (1 << 20) + (64 << 10) + 4096;
    const buf = heap.ops.allocate(k, heap, len, O_RDWR, 0n) as DmaBuf<HeapBuffer>;
    putLater(k, ctx, buf);
    const hb = buf.priv;
    ctx.expect(buf.expName === name && buf.size === len, `${name}: exp_name is the heap name, size the length`);
    const chunks = hb.sgTable.sgl.map((s) => s.length).join(',');
    const want = name === 'system' ? `${1 << 20},${64 << 10},4096` : String(len);
    ctx.expect(chunks === want, `${name}: sg_table chunks ${chunks} (want ${want})`);
    const a = dmaBufAttach(k, buf, { name: 'gpu.0' });
    const b = dmaBufAttach(k, buf, { name: 'isp.0' });
    ctx.defer(() => {
      dmaBufDetach(k, buf, a);
      dmaBufDetach(k, buf, b);
    });
    const sa = dmaBufMapAttachment(k, a, DMA_BIDIRECTIONAL);
    const sb = dmaBufMapAttachment(k, b, DMA_TO_DEVICE);
    ctx.expect(sa !== sb && sa !== hb.sgTable && sa.nents === hb.sgTable.nents, `${name}: each attachment has its own sg_table copy`);
    ctx.expect(sa.sgl.every((s, i) => s.region === hb.sgTable.sgl[i]!.region && s.offset === hb.sgTable.sgl[i]!.offset), `${name}: same pages`);
    dmaBufBeginCpuAccess(k, buf, DMA_FROM_DEVICE);
    dmaBufEndCpuAccess(k, buf, DMA_FROM_DEVICE);
    const [ha, hbAtt] = [a.priv, b.priv] as { syncsForCpu: number; syncsForDevice: number }[];
    ctx.expect(ha!.syncsForCpu === 1 && hbAtt!.syncsForCpu === 1 && ha!.syncsForDevice === 1, `${name}: CPU access syncs every mapped attachment`);
    dmaBufUnmapAttachment(k, b, sb, DMA_TO_DEVICE);
    dmaBufBeginCpuAccess(k, buf, DMA_BIDIRECTIONAL);
    ctx.expect(ha!.syncsForCpu === 2 && hbAtt!.syncsForCpu === 1, `${name}: unmapped attachments are not synced`);
    dmaBufUnmapAttachment(k, a, sa, DMA_BIDIRECTIONAL);
    const m1 = dmaBufVmap(k, buf);
    const m2 = dmaBufVmap(k, buf);
    ctx.expect(hb.vmapCnt === 1 && buf.vmappingCounter === 2, `${name}: the core counts repeat vmaps itself`);
    dmaBufBeginCpuAccess(k, buf, DMA_FROM_DEVICE);
    ctx.expect(hb.vmapInvalidates === 1, `${name}: CPU access invalidates the vmap range`);
    m1.vaddr![0] = 0x5a;
    ctx.expect(hb.region.bytes()[0] === 0x5a, `${name}: vmap is the buffer's memory`);
    m1.vaddr![0] = 0;
    dmaBufVunmap(k, buf, m1);
    dmaBufVunmap(k, buf, m2);
    ctx.expect(hb.vmapCnt === 0 && hb.vaddr === null, `${name}: vunmap drops the heap's mapping`);
  }
}

/**
 * Builds a known state for the bufinfo golden test: a named system buffer with two devices attached and an
 * unnamed carve-out buffer with one, then hands back bufinfo. Everything is released afterwards.
 */
function bufinfoAttached(k: Kernel, ctx: KunitContext): void {
  const sys = dmaHeapFind(k, 'system');
  const res = dmaHeapFind(k, 'reserved');
  if (!sys || !res) throw new Error('bufinfo_attached needs the system and reserved heaps');
  const a = sys.ops.allocate(k, sys, 8192, O_RDWR, 0n);
  putLater(k, ctx, a);
  a.name = 'scanout';
  const b = res.ops.allocate(k, res, 4096, 0, 0n);
  putLater(k, ctx, b);
  const atts = [dmaBufAttach(k, a, { name: 'gpu.0' }), dmaBufAttach(k, a, { name: 'display.0' })];
  const attb = dmaBufAttach(k, b, { name: 'camera.0' });
  ctx.defer(() => {
    for (const at of atts) dmaBufDetach(k, a, at);
    dmaBufDetach(k, b, attb);
  });
  ctx.output(dmaBufDebugShow(k));
}

/** A buffer only the kernel holds (no fd, no mapping): dmabuf_dump counts it as kernel_rss. */
function dumpKernelHeld(k: Kernel, ctx: KunitContext): void {
  const sys = dmaHeapFind(k, 'system');
  if (!sys) throw new Error('dmabuf_dump_kernel_held needs the system heap');
  const buf = sys.ops.allocate(k, sys, 4096, O_RDWR, 0n);
  putLater(k, ctx, buf);
  ctx.output(dmabufDump(k));
}

/**
 * Every buffer has a reservation object: its own (finalised at release, putting every fence) or the exporter's
 * (exp_info->resv: shared, left alone at release). bufinfo shows the fences of usage ≤ READ.
 */
function resvLifetime(k: Kernel, ctx: KunitContext): void {
  const a = mockExport(k);
  putLater(k, ctx, a);
  const b = mockExport(k);
  putLater(k, ctx, b);
  ctx.expect(a.resv !== b.resv && a.resvOwned && b.resvOwned, 'each buffer gets its own resv');
  const f = mockFence(ctx);
  addFence(a.resv, f, DMA_RESV_USAGE_WRITE);
  addFence(b.resv, f, DMA_RESV_USAGE_BOOKKEEP);
  ctx.expect(f.refcount === 3, `both resvs hold a reference (refcount ${f.refcount})`);
  const show = dmaBufDebugShow(k);
  ctx.expect(show.includes('\tmock_exporter\t'), 'bufinfo lists the buffers');
  ctx.expect(show.split('\twrite fence:kunit mock seq 1 unsignalled\n').length === 2, 'the WRITE fence is printed once');
  ctx.expect(!show.includes('bookkeep'), 'BOOKKEEP is never printed');
  dmaBufPut(k, a);
  ctx.expect(f.refcount === 2, 'release finalised the own resv: its reference put');

  const shared = dmaResvInit();
  ctx.defer(() => dmaResvFini(shared));
  const c = mockExport(k, mockOps(), PAGE_SIZE, O_RDWR, shared);
  const d = mockExport(k, mockOps(), PAGE_SIZE, O_RDWR, shared);
  putLater(k, ctx, d);
  ctx.expect(c.resv === shared && d.resv === shared && !c.resvOwned, 'exp_info->resv is used as given');
  addFence(shared, f, DMA_RESV_USAGE_READ);
  dmaBufPut(k, c);
  ctx.expect(dmaResvEntries(shared).length === 1 && f.refcount === 3, 'the exporter’s resv is not finalised at release');
}

/**
 * dma_buf_begin_cpu_access in atomic context: the exporter's hook runs, then with fences it would have to sleep
 * on it fails with EAGAIN (the broker cannot sleep); usage_rw decides which fences count.
 */
function cpuAccessFences(k: Kernel, ctx: KunitContext): void {
  const buf = mockExport(k);
  putLater(k, ctx, buf);
  const calls = buf.priv.calls;
  addFence(buf.resv, mockFence(ctx), DMA_RESV_USAGE_BOOKKEEP);
  dmaBufBeginCpuAccess(k, buf, DMA_BIDIRECTIONAL); // BOOKKEEP fences never block CPU access
  const rd = mockFence(ctx);
  addFence(buf.resv, rd, DMA_RESV_USAGE_READ);
  dmaBufBeginCpuAccess(k, buf, DMA_FROM_DEVICE);
  calls.length = 0;
  ctx.expectErrno(E.EAGAIN, () => dmaBufBeginCpuAccess(k, buf, DMA_TO_DEVICE), 'a CPU write would wait for a READ fence');
  ctx.expectErrno(E.EAGAIN, () => dmaBufBeginCpuAccess(k, buf, DMA_BIDIRECTIONAL), 'so would read/write');
  ctx.expect(calls.join(',') === `begin:${DMA_TO_DEVICE},begin:${DMA_BIDIRECTIONAL}`, 'the exporter’s begin_cpu_access ran first');
  dmaFenceSignal(rd);
  dmaBufBeginCpuAccess(k, buf, DMA_TO_DEVICE);
  const wr = mockFence(ctx);
  addFence(buf.resv, wr, DMA_RESV_USAGE_WRITE);
  ctx.expectErrno(E.EAGAIN, () => dmaBufBeginCpuAccess(k, buf, DMA_FROM_DEVICE), 'a CPU read would wait for a WRITE fence');
  dmaFenceSignal(wr);
  const kf = mockFence(ctx);
  addFence(buf.resv, kf, DMA_RESV_USAGE_KERNEL);
  ctx.expectErrno(E.EAGAIN, () => dmaBufBeginCpuAccess(k, buf, DMA_FROM_DEVICE), 'and for a KERNEL fence');
  dmaFenceSignal(kf);
  dmaBufBeginCpuAccess(k, buf, DMA_FROM_DEVICE);
  const failing = mockExport(k, mockOps({ beginCpuAccess: () => { throw new KernelError(E.EIO); } }));
  putLater(k, ctx, failing);
  addFence(failing.resv, mockFence(ctx), DMA_RESV_USAGE_WRITE);
  ctx.expectErrno(E.EIO, () => dmaBufBeginCpuAccess(k, failing, DMA_FROM_DEVICE), 'the exporter’s error comes first');
}

/**
 * __map_dma_buf: a static importer's mapping waits for KERNEL fences (EAGAIN in atomic context, the exporter's
 * mapping undone); WRITE/READ fences do not matter to it; a dynamic importer never waits in the core.
 */
function mapKernelFences(k: Kernel, ctx: KunitContext): void {
  const buf = mockExport(k);
  putLater(k, ctx, buf);
  const p = buf.priv;
  addFence(buf.resv, mockFence(ctx), DMA_RESV_USAGE_WRITE);
  const st = dmaBufAttach(k, buf, { name: 'static' });
  ctx.defer(() => dmaBufDetach(k, buf, st));
  // A WRITE fence does not hold up a static importer's map.
  const s1 = dmaBufMapAttachment(k, st, DMA_TO_DEVICE);
  dmaBufUnmapAttachment(k, st, s1, DMA_TO_DEVICE);
  const kf = mockFence(ctx);
  addFence(buf.resv, kf, DMA_RESV_USAGE_KERNEL);
  p.calls.length = 0;
  ctx.expectErrno(E.EAGAIN, () => dmaBufMapAttachment(k, st, DMA_TO_DEVICE), 'a KERNEL fence: the map would wait');
  ctx.expect(p.calls.join(',') === `map:${DMA_TO_DEVICE},unmap:${DMA_TO_DEVICE}`, `the exporter’s mapping was undone (${p.calls.join(',')})`);
  const dyn = dmaBufDynamicAttach(k, buf, { name: 'dynamic' }, { moveNotify: () => {} });
  ctx.defer(() => dmaBufDetach(k, buf, dyn));
  // A dynamic importer maps without the core waiting (it syncs to the fences itself).
  const sd = dmaBufMapAttachment(k, dyn, DMA_FROM_DEVICE);
  dmaBufUnmapAttachment(k, dyn, sd, DMA_FROM_DEVICE);

  // Static importer on a dynamic exporter: the attach-time mapping waits too; a failed attach leaves nothing.
  const dbuf = mockExport(k, mockOps({ pin: (att) => void att.dmabuf.priv.calls.push('pin'), unpin: (att) => void att.dmabuf.priv.calls.push('unpin') }));
  putLater(k, ctx, dbuf);
  addFence(dbuf.resv, kf, DMA_RESV_USAGE_KERNEL);
  ctx.expectErrno(E.EAGAIN, () => dmaBufAttach(k, dbuf, { name: 'static' }), 'attach of a static importer to a dynamic exporter');
  ctx.expect(dbuf.attachments.length === 0 && dbuf.priv.calls.join(',') === `attach,pin,map:${DMA_BIDIRECTIONAL},unmap:${DMA_BIDIRECTIONAL},unpin,detach`,
    `failed attach undone (${dbuf.priv.calls.join(',')})`);
  dmaFenceSignal(kf);
  const s2 = dmaBufMapAttachment(k, st, DMA_TO_DEVICE); // signaled: the map goes through
  ctx.expect(p.calls.at(-1) === `map:${DMA_TO_DEVICE}`, 'mapped after the signal');
  dmaBufUnmapAttachment(k, st, s2, DMA_TO_DEVICE);
}

/**
 * dma_buf_poll's callback slots from the kernel side: a slot armed on the first unsignaled fence takes a file
 * reference; a busy slot reports not ready; the broker's own signal runs the callback synchronously, which frees
 * the slot and puts the reference.
 */
function pollSlots(k: Kernel, ctx: KunitContext): void {
  const buf = mockExport(k);
  putLater(k, ctx, buf);
  const poll = (ev: number): number => dmaBufFops.poll!(buf.file, pollFor(ev));
  ctx.expect(poll(POLLIN | POLLOUT) === (POLLIN | POLLOUT), 'no fences: ready both ways');
  ctx.expect(poll(0) === 0, 'nothing asked, nothing reported');
  const rd = mockFence(ctx);
  addFence(buf.resv, rd, DMA_RESV_USAGE_READ);
  ctx.expect(poll(POLLIN | POLLOUT) === POLLIN, 'a READ fence holds up EPOLLOUT only');
  ctx.expect(buf.cbOut.active === POLLOUT && buf.cbIn.active === 0 && buf.file.count === 2, 'the armed slot holds a reference');
  ctx.expect(poll(POLLOUT) === 0, 'busy slot: not ready');
  ctx.expect(buf.file.count === 2, 'a busy slot takes no second reference');
  dmaFenceSignal(rd);
  ctx.expect(buf.cbOut.active === 0 && buf.file.count === 1, 'the signal ran the callback: slot free, reference put');
  ctx.expect(poll(POLLOUT) === POLLOUT, 'ready');
  ctx.expect(buf.file.count === 1, 'an immediately ready poll keeps no reference');
}

/**
 * Deliberately BUG()s: the release of a buffer whose poll slot is still active (a reference imbalance — here
 * forged by putting the slot's reference). The runner records the oops; the cleanup undoes the imbalance and
 * finishes the release.
 */
function releasePollActiveBug(k: Kernel, ctx: KunitContext): void {
  const buf = mockExport(k);
  const f = mockFence(ctx);
  addFence(buf.resv, f, DMA_RESV_USAGE_WRITE);
  ctx.expect(dmaBufFops.poll!(buf.file, pollFor(POLLIN)) === 0, 'slot armed');
  ctx.defer(() => {
    // Disarm as the callback would have (without the fput it owes), then let the release finish.
    if (dmaFenceRemoveCallback(f, buf.cbIn.cb)) dmaFencePut(f);
    buf.cbIn.active = 0;
    dmaBufFops.release!(buf.file);
  });
  k.fput(buf.file); // the slot's reference, stolen
  ctx.expectBug(/^BUG: dma-buf ino \d+ released with an active poll callback/);
  dmaBufPut(k, buf); // the last one: dma_buf_release finds cb_in active → BUG
  ctx.expect(false, 'release with an active poll callback returned');
}

/** The suite: case name → body (the names the tests ask for). */
export const dmaBufKunitSuite: KunitSuite = {
  dma_buf_resv_lifetime: resvLifetime,
  dma_buf_cpu_access_fences: cpuAccessFences,
  dma_buf_map_kernel_fences: mapKernelFences,
  dma_buf_poll_slots: pollSlots,
  dma_buf_release_poll_active_bug: releasePollActiveBug,
  dma_buf_export_checks: exportChecks,
  dma_buf_fd_get_put: fdGetPut,
  dma_buf_attach_map_cached: attachMapCached,
  dma_buf_attach_map_uncached: attachMapUncached,
  dma_buf_dynamic_attach: dynamic,
  dma_buf_cpu_access: cpuAccess,
  dma_buf_vmap: vmap,
  dma_buf_vunmap_bug: vunmapBug,
  dma_buf_release_with_attachment: releaseWithAttachment,
  dma_heap_buffer_ops: heapApi,
  bufinfo_attached: bufinfoAttached,
  dmabuf_dump_kernel_held: dumpKernelHeld,
};
