import { FerryError } from '../errors.js';

/**
 * A number from the environment: unset or empty gives `fallback`; anything else must be a number
 * in range, or the run stops naming the variable (a typo there used to be ignored silently).
 */
export function envNumber(name: string, rule: { min: number; above?: boolean; integer?: boolean; unit: string }, fallback: number, env: NodeJS.ProcessEnv = process.env): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const n = Number(raw);
  const ok = Number.isFinite(n) && (rule.above ? n > rule.min : n >= rule.min) && (!rule.integer || Number.isSafeInteger(n));
  if (!ok) throw new FerryError('USAGE', `${name} must be ${rule.integer ? 'a whole' : 'a'} number of ${rule.unit} ${rule.above ? 'above' : 'from'} ${rule.min}, not ${JSON.stringify(raw)}`, { hint: `fix it, or unset ${name} for the default` });
  return n;
}
