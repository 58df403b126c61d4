import yargs, { type CommandModule } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { exitCodeFor, FerryError, toFerryError } from '../errors.js';
import { commandLine, interrupt, printError, stderrLine } from './context.js';
import { setWarningSink } from '../log.js';
import { VERSION } from '../version.js';
import { numberOption } from './numbers.js';
import { closeRegistryClients } from '../locations/registry-transport.js';

type Loader = () => Promise<CommandModule<any, any>>; // eslint-disable-line @typescript-eslint/no-explicit-any

/**
 * Every command, loaded on demand: a run imports only the module of the command it runs (help and
 * completion load them all), so `ferry images` does not pay for the HTTP stack or the tar code.
 */
const COMMANDS: Array<[string, Loader]> = [
  ['images', async () => (await import('./commands/images.js')).imagesCommand],
  ['inspect', async () => (await import('./commands/inspect.js')).inspectCommand],
  ['tag', async () => (await import('./commands/tag.js')).tagCommand],
  ['rmi', async () => (await import('./commands/rmi.js')).rmiCommand],
  ['gc', async () => (await import('./commands/gc.js')).gcCommand],
  ['verify', async () => (await import('./commands/verify.js')).verifyCommand],
  ['save', async () => (await import('./commands/save.js')).saveCommand],
  ['load', async () => (await import('./commands/load.js')).loadCommand],
  ['serve', async () => (await import('./commands/serve.js')).serveCommand],
  ['export', async () => (await import('./commands/export.js')).exportCommand],
  ['import', async () => (await import('./commands/import.js')).importCommand],
  ['copy', async () => (await import('./commands/copy.js')).copyCommand],
  ['pull', async () => (await import('./commands/pull.js')).pullCommand],
  ['push', async () => (await import('./commands/push.js')).pushCommand],
  ['login', async () => (await import('./commands/login.js')).loginCommand],
  ['logout', async () => (await import('./commands/login.js')).logoutCommand],
  ['tags', async () => (await import('./commands/tags.js')).tagsCommand],
  ['catalog', async () => (await import('./commands/tags.js')).catalogCommand],
  ['rm', async () => (await import('./commands/rm.js')).rmCommand],
  ['sync', async () => (await import('./commands/sync.js')).syncCommand],
  ['inventory', async () => (await import('./commands/inventory.js')).inventoryCommand],
];

/** The name of every command (tests check that each has documented --json output). */
export const COMMAND_NAMES: readonly string[] = COMMANDS.map(([name]) => name);

/** Global options that take a value, so that their value is not mistaken for the command. */
const VALUED = new Set(['--store', '--timeout']);

function commandWord(argv: string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (VALUED.has(a)) i++;
    else if (!a.startsWith('-')) return a;
  }
  return undefined;
}

async function loadCommands(argv: string[]): Promise<CommandModule<any, any>[]> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const word = commandWord(argv);
  const one = COMMANDS.find(([name]) => name === word);
  const help = argv.includes('--help') || argv.includes('-h');
  // `ferry --version` needs no command; loading them all cost ~0.2 s.
  if (!word && !help && argv.includes('--version')) return [];
  const wanted = one && !help ? [one] : COMMANDS;
  return Promise.all(wanted.map(([, load]) => load()));
}

function wantsHelp(argv: string[]): boolean {
  return argv.includes('--help') || argv.includes('-h') || commandWord(argv) === undefined;
}

let signalled: keyof typeof SIGNAL_EXIT | undefined;

/** Exit status after a signal: 128 + its number, as a shell reports a process it killed. */
const SIGNAL_EXIT = { SIGHUP: 129, SIGINT: 130, SIGTERM: 143 } as const;

/**
 * First signal: abort cleanly (temp files removed, locks released). Second: leave at once. A
 * hangup (the terminal or ssh session went away) is one too, unless the run was started with it
 * ignored (nohup, `trap '' HUP`): Node resets every signal to its default at start, undoing that,
 * so bin/ferry looks before it starts Node and says so in FERRY_NOHUP; the run then goes on.
 */
