import type { CommandModule } from 'yargs';
import { FerryError } from '../../errors.js';
import { out, printJson, registrySettings, type GlobalArgs } from '../context.js';

interface LoginArgs extends GlobalArgs {
  server?: string;
  username?: string;
  password?: string;
  'password-stdin'?: boolean;
}

async function readStdin(): Promise<string> {
  let s = '';
  for await (const c of process.stdin) s += (c as Buffer).toString();
  return s.replace(/\r?\n$/, '');
}

export const loginCommand: CommandModule<GlobalArgs, LoginArgs> = {
  command: 'login [server]',
  describe: 'Check credentials against a registry and save them (docker config.json or its credential helper)',
  builder: (y) =>
    y
      .positional('server', { type: 'string', describe: 'registry host (default: Docker Hub)' })
      .option('username', { alias: 'u', type: 'string' })
      .option('password', { alias: 'p', type: 'string', describe: 'prefer --password-stdin: arguments are visible to other users' })
      .option('password-stdin', { type: 'boolean', describe: 'read the password (or token) from standard input' }),
  handler: async (args) => {
    const { login, serverDomain } = await import('../../registry-ops.js');
    if (!args.username) throw new FerryError('USAGE', 'ferry login needs a user name (-u USER)');
    let password = args.password;
    if (args['password-stdin']) {
      if (password !== undefined) throw new FerryError('USAGE', '--password and --password-stdin are mutually exclusive');
      password = await readStdin();
    }
    if (!password) throw new FerryError('USAGE', 'ferry login needs a password: pipe it with --password-stdin');
    const where = await login(args.server, { username: args.username, secret: password }, { registry: registrySettings(args) });
    if (args.json) printJson({ server: serverDomain(args.server), savedIn: where });
    else out(`Login Succeeded (${serverDomain(args.server)}; saved in ${where})`);
  },
};

export const logoutCommand: CommandModule<GlobalArgs, { server?: string } & GlobalArgs> = {
  command: 'logout [server]',
  describe: 'Remove saved credentials for a registry',
  builder: (y) => y.positional('server', { type: 'string', describe: 'registry host (default: Docker Hub)' }),
  handler: async (args) => {
    const { logout, serverDomain } = await import('../../registry-ops.js');
    const from = await logout(args.server);
    const server = serverDomain(args.server);
    if (args.json) printJson({ server, removed: from.length > 0, removedFrom: from });
    else out(from.length ? `Removing login credentials for ${server} (from ${from.join(', ')})` : `Not logged in to ${server}`);
  },
};
