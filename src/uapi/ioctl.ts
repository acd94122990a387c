/** The Linux ioctl request encoding (include/uapi/asm-generic/ioctl.h): dir<<30 | size<<16 | type<<8 | nr. */

export const _IOC_NRBITS = 8;
export const _IOC_TYPEBITS = 8;
export const _IOC_SIZEBITS = 14;
export const _IOC_NRSHIFT = 0;
export const _IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS;
export const _IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS;
export const _IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS;

export const _IOC_NONE = 0;
export const _IOC_WRITE = 1;
export const _IOC_READ = 2;

/** Direction bits already shifted into place, as the kernel's IOC_IN / IOC_OUT. */
export const IOC_IN = (_IOC_WRITE << _IOC_DIRSHIFT) >>> 0;
export const IOC_OUT = (_IOC_READ << _IOC_DIRSHIFT) >>> 0;

function typeCode(type: string | number): number {
  return typeof type === 'number' ? type : type.charCodeAt(0);
}

/** Builds a request number; the result is an unsigned 32-bit value like the C macro's. */
export function _IOC(dir: number, type: string | number, nr: number, size: number): number {
  return (
    ((dir << _IOC_DIRSHIFT) | (typeCode(type) << _IOC_TYPESHIFT) | (nr << _IOC_NRSHIFT) | (size << _IOC_SIZESHIFT)) >>> 0
  );
}
export const _IO = (type: string | number, nr: number): number => _IOC(_IOC_NONE, type, nr, 0);
export const _IOR = (type: string | number, nr: number, size: number): number => _IOC(_IOC_READ, type, nr, size);
export const _IOW = (type: string | number, nr: number, size: number): number => _IOC(_IOC_WRITE, type, nr, size);
export const _IOWR = (type: string | number, nr: number, size: number): number =>
  _IOC(_IOC_READ | _IOC_WRITE, type, nr, size);

export const _IOC_DIR = (cmd: number): number => (cmd >>> _IOC_DIRSHIFT) & 3;
export const _IOC_TYPE = (cmd: number): number => (cmd >>> _IOC_TYPESHIFT) & 0xff;
export const _IOC_NR = (cmd: number): number => (cmd >>> _IOC_NRSHIFT) & 0xff;
export const _IOC_SIZE = (cmd: number): number => (cmd >>> _IOC_SIZESHIFT) & 0x3fff;
