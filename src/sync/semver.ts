/**
 * Just enough semver to filter image tags: `>=1.2`, `<2`, `^1.4`, `~1.4.2`, `1.x`, `=1.2.3`,
 * space-separated (all must hold) and `||` (any). Tags may carry a leading `v`; tags that are not
 * versions (`latest`, `main`) never match. Pre-releases (`1.2.0-rc1`) match only ranges that name one.
 */
type Version = [number, number, number, string];

export function parseVersion(tag: string): Version | undefined {
  const m = /^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?$/.exec(tag);
  if (!m) return undefined;
  return [Number(m[1]), Number(m[2] ?? 0), Number(m[3] ?? 0), m[4] ?? ''];
}

function compare(a: Version, b: Version): number {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return (a[i] as number) - (b[i] as number);
  if (a[3] === b[3]) return 0;
  if (a[3] === '') return 1; // a release sorts after its pre-releases
  if (b[3] === '') return -1;
  return a[3] < b[3] ? -1 : 1;
}

type Test = (v: Version) => boolean;

function comparator(text: string): Test {
  const m = /^(>=|<=|>|<|=|\^|~)?\s*v?(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(?:-([0-9A-Za-z.-]+))?$/.exec(text);
  if (!m) throw new Error(`invalid version range "${text}"`);
  const op = m[1] ?? '';
  const wild = (p: string | undefined) => p === undefined || /^[xX*]$/.test(p);
  const nums = [m[2], m[3], m[4]];
  const given = nums.findIndex(wild);
  const parts = given === -1 ? 3 : given;
  const base: Version = [Number(wild(m[2]) ? 0 : m[2]), Number(wild(m[3]) ? 0 : m[3]), Number(wild(m[4]) ? 0 : m[4]), m[5] ?? ''];
  const bump = (i: number): Version => {
    const v: Version = [base[0], base[1], base[2], ''];
    v[i] = (v[i] as number) + 1;
    for (let j = i + 1; j < 3; j++) v[j] = 0;
    return v;
  };
  // A partial version is a range: 1.2 means [1.2.0, 1.3.0).
  const range = (lo: Version, hi: Version): Test => (v) => compare(v, lo) >= 0 && compare(v, hi) < 0;
  switch (op) {
    case '>=': return (v) => compare(v, base) >= 0;
    case '>': return parts < 3 ? (v) => compare(v, bump(Math.max(0, parts - 1))) >= 0 : (v) => compare(v, base) > 0;
    case '<=': return parts < 3 ? (v) => compare(v, bump(Math.max(0, parts - 1))) < 0 : (v) => compare(v, base) <= 0;
    case '<': return (v) => compare(v, base) < 0;
    case '^': {
      const i = base[0] > 0 || parts === 1 ? 0 : base[1] > 0 || parts === 2 ? 1 : 2;
      return range(base, bump(i));
    }
    case '~': return range(base, bump(parts >= 2 ? 1 : 0));
    default:
      if (parts === 0) return () => true;
      return parts === 3 ? (v) => compare(v, base) === 0 : range(base, bump(parts - 1));
  }
}

export function semverMatcher(range: string): (tag: string) => boolean {
  const alternatives = range.split('||').map((alt) => {
    const tests = alt.trim().replace(/(>=|<=|>|<|=|\^|~)\s+/g, '$1').split(/\s+/).filter(Boolean).map(comparator);
    return (v: Version) => tests.every((t) => t(v)) && (v[3] === '' || /-/.test(alt));
  });
  return (tag) => {
    const v = parseVersion(tag);
    return v !== undefined && alternatives.some((a) => a(v));
  };
}
