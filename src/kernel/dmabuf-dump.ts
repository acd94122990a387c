/**
 * A view like Android's `dmabuf_dump` tool (system/memory/libmeminfo/libdmabufinfo/tools/dmabuf_dump.cpp, raw
 * output): per process the dma-bufs it references with Rss and Pss, the system totals, then the buffer × process
 * table of fd and map references (`dmabuf_dump -a`).
 *
 * This is NOT a kernel file: the real tool is userspace and computes it from /proc/<pid>/fdinfo and
 * /proc/<pid>/maps. The model computes the same from its fd tables and VMAs and exposes it as the debugfs path
 * `dmabuf_dump` (and Machine.dmabufDump()) for convenience. Broker thread only.
 *
 * Deviations from the tool: processes are listed by pid and buffers by inode (the tool's order comes from hash
 * maps); the stray space the tool prints after the totals line is left out.
 */
import { dmaBufList, isDmaBufFile, type DmaBuf } from './dma-buf.js';
import type { Kernel } from './kernel.js';
import type { Task } from './task.js';

/** One buffer as the tool sees it: fds and mappings per pid. */
interface DumpBuffer {
  readonly buf: DmaBuf;
  readonly fdrefs: Map<number, number>;
  readonly maprefs: Map<number, number>;
  /** pids with an fd or a mapping, ascending. */
  readonly pids: number[];
}

const r = (v: string | number, w: number): string => String(v).padStart(w, ' ');
const l = (v: string | number, w: number): string => String(v).padEnd(w, ' ');
const kb = (bytes: number): number => Math.floor(bytes / 1024);

function bump(m: Map<number, number>, pid: number): void {
  m.set(pid, (m.get(pid) ?? 0) + 1);
}

/** Gathers fd and map references of every running process (what ReadProcfsDmaBufs reads from /proc). */
function collect(k: Kernel): { bufs: DumpBuffer[]; tasks: Map<number, Task> } {
  const byBuf = new Map<DmaBuf, DumpBuffer>();
  const entry = (buf: DmaBuf): DumpBuffer => {
    let d = byBuf.get(buf);
    if (!d) {
      d = { buf, fdrefs: new Map(), maprefs: new Map(), pids: [] };
      byBuf.set(buf, d);
    }
    return d;
  };
  const tasks = new Map<number, Task>();
  // Per process, as /proc/<pid> lists it: the threads of a group share its fd table and mappings (count them once).
  for (const t of [...k.tasks.values()].sort((a, b) => a.pid - b.pid)) {
    if (t.state !== 'running' || tasks.has(t.tgid)) continue;
    tasks.set(t.tgid, t);
    for (const [, e] of t.files) if (isDmaBufFile(e.file)) bump(entry(e.file.privateData).fdrefs, t.tgid);
    for (const v of t.vmas) if (isDmaBufFile(v.file)) bump(entry(v.file.privateData).maprefs, t.tgid);
  }
  const bufs = [...byBuf.values()].sort((a, b) => a.buf.ino - b.buf.ino);
  for (const d of bufs) {
    const pids = new Set([...d.fdrefs.keys(), ...d.maprefs.keys()]);
    d.pids.push(...[...pids].sort((a, b) => a - b));
  }
  return { bufs, tasks };
}

/** DmaBuffer::Pss(): the buffer's size shared evenly among the processes that reference it. */
const pssOf = (d: DumpBuffer): number => Math.floor(d.buf.size / d.pids.length);

/** The `dmabuf_dump` text: per-process view, totals, then the buffer × process table. */
export function dmabufDump(k: Kernel): string {
  const { bufs, tasks } = collect(k);
  if (bufs.length === 0) return 'dmabuf info not found ¯\\_(ツ)_/¯\n';
  const comm = (pid: number): string => tasks.get(pid)?.comm ?? 'N/A';
  let s = '';

  // PrintDmaBufPerProcess
  const pids = [...new Set(bufs.flatMap((d) => d.pids))].sort((a, b) => a - b);
  let userspaceSize = 0;
  for (const d of bufs) userspaceSize += d.buf.size;
  let totalRss = 0;
  let totalPss = 0;
  for (const pid of pids) {
    s += `${r(comm(pid), 16)}:${l(pid, 5)}\n`;
    s += `${r('Name', 22)} ${r('Rss', 16)} ${r('Pss', 16)} ${r('nr_procs', 16)} ${r('Inode', 16)} ${r('Exporter', 22)}\n`;
    let rss = 0;
    let pss = 0;
    for (const d of bufs) {
      if (!d.pids.includes(pid)) continue;
      const name = d.buf.name ? d.buf.name : '<unknown>';
      const exp = d.buf.expName ? d.buf.expName : '<unknown>';
      s += `${r(name, 22)} ${r(kb(d.buf.size), 13)} kB ${r(kb(pssOf(d)), 13)} kB ${r(d.pids.length, 16)} ${r(d.buf.ino, 16)}  ${r(exp, 22)}\n`;
      rss += d.buf.size;
      pss += pssOf(d);
    }
    s += `${r('PROCESS TOTAL', 22)} ${r(kb(rss), 13)} kB ${r(kb(pss), 13)} kB ${r('', 16)}\n`;
    s += '----------------------\n';
    totalRss += rss;
    totalPss += pss;
  }
  let total = 0;
  for (const b of dmaBufList(k)) total += b.size;
  const kernelRss = total >= userspaceSize ? total - userspaceSize : 0;
  if (total < userspaceSize) s += 'Warning: Total dmabufs < userspace dmabufs\n';
  s += `dmabuf total: ${kb(userspaceSize + kernelRss)} kB kernel_rss: ${kb(kernelRss)} kB userspace_rss: ${kb(totalRss)} kB userspace_pss: ${kb(totalPss)} kB\n`;

  // PrintDmaBufTable
  s += '\n----------------------- DMA-BUF Table buffer x process --------------------------\n';
  s += '    Dmabuf Inode |            Size |   Fd Ref Counts |  Map Ref Counts |';
  for (const pid of pids) s += `${r(comm(pid), 16)}:${l(pid, 5)} |`;
  s += '\n';
  const perPid = new Map<number, number>();
  let tableTotal = 0;
  for (const d of bufs) {
    s += `${r(d.buf.ino, 16)} |${r(kb(d.buf.size), 13)} kB |${r(d.fdrefs.size, 16)} |${r(d.maprefs.size, 16)} |`;
    for (const pid of pids) {
      const fd = d.fdrefs.get(pid) ?? 0;
      const map = d.maprefs.get(pid) ?? 0;
      if (fd || map) {
        s += `${r(fd, 9)}(${r(map, 6)}) refs |`;
        perPid.set(pid, (perPid.get(pid) ?? 0) + kb(d.buf.size));
      } else s += `${r('--', 22)} |`;
    }
    tableTotal += kb(d.buf.size);
    s += '\n';
  }
  s += '------------------------------------\n';
  s += `${l('TOTALS', 16)}  ${r(tableTotal, 13)} kB |${r('n/a', 16)} |${r('n/a', 16)} |`;
  for (const pid of pids) s += `${r(perPid.get(pid) ?? 0, 19)} kB |`;
  s += '\n';
  return s;
}
