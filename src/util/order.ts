/**
 * Tag order as people read versions: runs of digits compare by value (v2 before v10, 1.9 before
 * 1.10), everything else by code unit. The same on every host, with no ICU collation data mapped
 * in; equal values with different zero padding (07, 7) fall back to code-unit order.
 */
export function byNaturalOrder(a: string, b: string): number {
  const x = a.match(RUNS) ?? [];
  const y = b.match(RUNS) ?? [];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const p = x[i]!;
    const q = y[i]!;
    if (p === q) continue;
    if (isDigits(p) && isDigits(q)) {
      const c = compareDigits(p, q);
      if (c !== 0) return c;
      continue;
    }
    return p < q ? -1 : 1;
  }
  if (x.length !== y.length) return x.length - y.length;
  return a < b ? -1 : a > b ? 1 : 0;
}

const RUNS = /\d+|\D+/g;

function isDigits(s: string): boolean {
  const c = s.charCodeAt(0);
  return c >= 48 && c <= 57;
}

/** By value, without Number's limits: length once leading zeros are gone, then digit by digit. */
function compareDigits(p: string, q: string): number {
  const a = p.replace(/^0+/, '');
  const b = q.replace(/^0+/, '');
  if (a.length !== b.length) return a.length - b.length;
  return a < b ? -1 : a > b ? 1 : 0;
}
