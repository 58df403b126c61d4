/** `n` in the largest unit of `units` (each `base` times the one before) it reaches. */
function scaled(n: number, base: number, units: string[]): { v: number; unit: string; scaled: boolean } {
  let v = n;
  let u = 0;
  while (v >= base && u < units.length - 1) {
    v /= base;
    u++;
  }
  return { v, unit: units[u]!, scaled: u > 0 };
}

/** Sizes the way docker prints them: 1000-based units, three significant digits. */
export function humanSize(n: number): string {
  const { v, unit, scaled: big } = scaled(n, 1000, ['B', 'kB', 'MB', 'GB', 'TB']);
  return big ? `${v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)}${unit}` : `${n}B`;
}

/** 1.2 GiB, 3.1 MiB: binary units, as df -h shows them (free space, space needed). */
export function binarySize(n: number): string {
  const { v, unit, scaled: big } = scaled(n, 1024, ['B', 'KiB', 'MiB', 'GiB', 'TiB']);
  return big ? `${v.toFixed(1)} ${unit}` : `${n} B`;
}
