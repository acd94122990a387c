/**
 * Simple character devices and pseudo files: /dev/null, and read-only "seq files" whose text is generated at
 * open (debugfs nodes under /sys/kernel/debug, /proc/<pid>/fdinfo/<fd>).
 */
import { KernelError } from '../errors.js';
import { E } from '../uapi/errno.js';
import { O_ACCMODE, O_RDONLY } from '../uapi/posix.js';
import { FMODE_LSEEK, fmodeFromFlags, type File, type FileOperations } from './file.js';
import { genericLlseek } from './fs.js';
import type { Kernel } from './kernel.js';

const nullOps: FileOperations = {
  kind: 'null',
  dname: () => '/dev/null',
  read: () => new Uint8Array(0),
  write: (_f, data) => data.length,
  llseek: () => 0,
};

/** A snapshot of generated text, served by read() like a seq_file (generated once, at open). */
interface SeqText {
  readonly path: string;
  readonly text: Uint8Array;
}

const seqOps: FileOperations = {
  kind: 'seq_file',
  dname: (f) => (f.privateData as SeqText).path,
  read(f, count) {
    const s = f.privateData as SeqText;
    const chunk = s.text.subarray(f.pos, f.pos + count);
    f.pos += chunk.length;
    return chunk.slice();
  },
  llseek: (f, off, whence) => genericLlseek(f, off, whence, (f.privateData as SeqText).text.length),
};

export function openSeqText(k: Kernel, path: string, flags: number, text: string): File {
  if ((flags & O_ACCMODE) !== O_RDONLY) throw new KernelError(E.EACCES);
  return k.allocFile<SeqText>(seqOps, { path, text: Buffer.from(text, 'utf8') }, fmodeFromFlags(flags) | FMODE_LSEEK, flags);
}

export const DEBUGFS_ROOT = '/sys/kernel/debug/';

/** show_fdinfo's generic block (fs/proc/fd.c), then the file's own lines. */
export function fdinfoText(f: File, cloexec: boolean, mntId: number): string {
  // f_flags as stored (O_LARGEFILE only where open() put it), plus O_CLOEXEC from the fd table.
  const flags = (f.flags | (cloexec ? 0o2000000 : 0)) >>> 0;
  let s = `pos:\t${f.pos}\nflags:\t0${flags.toString(8)}\nmnt_id:\t${mntId}\nino:\t${f.ino}\n`;
  if (f.ops.showFdinfo) s += f.ops.showFdinfo(f);
  return s;
}

/** mnt_id of the pseudo filesystems, as fdinfo prints them (fixed numbers: the model has one mount of each). */
export const MNT_ID = { devtmpfs: 22, dmabuf: 15, anon_inode: 14, sockfs: 8, debugfs: 30, proc: 23 } as const;

export function registerCharDevices(k: Kernel): void {
  k.registerPath('/dev/null', (kk, _t, _p, flags) => kk.allocFile(nullOps, null, fmodeFromFlags(flags), flags));

  k.registerPrefix(DEBUGFS_ROOT, (kk, _t, path, flags) => {
    const gen = kk.debugfs.get(path.slice(DEBUGFS_ROOT.length));
    if (!gen) throw new KernelError(E.ENOENT);
    return openSeqText(kk, path, flags, gen());
  });

  k.registerPrefix('/proc/', (kk, t, path, flags) => {
    const { task, rest } = kk.procTask(t, path);
    const m = /^fdinfo\/(\d+)$/.exec(rest);
    if (!m) throw new KernelError(E.ENOENT);
    const e = task.getFd(Number(m[1]));
    if (!e) throw new KernelError(E.ENOENT);
    // seq_show (fs/proc/fd.c) holds a temporary reference on the file while it prints; show_fdinfo ops that print
    // the count (dma-buf's "count: f_count - 1") rely on it.
    kk.fget(e.file);
    let text: string;
    try {
      text = fdinfoText(e.file, e.cloexec, mntIdOf(e.file));
    } finally {
      kk.fput(e.file);
    }
    return openSeqText(kk, path, flags, text);
  });
}

/** Which pseudo filesystem a file lives on, by its kind. */
export function mntIdOf(f: File): number {
  switch (f.ops.kind) {
    case 'dmabuf':
      return MNT_ID.dmabuf;
    case 'socket':
      return MNT_ID.sockfs;
    case 'seq_file':
      return MNT_ID.proc;
    case 'null':
    case 'dma_heap':
    case 'chrdev':
      return MNT_ID.devtmpfs;
    case 'sw_sync':
      return f.ops.dname(f).startsWith('/dev/') ? MNT_ID.devtmpfs : MNT_ID.debugfs;
    default:
      return MNT_ID.anon_inode;
  }
}