function trapSignals(): void {
  const signals: Array<keyof typeof SIGNAL_EXIT> = ['SIGINT', 'SIGTERM'];
  if (process.env.FERRY_NOHUP === '1') process.on('SIGHUP', () => {});
  else signals.push('SIGHUP');
  for (const sig of signals) {
    process.on(sig, () => {
      if (signalled) process.exit(SIGNAL_EXIT[sig]);
      signalled = sig;
      interrupt.abort(new FerryError('ABORTED', `interrupted by ${sig}`));
    });
  }
}

/** Exit status of a tool killed by SIGPIPE, which is what a shell expects after `| head`. */
const CLOSED_STDOUT = 141;
let stdoutClosed = false;
/** Set once the command has returned: a closed stdout noticed after that is reported by the trap. */
let finished = false;

const CLOSED_STDOUT_MESSAGE = 'ferry: error: standard output was closed before the output was complete (EPIPE)';

/**
 * `ferry save -o - | head -c 1000`: the reader left. Stop with the status of a tool killed by
 * SIGPIPE, through the abort path so temporary files are still removed, with one line (no stack).
 */
function trapClosedStdout(): void {
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    // EIO: a terminal that hung up, gone as surely as a pipe's reader.
    if (e.code !== 'EPIPE' && e.code !== 'EIO') throw e;
    if (stdoutClosed) return;
    stdoutClosed = true;
    // A short output written in one go (`ferry images | true`) fails only after the command
    // returned, with its exit status already set: that is still output nobody read.
    if (finished) {
      process.stderr.write(`${CLOSED_STDOUT_MESSAGE}\n`);
      process.exitCode = CLOSED_STDOUT;
      return;
    }
    // Streams torn down by the abort can still report it with nobody listening; the reader is gone
    // and there is no one left to tell.
    process.on('uncaughtException', () => process.exit(CLOSED_STDOUT));
    if (!interrupt.signal.aborted) interrupt.abort(new FerryError('ABORTED', 'standard output was closed'));
  });
}

/**
 * stderr's reader left (`2>&1 | head`, a log shipper restarted): only status lines, warnings and
 * messages go there, so the command goes on without them. Unhandled, the next status line's EPIPE
 * killed a save with its temp file left behind. Once destroyed, the stream drops what is written.
 */
function trapClosedStderr(): void {
  process.stderr.on('error', (e: NodeJS.ErrnoException) => {
    // EIO: its terminal hung up (an ssh session dropped under a run that ignores SIGHUP).
    if (e.code !== 'EPIPE' && e.code !== 'EIO') throw e;
  });
}

function report(e: unknown, flags: { debug: boolean; json: boolean }): number {
  if (stdoutClosed) return CLOSED_STDOUT;
  const err = toFerryError(e);
  if (signalled && (err.code === 'ABORTED' || interrupt.signal.aborted)) {
    process.stderr.write(`ferry: interrupted\n`);
    const code = SIGNAL_EXIT[signalled];
    if (flags.json) printError(new FerryError('ABORTED', `interrupted by ${signalled}`), code);
    return code;
  }
  if (flags.json) printError(err);
  const debug = flags.debug;
  process.stderr.write(`ferry: error: ${err.message}\n`);
  if (err.hint) process.stderr.write(`ferry: hint: ${err.hint}\n`);
  if (debug || err.code === 'INTERNAL') process.stderr.write(`${(err.cause as Error | undefined)?.stack ?? err.stack}\n`);
  return exitCodeFor(err);
}

/**
 * yargs-parser never gives an array option a value that starts with `-`, so `load -i -` (standard
 * input, as documented) became `-i` with nothing and a stray `-`. Joined, it parses.
 */
function joinDashValues(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if ((a === '-i' || a === '--input') && argv[i + 1] === '-') {
      out.push(`${a}=-`);
      i++;
    } else out.push(a);
  }
  return out;
}

