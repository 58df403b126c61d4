/** What a number from the command line or the environment must be. */
export interface NumberRule {
  /** Whole numbers only. */
  integer?: boolean;
  /** The smallest value allowed. */
  min?: number;
  /** Values must be above this (for durations that cannot be zero). */
  above?: number;
  max?: number;
  /** What the number counts, for messages: "seconds", "entries". */
  unit?: string;
}

/** The number `text` says, if it is one the rule allows (blank is not a number, as Number() would have it). */
export function readNumber(text: string, rule: NumberRule): number | undefined {
  const n = text.trim() === '' ? NaN : Number(text);
  const ok = Number.isFinite(n)
    && (!rule.integer || Number.isSafeInteger(n))
    && (rule.min === undefined || n >= rule.min)
    && (rule.above === undefined || n > rule.above)
    && (rule.max === undefined || n <= rule.max);
  return ok ? n : undefined;
}

/** "a whole number of seconds", "a number". */
export function numberKind(rule: NumberRule): string {
  return `${rule.integer ? 'a whole number' : 'a number'}${rule.unit ? ` of ${rule.unit}` : ''}`;
}
