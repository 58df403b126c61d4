import type * as ChildProcess from 'node:child_process';
import type * as Zlib from 'node:zlib';

// Built-in modules loaded on first use: node:zlib costs ~5 ms of start-up, node:child_process
// ~3 ms, which a command that never (de)compresses or runs a credential helper should not pay.
let zlibModule: typeof Zlib | undefined;
export function zlib(): typeof Zlib {
  return (zlibModule ??= process.getBuiltinModule('node:zlib'));
}

export function childProcess(): typeof ChildProcess {
  return process.getBuiltinModule('node:child_process');
}