/** yargs names an unknown `--bogus-flag` twice, the second time as `bogusFlag`. */
function withoutCamelCopies(msg: string): string {
  const [head, list] = [msg.slice(0, msg.indexOf(':')), msg.slice(msg.indexOf(':') + 1).split(',').map((x) => x.trim())];
  const camel = (x: string) => x.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
  const kept = list.filter((x) => !list.some((y) => y !== x && y.includes('-') && camel(y) === x));
  return `${kept.length === 1 ? 'Unknown argument' : head}: ${kept.join(', ')}`;
}

/** yargs' (untyped) view of the options it knows while it parses a command. */
type OptionsView = { getOptions(): { key: Record<string, unknown>; alias: Record<string, string[]>; array: string[] } };

/** Options that may be repeated without being array options (those would swallow the positionals after them). */
const REPEATABLE = ['include', 'exclude', 'from'];

/**
 * yargs turns an option given twice into an array, which handlers of single-valued options never
 * expect (`-o a.tar -o b.tar` ended in a TypeError). Refused here, naming the option.
 */
function refuseRepeats(parsed: Record<string, unknown>, cli: OptionsView): void {
  const o = cli.getOptions();
  const many = new Set([...o.array, ...o.array.flatMap((k) => o.alias[k] ?? []), ...REPEATABLE]);
  for (const key of Object.keys(o.key)) {
    const value = parsed[key];
    if (!Array.isArray(value) || many.has(key) || key.length === 1) continue;
    const list = key === 'platform' ? `; several platforms go in one comma list: --platform ${value.join(',')}` : '';
    throw new FerryError('USAGE', `--${key} was given ${value.length} times (${value.map(String).join(', ')}); it takes one value${list}`);
  }
}

/** The first flag in argv that the command being parsed does not know. */
function unknownFlag(argv: string[], cli: OptionsView): string | undefined {
  const o = cli.getOptions();
  const known = new Set([...Object.keys(o.key), ...Object.values(o.alias).flat()]);
  for (const a of argv) {
    if (a === '--') break;
    const m = /^--?([^=]+)/.exec(a);
    if (!m) continue;
    const name = m[1]!;
    if (!known.has(name) && !known.has(name.replace(/^no-/, ''))) return a.split('=')[0];
  }
  return undefined;
}

/**
 * Whether --json is on, read before yargs parses (a usage error stops it): `--json=true` too, and
 * the last of `--json`/`--no-json` wins, as yargs has it.
 */
function jsonFlag(argv: string[]): boolean {
  let on = false;
  for (const a of argv) {
    if (a === '--') break;
    if (a === '--json' || a === '--json=true') on = true;
    else if (a === '--no-json' || a === '--json=false') on = false;
  }
  return on;
}

