/**
 * include/linux/dma-direction.h: enum dma_data_direction, the direction of a DMA mapping or CPU access as drivers
 * pass it to the dma-buf core. Kernel-internal (no ioctl carries it), so it lives here and not in src/uapi/.
 */

export const DMA_BIDIRECTIONAL = 0;
/** The device reads: for CPU access, the CPU writes. */
export const DMA_TO_DEVICE = 1;
/** The device writes: for CPU access, the CPU reads. */
export const DMA_FROM_DEVICE = 2;
export const DMA_NONE = 3;

export type DmaDataDirection = typeof DMA_BIDIRECTIONAL | typeof DMA_TO_DEVICE | typeof DMA_FROM_DEVICE | typeof DMA_NONE;
