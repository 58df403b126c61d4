import { FerryError } from '../errors.js';
import { numberKind, readNumber, type NumberRule } from './numbers.js';

/**
 * A number from the environment: unset or empty gives `fallback`; anything else must be a number
 * in range, or the run stops naming the variable (a typo there used to be ignored silently).
 */
export function envNumber(name: string, rule: NumberRule & ({ min: number } | { above: number }), fallback: number, env: NodeJS.ProcessEnv = process.env): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const n = readNumber(raw, rule);
  if (n !== undefined) return n;
  const bound = rule.above !== undefined ? `above ${rule.above}` : `from ${rule.min}`;
  throw new FerryError('USAGE', `${name} must be ${numberKind(rule)} ${bound}, not ${JSON.stringify(raw)}`, { hint: `fix it, or unset ${name} for the default` });
}