export async function main(rawArgv: string[]): Promise<number> {
  const argv = joinDashValues(rawArgv);
  commandLine.splice(0, commandLine.length, ...rawArgv);
  // yargs' completion command prints its script even when asked for help.
  if (commandWord(argv) === 'completion' && (argv.includes('--help') || argv.includes('-h'))) {
    process.stdout.write('ferry completion\n\nPrint a bash/zsh completion script. Load it with: source <(ferry completion)\n');
    return 0;
  }
  const flags = { debug: argv.includes('--debug'), json: jsonFlag(argv) };
  let failure: unknown;
  const cli = yargs(argv)
    .scriptName('ferry')
    .usage('$0 <command> [options]\n\nMove container images between registries, OCI layouts and archives; every digest verified.')
    .option('store', { type: 'string', global: true, describe: 'store directory (default: $FERRY_STORE, else $XDG_DATA_HOME/ferry/store, else ~/.local/share/ferry/store)' })
    .option('quiet', { alias: 'q', type: 'boolean', global: true, describe: 'print only results' })
    .option('json', { type: 'boolean', global: true, describe: 'machine-readable output on stdout' })
    .option('debug', { type: 'boolean', global: true, describe: 'print request lines and stack traces (never secrets)' })
    .option('insecure', { type: 'boolean', global: true, describe: 'registries: skip TLS verification and allow plain http' })
    .option('plain-http', { type: 'boolean', global: true, describe: 'registries: allow plain http (loopback registries always may)' })
    .option('timeout', { ...numberOption('--timeout', { above: 0, unit: 'seconds' }, 'registries: seconds a connection may stay silent before it is retried (default 60)'), global: true })
    .command(await loadCommands(argv))
    .middleware((parsed): void => refuseRepeats(parsed, cli as unknown as OptionsView), true)
    .completion('completion', 'Print a bash/zsh completion script (source <(ferry completion))', withoutLongShorts)
    .demandCommand(1, 'name a command; see ferry --help')
    .strict()
    .version(VERSION)
    .help()
    .alias('h', 'help')
    // yargs renders the help text on every run (kept for failures); wrapping it cost 60 ms of
    // each command's start, so it is wrapped only when it is asked for.
    .wrap(wantsHelp(argv) ? Math.min(110, process.stdout.columns || 100) : null)
    .fail((msg, err) => {
      // yargs counts the arguments before it looks for unknown flags: `pull --forse IMG` took IMG as
      // the value of --forse and said an argument was missing. Name the flag instead.
      const stray = /^Not enough non-option arguments/.test(msg ?? '') ? unknownFlag(argv, cli as unknown as OptionsView) : undefined;
      if (stray) msg = `Unknown argument: ${stray}`;
      else if (/^Unknown arguments?: /.test(msg ?? '')) msg = withoutCamelCopies(msg!);
      // yargs wraps what an option's coerce threw (our usage errors) in its own YError.
      failure = !err || err.name === 'YError' ? new FerryError('USAGE', err?.message ?? msg) : err;
      // Throwing stops yargs: otherwise it still runs the command's handler with the bad arguments.
      throw failure;
    })
    .exitProcess(false);
  // yargs also renders the whole help text after starting every command, to show it if the
  // command fails; our fail() never does, and the rendering measures every line with
  // Intl.Segmenter (ICU data: ~3 MiB resident, 15-30 ms). help() still renders when asked.
  const usage = (cli as unknown as { getInternalMethods?: () => { getUsageInstance?: () => { cacheHelpMessage?: () => void } } })
    .getInternalMethods?.().getUsageInstance?.();
  if (usage?.cacheHelpMessage) usage.cacheHelpMessage = () => {};
  try {
    await cli.parseAsync();
  } catch (e) {
    failure ??= e;
  }
  if (failure === undefined) return 0;
  const refused = toFerryError(failure);
  if (refused.code === 'USAGE') {
    if (flags.json) printError(refused);
    // A command's own usage error says what to do; yargs' parsing errors point at --help.
    const next = refused.hint ? `ferry: hint: ${refused.hint}` : "Run 'ferry --help' for usage.";
    process.stderr.write(`ferry: error: ${refused.message}\n${next}\n`);
    return 2;
  }
  return report(failure, flags);
}

/** yargs' own completions, less the one-letter aliases it offers as `--q`, `--o` after a typed `--`. */
function withoutLongShorts(_current: string, _argv: unknown, defaults: (done: (err: Error | null, words: string[] | undefined) => void) => void, done: (words: string[]) => void): void {
  defaults((err, words) => done(err ? [] : (words ?? []).filter((w) => !/^--[^-:](:|$)/.test(w))));
}

export async function run(): Promise<void> {
  trapSignals();
  setWarningSink((m) => stderrLine(`ferry: warning: ${m}`));
  trapClosedStdout();
  trapClosedStderr();
  const code = await main(hideBin(process.argv));
  finished = true;
  if (stdoutClosed) process.stderr.write(`${CLOSED_STDOUT_MESSAGE}\n`);
  process.exitCode = stdoutClosed ? CLOSED_STDOUT : code;
  // Pooled keep-alive connections would hold the process open.
  await closeRegistryClients().catch(() => {});
}
