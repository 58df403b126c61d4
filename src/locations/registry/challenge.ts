/** One challenge of a WWW-Authenticate header: scheme plus auth-params. */
export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/**
 * Parses WWW-Authenticate per RFC 9110: several challenges, quoted values that may contain commas
 * and backslash escapes (`scope="repository:a:pull,push"` must stay whole).
 */
export function parseChallenges(header: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  const n = header.length;
  const skipWs = () => {
    while (i < n && /[\s,]/.test(header[i]!)) i++;
  };
  const token = () => {
    const start = i;
    while (i < n && /[!#$%&'*+.^_`|~0-9A-Za-z-]/.test(header[i]!)) i++;
    return header.slice(start, i);
  };
  while (i < n) {
    skipWs();
    const scheme = token();
    if (!scheme) {
      i++;
      continue;
    }
    const challenge: Challenge = { scheme: scheme.toLowerCase(), params: {} };
    out.push(challenge);
    for (;;) {
      while (i < n && /\s/.test(header[i]!)) i++;
      const save = i;
      const key = token();
      while (i < n && /\s/.test(header[i]!)) i++;
      if (!key || header[i] !== '=') {
        i = save;
        break;
      }
      i++;
      while (i < n && /\s/.test(header[i]!)) i++;
      let value = '';
      if (header[i] === '"') {
        i++;
        while (i < n && header[i] !== '"') {
          if (header[i] === '\\' && i + 1 < n) i++;
          value += header[i++];
        }
        i++;
      } else {
        value = token();
      }
      challenge.params[key.toLowerCase()] = value;
      while (i < n && /\s/.test(header[i]!)) i++;
      if (header[i] === ',') {
        i++;
        // A comma may end this param list and start a new challenge: look ahead for `token SP`.
        const rest = header.slice(i).trimStart();
        if (/^[!#$%&'*+.^_`|~0-9A-Za-z-]+(\s+[^=\s]|\s*$)/.test(rest) && !/^[^=\s]+\s*=/.test(rest)) break;
        continue;
      }
      break;
    }
  }
  return out;
}
