import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { exitCodeFor, FerryError, toFerryError } from '../errors.js';
import { interrupt } from './context.js';
import { copyCommand } from './commands/copy.js';
import { catalogCommand, tagsCommand } from './commands/tags.js';
import { loginCommand, logoutCommand } from './commands/login.js';
import { pullCommand } from './commands/pull.js';
import { pushCommand } from './commands/push.js';
import { rmCommand } from './commands/rm.js';
import { syncCommand } from './commands/sync.js';
import { inventoryCommand } from './commands/inventory.js';
import { gcCommand } from './commands/gc.js';
import { imagesCommand } from './commands/images.js';
import { inspectCommand } from './commands/inspect.js';
import { rmiCommand } from './commands/rmi.js';
import { tagCommand } from './commands/tag.js';
import { verifyCommand } from './commands/verify.js';
import { VERSION } from '../version.js';
import { closeRegistryClients } from '../locations/registry-transport.js';

let signalled: NodeJS.Signals | undefined;

/** First signal: abort cleanly (temp files removed, locks released). Second: leave at once. */
function trapSignals(): void {
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      if (signalled) process.exit(sig === 'SIGINT' ? 130 : 143);
      signalled = sig;
      interrupt.abort(new FerryError('ABORTED', `interrupted by ${sig}`));
    });
  }
}

function report(e: unknown, debug: boolean): number {
  const err = toFerryError(e);
  if (signalled && (err.code === 'ABORTED' || interrupt.signal.aborted)) {
    process.stderr.write(`ferry: interrupted\n`);
    return signalled === 'SIGTERM' ? 143 : 130;
  }
  process.stderr.write(`ferry: error: ${err.message}\n`);
  if (err.hint) process.stderr.write(`ferry: hint: ${err.hint}\n`);
  if (debug || err.code === 'INTERNAL') process.stderr.write(`${(err.cause as Error | undefined)?.stack ?? err.stack}\n`);
  return exitCodeFor(err);
}

export async function main(argv: string[]): Promise<number> {
  const debug = argv.includes('--debug');
  let failure: unknown;
  const cli = yargs(argv)
    .scriptName('ferry')
    .usage('$0 <command> [options]\n\nMove container images between registries, OCI layouts and archives; every digest verified.')
    .option('store', { type: 'string', global: true, describe: 'store directory (default: $FERRY_STORE or ~/.local/share/ferry/store)' })
    .option('quiet', { alias: 'q', type: 'boolean', global: true, describe: 'print only results' })
    .option('json', { type: 'boolean', global: true, describe: 'machine-readable output on stdout' })
    .option('debug', { type: 'boolean', global: true, describe: 'print request lines and stack traces (never secrets)' })
    .option('insecure', { type: 'boolean', global: true, describe: 'registries: skip TLS verification and allow plain http' })
    .option('plain-http', { type: 'boolean', global: true, describe: 'registries: allow plain http (loopback registries always may)' })
    .command(imagesCommand)
    .command(inspectCommand)
    .command(tagCommand)
    .command(rmiCommand)
    .command(gcCommand)
    .command(verifyCommand)
    .command(copyCommand)
    .command(pullCommand)
    .command(pushCommand)
    .command(loginCommand)
    .command(logoutCommand)
    .command(tagsCommand)
    .command(catalogCommand)
    .command(rmCommand)
    .command(syncCommand)
    .command(inventoryCommand)
    .demandCommand(1, 'name a command; see ferry --help')
    .strict()
    .version(VERSION)
    .help()
    .alias('h', 'help')
    .wrap(Math.min(110, process.stdout.columns ?? 100))
    .fail((msg, err) => {
      failure = err ?? new FerryError('USAGE', msg);
    })
    .exitProcess(false);
  try {
    await cli.parseAsync();
  } catch (e) {
    failure ??= e;
  }
  if (failure === undefined) return 0;
  if (toFerryError(failure).code === 'USAGE') {
    process.stderr.write(`ferry: error: ${toFerryError(failure).message}\nRun 'ferry --help' for usage.\n`);
    return 2;
  }
  return report(failure, debug);
}

export async function run(): Promise<void> {
  trapSignals();
  process.exitCode = await main(hideBin(process.argv));
  // Pooled keep-alive connections would hold the process open.
  await closeRegistryClients().catch(() => {});
}
