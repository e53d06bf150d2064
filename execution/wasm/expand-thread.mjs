// Entry of an expansion thread: the main thread's tsx registration does not carry over into
// worker threads, so register it here before loading the TypeScript.
import { register } from 'tsx/esm/api';

register();
await import('./expand-thread.ts');
