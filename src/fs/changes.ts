import { posix } from 'node:path';
import { FerryError } from '../errors.js';

/** The part of an image config that `-c/--change` instructions set (Docker's field names). */
export interface ContainerConfig {
  User?: string;
  ExposedPorts?: Record<string, Record<string, never>>;
  Env?: string[];
  Entrypoint?: string[];
  Cmd?: string[];
  Volumes?: Record<string, Record<string, never>>;
  WorkingDir?: string;
  Labels?: Record<string, string>;
  StopSignal?: string;
}

export const SUPPORTED_CHANGES = ['CMD', 'ENTRYPOINT', 'ENV', 'WORKDIR', 'USER', 'EXPOSE', 'LABEL', 'VOLUME', 'STOPSIGNAL'] as const;
const MAX_PORTS = 65536;

const usage = (change: string, what: string, hint?: string) =>
  new FerryError('USAGE', `--change ${JSON.stringify(change)}: ${what}`, { hint });

/** JSON form (`["a", "b"]`) when the text parses as an array of strings; undefined otherwise. */
function jsonForm(text: string): string[] | undefined {
  if (!text.startsWith('[')) return undefined;
  try {
    const v = JSON.parse(text) as unknown;
    if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v as string[];
  } catch {
    // not JSON: Docker then treats the text as shell form
  }
  return undefined;
}

/** Splits on unquoted whitespace; quotes group and are removed, backslash escapes (not in '…'). */
export function splitWords(text: string): string[] {
  const words: string[] = [];
  let cur = '';
  let inWord = false;
  let quote: '"' | "'" | undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quote) {
      if (c === quote) quote = undefined;
      else if (c === '\\' && quote === '"' && i + 1 < text.length) cur += text[++i];
      else cur += c;
      continue;
    }
    if (c === '"' || c === "'") {
      quote = c;
      inWord = true;
    } else if (c === '\\' && i + 1 < text.length) {
      cur += text[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(cur);
      cur = '';
      inWord = false;
    } else {
      cur += c;
      inWord = true;
    }
  }
  if (quote) throw new FerryError('USAGE', `unterminated ${quote} quote in ${JSON.stringify(text)}`);
  if (inWord) words.push(cur);
  return words;
}

/** `K=V K2="v 2"`, or the legacy single pair `K some value`. */
function pairs(change: string, args: string): Array<[string, string]> {
  const words = splitWords(args);
  if (!words[0]!.includes('=')) {
    if (words.length < 2) throw usage(change, 'needs KEY=VALUE (or KEY VALUE)');
    return [[words[0]!, words.slice(1).join(' ')]];
  }
  return words.map((w) => {
    const i = w.indexOf('=');
    if (i <= 0) throw usage(change, `${JSON.stringify(w)} is not KEY=VALUE`);
    return [w.slice(0, i), w.slice(i + 1)];
  });
}

function ports(change: string, args: string): string[] {
  const out: string[] = [];
  for (const w of splitWords(args)) {
    const m = /^(\d+)(?:-(\d+))?(?:\/(tcp|udp|sctp))?$/i.exec(w);
    if (!m) throw usage(change, `${JSON.stringify(w)} is not PORT[-PORT][/tcp|udp|sctp]`);
    const from = Number(m[1]);
    const to = m[2] === undefined ? from : Number(m[2]);
    const proto = (m[3] ?? 'tcp').toLowerCase();
    if (from < 1 || to > 65535 || to < from) throw usage(change, `invalid port range ${w}`);
    for (let p = from; p <= to; p++) out.push(`${p}/${proto}`);
    if (out.length > MAX_PORTS) throw usage(change, 'too many ports');
  }
  if (out.length === 0) throw usage(change, 'needs at least one port');
  return out;
}

/**
 * Applies Docker-style change instructions (as `docker import -c` takes them) to a config.
 * CMD and ENTRYPOINT take the JSON (exec) form or the shell form, which is wrapped in
 * `/bin/sh -c`; ENV and LABEL take `K=V` pairs (quotes allowed) or the legacy `K V` form.
 */
export function applyChanges(changes: string[], base: ContainerConfig = {}): ContainerConfig {
  const c: ContainerConfig = structuredClone(base);
  for (const change of changes) {
    const m = /^\s*([A-Za-z]+)(?:\s+([\s\S]*))?$/.exec(change);
    if (!m) throw usage(change, 'expected INSTRUCTION ARGUMENTS, e.g. CMD ["/app"]');
    const op = m[1]!.toUpperCase();
    const args = (m[2] ?? '').trim();
    if (!(SUPPORTED_CHANGES as readonly string[]).includes(op)) {
      throw usage(change, `${op} is not a supported change instruction`, `supported: ${SUPPORTED_CHANGES.join(', ')}`);
    }
    if (args === '') throw usage(change, `${op} needs an argument`);
    switch (op) {
      case 'CMD':
      case 'ENTRYPOINT': {
        const argv = jsonForm(args) ?? ['/bin/sh', '-c', args];
        if (op === 'CMD') c.Cmd = argv;
        else c.Entrypoint = argv;
        break;
      }
      case 'ENV': {
        const env = c.Env ?? [];
        for (const [k, v] of pairs(change, args)) {
          const i = env.findIndex((e) => e.split('=', 1)[0] === k);
          if (i >= 0) env[i] = `${k}=${v}`;
          else env.push(`${k}=${v}`);
        }
        c.Env = env;
        break;
      }
      case 'LABEL': {
        c.Labels = c.Labels ?? {};
        for (const [k, v] of pairs(change, args)) c.Labels[k] = v;
        break;
      }
      case 'WORKDIR': {
        const [dir] = splitWords(args);
        c.WorkingDir = posix.resolve(c.WorkingDir ?? '/', dir!);
        break;
      }
      case 'USER': {
        const words = splitWords(args);
        if (words.length !== 1) throw usage(change, 'USER takes one argument, NAME[:GROUP] or UID[:GID]');
        c.User = words[0]!;
        break;
      }
      case 'EXPOSE': {
        c.ExposedPorts = c.ExposedPorts ?? {};
        for (const p of ports(change, args)) c.ExposedPorts[p] = {};
        break;
      }
      case 'VOLUME': {
        const list = jsonForm(args) ?? splitWords(args);
        if (list.length === 0 || list.some((v) => v === '')) throw usage(change, 'VOLUME needs one or more paths');
        c.Volumes = c.Volumes ?? {};
        for (const v of list) c.Volumes[v] = {};
        break;
      }
      case 'STOPSIGNAL': {
        const words = splitWords(args);
        if (words.length !== 1 || !/^(?:\d+|(?:SIG)?[A-Z0-9]+(?:[+-]\d+)?)$/i.test(words[0]!)) {
          throw usage(change, 'STOPSIGNAL takes a signal name or number, e.g. SIGTERM or 15');
        }
        c.StopSignal = words[0]!;
        break;
      }
    }
  }
  return c;
}
