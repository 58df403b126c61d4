/**
 * Up to `max` names for a hint, those most like `near` first (same repository, then sharing its
 * first letters), and how many were left out: a hint that silently stops at eight hid the very
 * image the user meant.
 */
export function someNames(names: string[], near: string, max = 8): string {
  const unique = [...new Set(names)];
  const repo = (n: string) => n.replace(/[:@].*$/, '').toLowerCase();
  const want = repo(near);
  const score = (n: string) => {
    const r = repo(n);
    if (r === want) return 3;
    if (r.endsWith(`/${want}`) || want.endsWith(`/${r}`)) return 2;
    return r.includes(want) || want.includes(r) ? 1 : 0;
  };
  const ranked = unique.map((n, i) => ({ n, i, s: score(n) })).sort((a, b) => b.s - a.s || a.i - b.i);
  const shown = ranked.slice(0, max).map((x) => x.n);
  const more = unique.length - shown.length;
  return more > 0 ? `${shown.join(', ')} … and ${more} more` : shown.join(', ');
}
