import { FerryError } from '../errors.js';

export interface NumberRule {
  /** Whole numbers only. */
  integer?: boolean;
  /** The smallest value allowed. */
  min?: number;
  /** Values must be above this (for durations that cannot be zero). */
  above?: number;
  max?: number;
  /** What the number counts, for the message: "seconds", "entries". */
  unit?: string;
}

/**
 * A numeric option, read as the text typed and checked here: yargs' own `number` type turns
 * `--jobs abc` into NaN, which then flowed on (a pull with NaN workers stored a manifest and none
 * of its blobs). The message quotes what was typed.
 */
export function numberOption(flag: string, rule: NumberRule, describe: string) {
  return {
    type: 'string' as const,
    describe,
    coerce: (raw: unknown): number | undefined => {
      if (raw === undefined) return undefined;
      const text = Array.isArray(raw) ? String(raw.at(-1)) : String(raw);
      const n = text.trim() === '' ? NaN : Number(text);
      const bounds =
        rule.min !== undefined && rule.max !== undefined
          ? `from ${rule.min} to ${rule.max}`
          : [rule.min !== undefined ? `at least ${rule.min}` : '', rule.above !== undefined ? `above ${rule.above}` : '', rule.max !== undefined ? `at most ${rule.max}` : '']
              .filter(Boolean)
              .join(' and ');
      const ok = Number.isFinite(n)
        && (!rule.integer || Number.isInteger(n))
        && (rule.min === undefined || n >= rule.min)
        && (rule.above === undefined || n > rule.above)
        && (rule.max === undefined || n <= rule.max);
      const what = `${rule.integer ? 'a whole number' : 'a number'}${rule.unit ? ` of ${rule.unit}` : ''}`;
      if (!ok) throw new FerryError('USAGE', `${flag} takes ${what}${bounds ? ` ${bounds}` : ''}, not ${JSON.stringify(text)}`);
      return n;
    },
  };
}

/** `--jobs`: blob transfers at once. */
export const jobsOption = (describe = 'blobs transferred at once (default 4)') => numberOption('--jobs', { integer: true, min: 1, max: 64, unit: 'transfers' }, describe);
