// Moved to src/util/memory.ts: every verified stream now paces the collector.
export { streamed } from '../util/memory.js';
