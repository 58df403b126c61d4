import { FerryError } from '../errors.js';
import type { Descriptor } from '../oci/manifest.js';
import type { Sink } from '../types.js';

/** What a dry run does where it would write to `label`: fail loudly (it must write nothing). */
export function refuseWrite(label: string): () => Promise<never> {
  return async () => {
    throw new FerryError('INTERNAL', `a dry run tried to write to ${label}`);
  };
}

/** A destination for a dry run's plan: it holds what `has` says and accepts nothing. */
export function dryRunSink(label: string, has: (d: Descriptor) => Promise<boolean> = async () => false): Sink {
  const refuse = refuseWrite(label);
  return { caps: { concurrent: true, indexes: true }, has, put: refuse, tag: refuse, commit: refuse, close: async () => {} };
}
