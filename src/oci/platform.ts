import { FerryError } from '../errors.js';
import type { Descriptor, Platform } from './manifest.js';

export type PlatformSelection = 'all' | Platform[];

function normArch(arch: string, variant: string | undefined): { architecture: string; variant?: string } {
  const a = arch.toLowerCase();
  const v = variant?.toLowerCase();
  switch (a) {
    case 'i386':
      return { architecture: '386' };
    case 'x86_64':
    case 'x86-64':
    case 'amd64':
      return v && v !== 'v1' ? { architecture: 'amd64', variant: v } : { architecture: 'amd64' };
    case 'aarch64':
    case 'arm64':
      return v === undefined || v === '8' || v === 'v8' ? { architecture: 'arm64' } : { architecture: 'arm64', variant: v };
    case 'armhf':
      return { architecture: 'arm', variant: 'v7' };
    case 'armel':
      return { architecture: 'arm', variant: 'v6' };
    case 'arm':
      if (v === undefined || v === '' || v === '7' || v === 'v7') return { architecture: 'arm', variant: 'v7' };
      return { architecture: 'arm', variant: /^\d+$/.test(v) ? `v${v}` : v };
    default:
      return v ? { architecture: a, variant: v } : { architecture: a };
  }
}

export function normalizePlatform(p: Platform): Platform {
  const os = p.os.toLowerCase() === 'macos' ? 'darwin' : p.os.toLowerCase();
  const out: Platform = { os, ...normArch(p.architecture, p.variant) };
  if (p['os.version']) out['os.version'] = p['os.version'];
  return out;
}

export function formatPlatform(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

// Go's GOOS and GOARCH values (what image indexes use), for reading a lone word as docker does.
const KNOWN_OS = new Set(['aix', 'android', 'darwin', 'dragonfly', 'freebsd', 'hurd', 'illumos', 'ios', 'js', 'linux', 'nacl', 'netbsd', 'openbsd', 'plan9', 'solaris', 'wasip1', 'windows', 'zos']);
const KNOWN_ARCH = new Set(['386', 'amd64', 'amd64p32', 'arm', 'armbe', 'arm64', 'arm64be', 'loong64', 'mips', 'mipsle', 'mips64', 'mips64le', 'ppc', 'ppc64', 'ppc64le', 'riscv', 'riscv64', 's390', 's390x', 'sparc', 'sparc64', 'wasm']);

/**
 * `linux/arm64/v8`, `linux/amd64`, or one word as docker reads it: an OS (`windows`: the host's
 * architecture) or an architecture (`arm64`: linux).
 */
export function parsePlatform(text: string): Platform {
  const parts = text.trim().split('/');
  if (parts.some((p) => p === '') || parts.length > 3) {
    throw new FerryError('USAGE', `invalid platform "${text}": expected OS/ARCH[/VARIANT], e.g. linux/arm64`);
  }
  if (parts.length === 1) {
    const word = normalizePlatform({ os: parts[0]!, architecture: parts[0]! });
    if (KNOWN_OS.has(word.os)) return { ...hostPlatform(), os: word.os };
    if (!KNOWN_ARCH.has(word.architecture)) {
      throw new FerryError('USAGE', `invalid platform "${text}": not an operating system or an architecture; expected OS/ARCH[/VARIANT], e.g. linux/arm64`);
    }
    return { ...word, os: 'linux' };
  }
  const [os, architecture, variant] = parts;
  return normalizePlatform({ os: os!, architecture: architecture!, ...(variant ? { variant } : {}) });
}

/** `all`, one platform, or a comma list. */
export function parsePlatformSelection(text: string): PlatformSelection {
  if (text.trim() === 'all') return 'all';
  return text.split(',').map(parsePlatform);
}

export function hostPlatform(): Platform {
  const arch: Record<string, string> = { x64: 'amd64', arm64: 'arm64', ia32: '386', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };
  const os = process.platform === 'win32' ? 'windows' : process.platform;
  const architecture = arch[process.arch] ?? process.arch;
  if (architecture === 'arm') {
    const v = (process.config.variables as Record<string, unknown>).arm_version;
    return normalizePlatform({ os, architecture, variant: v ? String(v) : undefined });
  }
  return normalizePlatform({ os, architecture });
}

export function samePlatform(a: Platform, b: Platform): boolean {
  const x = normalizePlatform(a);
  const y = normalizePlatform(b);
  return x.os === y.os && x.architecture === y.architecture && (x.variant ?? '') === (y.variant ?? '');
}

/** Candidates in preference order when no exact match exists (e.g. arm64 hosts run arm/v8..v5). */
function fallbacks(p: Platform): Platform[] {
  const n = normalizePlatform(p);
  const out: Platform[] = [];
  const armDown = (from: number) => {
    for (let v = from; v >= 5; v--) out.push({ os: n.os, architecture: 'arm', variant: `v${v}` });
  };
  if (n.architecture === 'arm64') armDown(8);
  else if (n.architecture === 'arm' && n.variant && /^v\d+$/.test(n.variant)) armDown(Number(n.variant.slice(1)) - 1);
  else if (n.architecture === 'amd64') {
    if (n.variant) {
      for (let v = Number(n.variant.slice(1)) - 1; v >= 2; v--) out.push({ os: n.os, architecture: 'amd64', variant: `v${v}` });
      out.push({ os: n.os, architecture: 'amd64' });
    }
    out.push({ os: n.os, architecture: '386' });
  }
  return out;
}

/** Whether an image for `has` serves a request for `wanted`: the same platform, or one of its fallbacks. */
export function servesPlatform(has: Platform, wanted: Platform): boolean {
  return samePlatform(has, wanted) || fallbacks(wanted).some((alt) => samePlatform(has, alt));
}

/** True for entries that are never a runnable image: attestations and unknown/unknown. */
export function isAttestation(d: Descriptor): boolean {
  return d.annotations?.['vnd.docker.reference.type'] === 'attestation-manifest' ||
    (d.platform?.os === 'unknown' && d.platform?.architecture === 'unknown');
}

/**
 * Picks the entries of an index for the wanted platforms: exact match first, then the documented
 * fallbacks; ties go to the first entry. Throws NOT_FOUND listing what the index offers.
 */
export function selectPlatforms(entries: Descriptor[], wanted: Platform[], where: string, o: { oneOnly?: boolean } = {}): Descriptor[] {
  const runnable = entries.filter((d) => d.platform && !isAttestation(d));
  const picked: Descriptor[] = [];
  for (const w of wanted) {
    let hit = runnable.find((d) => samePlatform(d.platform!, w));
    for (const alt of fallbacks(w)) {
      if (hit) break;
      hit = runnable.find((d) => samePlatform(d.platform!, alt));
    }
    if (!hit) {
      const offered = runnable.map((d) => formatPlatform(normalizePlatform(d.platform!))).join(', ') || 'none';
      throw new FerryError('NOT_FOUND', `${where}: no image for platform ${formatPlatform(w)} (available: ${offered})`, {
        // export, import and inspect read one image: `all` is not theirs to offer.
        hint: o.oneOnly ? 'choose one of those with --platform OS/ARCH' : 'choose one with --platform, or --platform all',
      });
    }
    if (!picked.includes(hit)) picked.push(hit);
  }
  return picked;
}
