import { FerryError } from '../errors.js';
import { numberKind, readNumber, type NumberRule } from '../util/numbers.js';

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
      const n = readNumber(text, rule);
      if (n !== undefined) return n;
      const bounds =
        rule.min !== undefined && rule.max !== undefined
          ? `from ${rule.min} to ${rule.max}`
          : [rule.min !== undefined ? `at least ${rule.min}` : '', rule.above !== undefined ? `above ${rule.above}` : '', rule.max !== undefined ? `at most ${rule.max}` : '']
              .filter(Boolean)
              .join(' and ');
      throw new FerryError('USAGE', `${flag} takes ${numberKind(rule)}${bounds ? ` ${bounds}` : ''}, not ${JSON.stringify(text)}`);
    },
  };
}

/** `--jobs`: blob transfers at once. */
export const jobsOption = (describe = 'blobs transferred at once (default 4)') => numberOption('--jobs', { integer: true, min: 1, max: 64, unit: 'transfers' }, describe);
