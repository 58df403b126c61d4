import type { CommandModule } from 'yargs';
import { FerryError } from '../../errors.js';
import { startServer } from '../../serve/server.js';
import { defaultStoreDir } from '../../store.js';
import { interrupt, out, printResult, status, type GlobalArgs } from '../context.js';
import { numberOption } from '../numbers.js';
import { envNumber } from '../../util/env.js';

interface Args extends GlobalArgs {
  addr: string;
  'read-only'?: boolean;
  htpasswd?: string;
  'token-auth'?: boolean;
  'tls-cert'?: string;
  'tls-key'?: string;
  grace?: number;
}

export const serveCommand: CommandModule<GlobalArgs, Args> = {
  command: 'serve',
  describe: 'Serve the store as an OCI distribution registry (push, pull, tags, referrers)',
  builder: (y) =>
    y
      .option('addr', { type: 'string', default: '127.0.0.1:5000', describe: 'HOST:PORT to listen on (port 0: a free port, printed)' })
      .option('read-only', { type: 'boolean', describe: 'refuse pushes and deletes (405)' })
      .option('htpasswd', { type: 'string', describe: 'require users from this htpasswd file (bcrypt: htpasswd -B)' })
      .option('token-auth', { type: 'boolean', describe: 'bearer tokens from this server\'s /token endpoint instead of Basic auth' })
      .option('tls-cert', { type: 'string', describe: 'serve https with this certificate (PEM)' })
      .option('tls-key', { type: 'string', describe: 'private key (PEM) for --tls-cert' })
      .option('grace', numberOption('--grace', { min: 0, unit: 'seconds' }, 'seconds to let requests finish on SIGTERM, SIGINT or SIGHUP (default 10)')),
  handler: async (args) => {
    const grace = args.grace ?? 10;
    const storeDir = args.store ?? defaultStoreDir();
    const server = await startServer({
      storeDir,
      addr: args.addr,
      readOnly: args['read-only'],
      htpasswd: args.htpasswd,
      tokenAuth: args['token-auth'],
      tlsCert: args['tls-cert'],
      tlsKey: args['tls-key'],
      uploadMaxAgeMs: envNumber('FERRY_SERVE_UPLOAD_TTL_MS', { min: 1, unit: 'milliseconds' }, 24 * 3600_000),
      accessLog: args.quiet ? undefined : (line) => process.stderr.write(`ferry serve: ${new Date().toISOString()} ${line}\n`),
    });
    const where = { url: server.url, host: server.host, port: server.port, store: storeDir, readOnly: args['read-only'] === true };
    // A line, not a document: whoever started the server reads it while the server runs.
    if (args.json) out(JSON.stringify({ event: 'listening', ...where }));
    else out(`ferry serve: listening on ${server.url} (store ${storeDir}${args['read-only'] ? ', read-only' : ''})`);
    await new Promise<void>((resolve) => {
      if (interrupt.signal.aborted) resolve();
      else interrupt.signal.addEventListener('abort', () => resolve(), { once: true });
    });
    status(args, `ferry serve: stopping; waiting up to ${grace}s for requests in progress`);
    const { forced } = await server.close(grace * 1000);
    if (forced) {
      throw new FerryError('ABORTED', 'requests were still running after the grace period; unfinished uploads were kept and can be resumed');
    }
    status(args, 'ferry serve: stopped');
    if (args.json) printResult(where);
  },
};
