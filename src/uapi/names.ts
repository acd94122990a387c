/** Human-readable names for request numbers, for diagnostics, leak origins and traces. */
import * as dmaBuf from './dma-buf.js';
import * as dmaHeap from './dma-heap.js';
import * as syncFile from './sync-file.js';
import * as drm from './drm.js';

const names = new Map<number, string>();
for (const mod of [dmaBuf, dmaHeap, syncFile, drm] as Record<string, unknown>[]) {
  for (const [k, v] of Object.entries(mod)) {
    if (typeof v === 'number' && /IOC|SET_NAME/.test(k) && !names.has(v)) names.set(v, k);
  }
}
names.set(dmaBuf.DMA_BUF_SET_NAME_A, 'DMA_BUF_SET_NAME_A');
names.set(dmaBuf.DMA_BUF_SET_NAME_B, 'DMA_BUF_SET_NAME');
names.set(syncFile.SW_SYNC_GET_DEADLINE, 'SW_SYNC_GET_DEADLINE');

export function ioctlName(cmd: number): string {
  return names.get(cmd >>> 0) ?? `0x${(cmd >>> 0).toString(16)}`;
}
