/** enum dma_data_direction for kernel code (the values live in src/uapi/dma-direction.ts, shared with drivers). */
export { DMA_BIDIRECTIONAL, DMA_TO_DEVICE, DMA_FROM_DEVICE, DMA_NONE, type DmaDataDirection } from '../uapi/dma-direction.js';
