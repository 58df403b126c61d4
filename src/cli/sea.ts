// Entry point of the single-file binary (a CommonJS bundle: no top-level await).
import { run } from './main.js';

void run();
