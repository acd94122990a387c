/**
 * The driver the benchmarks load (bench/drivers.ts), written only against dmabuf-sim/driver: a no-op ioctl, buffers
 * exported from its own pages (with or without cache_sgt_mapping), and timed importer loops run in its own worker —
 * map/unmap of an attachment, vmap/vunmap from a count of 0 or with the count held above 0.
 */
import * as k from '../src/driver/index.js';
import type { Driver, PageRegion, SgRange } from '../src/driver/index.js';
import { DMA_BIDIRECTIONAL, E, KernelError } from '../src/driver/index.js';

export const BENCH_IOC_NOP = 0x4200;
export const BENCH_IOC_RUN = 0x4201;
/** Bytes of the RUN argument: a JSON request in, a JSON answer out. */
export const BENCH_ARG_BYTES = 256;

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Exporter calls this driver served (a loop reports how many of its iterations reached an exporter). */
const exporterCalls = { map: 0, unmap: 0, vmap: 0, vunmap: 0 };

function ops(cache: boolean): k.DmaBufOps<PageRegion> {
  return {
    cacheSgtMapping: cache,
    mapDmaBuf(att): SgRange[] {
      exporterCalls.map++;
      const region = att.dmabuf.priv as PageRegion;
      return [{ region, offset: 0, length: region.size }];
    },
    unmapDmaBuf() {
      exporterCalls.unmap++;
    },
    release(buf) {
      k.freePages(buf.priv!);
    },
    vmap(buf) {
      exporterCalls.vmap++;
      return { region: buf.priv!, iomem: false };
    },
    vunmap() {
      exporterCalls.vunmap++;
    },
  };
}

type Req = { op: 'export'; size: number; cache: boolean } | { op: 'map'; fd: number; n: number } | { op: 'vmap'; fd: number; n: number; hold: boolean } | { op: 'calls' };

/** One request; returns the JSON answer. Loops return their elapsed ms, timed inside this worker. */
function run(r: Req): unknown {
  switch (r.op) {
    case 'export': {
      const region = k.allocPages(r.size);
      const buf = k.dmaBufExport({ ops: ops(r.cache), size: r.size, priv: region });
      return { fd: k.dmaBufFd(buf, 0) };
    }
    case 'map': {
      // An importer's steady state: attach once, then map + unmap per job (the reservation lock taken around
      // each, as dma_buf_map_attachment_unlocked does).
      const buf = k.dmaBufGet(r.fd);
      const att = k.dmaBufAttach(buf, { name: 'bench-dev' });
      try {
        const t0 = performance.now();
        for (let i = 0; i < r.n; i++) {
          const sgt = k.dmaBufMapAttachmentUnlocked(att, DMA_BIDIRECTIONAL);
          k.dmaBufUnmapAttachmentUnlocked(att, sgt, DMA_BIDIRECTIONAL);
        }
        return { ms: performance.now() - t0 };
      } finally {
        k.dmaBufDetach(buf, att);
        k.dmaBufPut(buf);
      }
    }
    case 'vmap': {
      // hold: one vmap kept for the whole loop, so every vmap/vunmap of the loop only moves the core's counter
      // (1 → 2 → 1); otherwise every pair is the first vmap and the last vunmap (both reach the exporter).
      const buf = k.dmaBufGet(r.fd);
      const held = r.hold ? k.dmaBufVmap(buf) : null;
      try {
        const t0 = performance.now();
        for (let i = 0; i < r.n; i++) k.dmaBufVunmap(buf, k.dmaBufVmap(buf));
        return { ms: performance.now() - t0 };
      } finally {
        if (held) k.dmaBufVunmap(buf, held);
        k.dmaBufPut(buf);
      }
    }
    case 'calls':
      return { ...exporterCalls };
  }
}

export function probe(drv: Driver): void {
  drv.registerChrdev(`/dev/${drv.name}`, {
    ioctl(_file, cmd, arg) {
      if (cmd === BENCH_IOC_NOP) return 0;
      if (cmd !== BENCH_IOC_RUN || !arg.bytes) throw new KernelError(E.ENOTTY);
      const n = arg.bytes.indexOf(0);
      const out = enc.encode(JSON.stringify(run(JSON.parse(dec.decode(arg.bytes.subarray(0, n < 0 ? arg.bytes.length : n))) as Req)));
      if (out.length >= arg.bytes.length) throw new KernelError(E.E2BIG);
      arg.bytes.fill(0);
      arg.bytes.set(out);
      return 0;
    },
  });
}
