import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FERRY } from '../helpers/cli.js';

export interface Measured {
  code: number | null;
  stderr: string;
  stdout: string;
  seconds: number;
  peakRssMiB: number;
}

/**
 * Runs bin/ferry and samples the kernel's high-water mark of its resident set (VmHWM) until it
 * exits. bin/ferry execs node, so the pid is ferry's own; no /usr/bin/time needed.
 * With `discardStdout`, standard output goes to /dev/null (export -o -).
 */
export function measureFerry(args: string[], o: { discardStdout?: boolean; pipeTo?: string[]; env?: Record<string, string> } = {}): Promise<Measured> {
  const t0 = process.hrtime.bigint();
  const child = spawn(FERRY, args, { env: { ...process.env, ...o.env }, stdio: ['ignore', o.discardStdout ? 'ignore' : 'pipe', 'pipe'] });
  // `pipeTo`: ferry's output goes straight into this command (e.g. tar -tv), whose output is returned.
  const consumer = o.pipeTo ? spawn(o.pipeTo[0]!, o.pipeTo.slice(1), { stdio: ['pipe', 'pipe', 'inherit'] }) : undefined;
  if (consumer) child.stdout!.pipe(consumer.stdin!);
  const consumed = consumer ? new Promise<void>((r) => consumer.on('close', () => r())) : Promise.resolve();
  let peakKiB = 0;
  let stdout = '';
  let stderr = '';
  (consumer?.stdout ?? child.stdout)?.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-20_000)));
  const sample = async () => {
    try {
      const status = await readFile(`/proc/${child.pid}/status`, 'utf8');
      const hwm = /VmHWM:\s+(\d+) kB/.exec(status);
      if (hwm) peakKiB = Math.max(peakKiB, Number(hwm[1]));
    } catch {
      // exited between samples
    }
  };
  const timer = setInterval(() => void sample(), 50);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', () => clearInterval(timer));
    child.on('close', (code) => {
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      void consumed.then(() => resolve({ code, stdout, stderr, seconds, peakRssMiB: peakKiB / 1024 }));
    });
  });
}

export interface SoakRow {
  workload: string;
  seconds: number;
  peakRssMiB: number;
  limitMiB?: number;
}

const DOC = join(import.meta.dirname, '..', '..', 'docs', 'BENCHMARKS.md');
const START = '<!-- soak:start -->';
const END = '<!-- soak:end -->';

/**
 * Rewrites the soak section of docs/BENCHMARKS.md (between its markers): these rows replace rows
 * of the same workload and the others stay, so a run of one test (-t) updates just its rows.
 */
export async function writeSoakTable(fresh: SoakRow[], machine: string): Promise<void> {
  const doc = await readFile(DOC, 'utf8');
  const i = doc.indexOf(START);
  const j = doc.indexOf(END);
  const old = i >= 0 && j > i ? parseRows(doc.slice(i, j)) : [];
  const names = new Set(fresh.map((r) => r.workload));
  const rows = [...old.filter((r) => !names.has(r.workload)), ...fresh];
  const lines = [
    START,
    `Latest \`SOAK_WRITE=1 npm run test:soak\` (${new Date().toISOString().slice(0, 10)}, ${machine}).`,
    '',
    '| soak workload | seconds | peak RSS MiB | limit MiB |',
    '| --- | ---: | ---: | ---: |',
    ...rows.map((r) => `| ${r.workload} | ${r.seconds.toFixed(1)} | ${r.peakRssMiB.toFixed(0)} | ${r.limitMiB ?? '–'} |`),
    END,
  ];
  const block = lines.join('\n');
  const next = i >= 0 && j > i ? doc.slice(0, i) + block + doc.slice(j + END.length) : `${doc.trimEnd()}\n\n## Soak (huge inputs)\n\n${block}\n`;
  await writeFile(DOC, next);
}

function parseRows(section: string): SoakRow[] {
  const rows: SoakRow[] = [];
  for (const line of section.split('\n')) {
    const cells = line.split('|').map((c) => c.trim());
    if (cells.length !== 6 || !/^\d/.test(cells[2]!)) continue;
    rows.push({ workload: cells[1]!, seconds: Number(cells[2]), peakRssMiB: Number(cells[3]), limitMiB: cells[4] === '–' ? undefined : Number(cells[4]) });
  }
  return rows;
}
