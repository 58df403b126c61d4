import { shortDigest } from '../oci/digest.js';
import { checkMedia, type Amount, type Plan } from '../plan.js';
import { humanSize, out, printJson, table, type GlobalArgs } from './context.js';

const amount = (a: Amount) => `${a.count} (${humanSize(a.bytes)})`;

/** Prints a dry-run plan (one JSON document with --json, else a short table), then fails if it does not fit on --media. */
export function printPlan(args: GlobalArgs, plan: Plan, extra: object = {}): void {
  if (args.json) printJson({ ...plan, ...extra });
  else {
    out(`Plan (dry run, nothing written): ${plan.command} -> ${plan.destination || '(nothing to do)'}`);
    if (plan.images.length) {
      out(table([
        ['IMAGE', 'DIGEST', 'PLATFORMS', 'AS'],
        ...plan.images.map((i) => [i.source, shortDigest(i.digest), i.platforms.join(',') || '-', i.names.join(', ') || '-']),
      ]));
    }
    const a = plan.archive;
    out(table([
      ['blobs to move', `${amount(plan.blobs)} after deduplication`],
      ['already there', amount(plan.skipped)],
      ...(plan.excluded.count ? [['excluded', `${amount(plan.excluded)} listed by --exclude-from`]] : []),
      ['manifests', amount(plan.manifests)],
      ...(a ? [['archive', `${humanSize(a.bytes)} as tar${a.compression === 'none' ? '' : ` before ${a.compression} compression, at most ${humanSize(a.maxBytes ?? a.bytes)} after`}`]] : []),
      ...(a?.volumeSize !== undefined ? [['volumes', `${a.files.length} each under ${humanSize(a.volumeSize)}: ${a.files.map((f) => f.path).join(', ')}`]] : []),
      ...(a?.media ? [['media', a.media.fits ? `fits on ${humanSize(a.media.size)}, ${humanSize(a.media.free)} to spare` : `does NOT fit on ${humanSize(a.media.size)}: ${humanSize(a.media.over)} too much`]] : []),
    ].map(([k, v]) => [`${k}:`, v!])));
  }
  checkMedia(plan);
}
