import { chmod, readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { FerryError } from '../../errors.js';
import { outputTarget, publishBytes } from '../../blob/publish.js';
import { childProcess } from '../../util/builtins.js';
import { mkdirs } from '../../util/mkdirs.js';

export interface Credential {
  username: string;
  /** Password, or an identity (refresh) token when `identityToken` is set. */
  secret: string;
  identityToken?: boolean;
  /** A bearer token to send as-is (`registrytoken`). */
  registryToken?: string;
  /** Where a saved credential was found (a file, or `docker-credential-NAME`), for messages. */
  source?: string;
}

/** The credentials key docker uses for a registry: Docker Hub is special. */
export function credentialKey(domain: string): string {
  return isDockerHub(domain) ? 'https://index.docker.io/v1/' : domain;
}

export function isDockerHub(domain: string): boolean {
  return ['docker.io', 'index.docker.io', 'registry-1.docker.io', 'https://index.docker.io/v1/'].includes(domain);
}

export function dockerConfigPath(env = process.env): string {
  return join(env.DOCKER_CONFIG || join(homedir(), '.docker'), 'config.json');
}

function containersAuthPaths(env = process.env): string[] {
  const out: string[] = [];
  if (env.REGISTRY_AUTH_FILE) out.push(env.REGISTRY_AUTH_FILE);
  if (env.XDG_RUNTIME_DIR) out.push(join(env.XDG_RUNTIME_DIR, 'containers', 'auth.json'));
  out.push(join(env.XDG_CONFIG_HOME || join(homedir(), '.config'), 'containers', 'auth.json'));
  return out;
}

interface AuthEntry {
  auth?: string;
  username?: string;
  password?: string;
  identitytoken?: string;
  registrytoken?: string;
}

interface ConfigFile {
  auths?: Record<string, AuthEntry>;
  credsStore?: string;
  credHelpers?: Record<string, string>;
  [k: string]: unknown;
}

async function readConfig(path: string): Promise<ConfigFile | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'ELOOP') throw symlinkLoop(path);
    throw e;
  }
  try {
    const doc = JSON.parse(text) as unknown;
    if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw new Error('not an object');
    return doc as ConfigFile;
  } catch {
    // Never echo the content: it holds secrets.
    throw new FerryError('AUTH', `${path} is not valid JSON`, { hint: 'fix or remove the file, then run `ferry login` again' });
  }
}

/** Host part of an `auths` key: scheme and path stripped, port kept. */
function keyHost(key: string): string {
  return key.replace(/^[a-z]+:\/\//i, '').replace(/\/.*$/, '').toLowerCase();
}

function decodeEntry(entry: AuthEntry, where: string): Credential | undefined {
  if (entry.registrytoken) return { username: '', secret: '', registryToken: entry.registrytoken };
  let username = entry.username ?? '';
  let secret = entry.password ?? '';
  if (entry.auth) {
    const raw = Buffer.from(entry.auth, 'base64').toString('utf8');
    const i = raw.indexOf(':');
    if (i < 0 || !/^[A-Za-z0-9+/=\s]*$/.test(entry.auth)) {
      throw new FerryError('AUTH', `the "auth" entry for ${where} is not valid base64 of user:password`, { hint: 'run `ferry login` again' });
    }
    username = raw.slice(0, i);
    secret = raw.slice(i + 1).replace(/^\0+|\0+$/g, '');
  }
  if (entry.identitytoken) return { username, secret: entry.identitytoken, identityToken: true };
  return username || secret ? { username, secret } : undefined;
}

function findEntry(auths: Record<string, AuthEntry> | undefined, domain: string): [string, AuthEntry] | undefined {
  if (!auths) return undefined;
  const want = isDockerHub(domain) ? ['https://index.docker.io/v1/', 'docker.io', 'index.docker.io', 'registry-1.docker.io'] : [domain];
  for (const k of want) if (auths[k]) return [k, auths[k]!];
  // Exact host match only: "reg.example.com.evil.com" never matches "reg.example.com" (D8).
  const hosts = want.map((w) => keyHost(w));
  for (const [k, v] of Object.entries(auths)) if (hosts.includes(keyHost(k))) return [k, v];
  return undefined;
}

/** Runs `docker-credential-<name> <action>` without a shell, with a timeout; stdout is never logged. */
export async function runHelper(name: string, action: 'get' | 'store' | 'erase', input: string): Promise<string> {
  if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new FerryError('AUTH', `invalid credential helper name "${name}"`);
  const bin = `docker-credential-${name}`;
  return new Promise((resolve, reject) => {
    const child = childProcess().spawn(bin, [action], { stdio: ['pipe', 'pipe', 'pipe'], timeout: 30_000 });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.on('error', (e: NodeJS.ErrnoException) => {
      reject(e.code === 'ENOENT'
        ? new FerryError('AUTH', `credential helper ${bin} is configured but not installed`, { hint: `install ${bin}, or remove it from ${dockerConfigPath()}` })
        : new FerryError('AUTH', `credential helper ${bin} failed: ${e.message}`));
    });
    child.on('close', (code) => {
      if (code === 0) resolve(out);
      else if (/credentials not found/i.test(out)) resolve('');
      else reject(new FerryError('AUTH', `credential helper ${bin} ${action} failed (exit ${code})`));
    });
    child.stdin.end(input);
  });
}

async function fromHelper(helper: string, domain: string): Promise<Credential | undefined> {
  const out = await runHelper(helper, 'get', credentialKey(domain));
  if (!out.trim()) return undefined;
  let doc: { Username?: string; Secret?: string };
  try {
    doc = JSON.parse(out) as typeof doc;
  } catch {
    throw new FerryError('AUTH', `credential helper docker-credential-${helper} returned something that is not JSON`);
  }
  if (!doc.Secret) return undefined;
  return doc.Username === '<token>' ? { username: '', secret: doc.Secret, identityToken: true } : { username: doc.Username ?? '', secret: doc.Secret };
}

/**
 * Credentials for a registry, docker's way: credHelpers[host], else credsStore, else `auths`; then
 * containers' auth.json. A configured helper that is missing is an error, never a reason to try
 * credentials meant for another host (CVE-2021-41092).
 */
export async function lookupCredential(domain: string, env = process.env): Promise<Credential | undefined> {
  const dockerPath = dockerConfigPath(env);
  const docker = await readConfig(dockerPath);
  const helper = docker?.credHelpers?.[domain] ?? (isDockerHub(domain) ? docker?.credHelpers?.['docker.io'] : undefined) ?? docker?.credsStore;
  if (helper) {
    const c = await fromHelper(helper, domain);
    if (c) return { ...c, source: `docker-credential-${helper}` };
  }
  const hit = findEntry(docker?.auths, domain);
  if (hit) return withSource(decodeEntry(hit[1], `${hit[0]} in ${dockerPath}`), dockerPath);
  for (const path of containersAuthPaths(env)) {
    const c = await readConfig(path);
    const h = findEntry(c?.auths, domain);
    if (h) return withSource(decodeEntry(h[1], `${h[0]} in ${path}`), path);
  }
  return undefined;
}

function withSource(c: Credential | undefined, source: string): Credential | undefined {
  return c && { ...c, source };
}

/** Saves credentials the way `docker login` does: through the helper if one is configured, else `auths`. */
export async function saveCredential(domain: string, cred: { username: string; secret: string }, env = process.env): Promise<string> {
  const path = dockerConfigPath(env);
  const docker = (await readConfig(path)) ?? {};
  const key = credentialKey(domain);
  const helper = docker.credHelpers?.[domain] ?? docker.credsStore;
  if (helper) {
    await runHelper(helper, 'store', JSON.stringify({ ServerURL: key, Username: cred.username, Secret: cred.secret }));
    return `docker-credential-${helper}`;
  }
  docker.auths = { ...(docker.auths ?? {}), [key]: { auth: Buffer.from(`${cred.username}:${cred.secret}`).toString('base64') } };
  await writeConfig(path, docker);
  return path;
}

/**
 * Removes a registry's credentials from everywhere lookupCredential() reads them: the helper, the
 * docker config's `auths`, and containers' auth.json files (podman's logout edits those too).
 * Returns where they were removed from; empty when there were none.
 */
export async function eraseCredential(domain: string, env = process.env): Promise<string[]> {
  const removed: string[] = [];
  const path = dockerConfigPath(env);
  const docker = await readConfig(path);
  const helper = docker?.credHelpers?.[domain] ?? docker?.credsStore;
  if (helper) {
    await runHelper(helper, 'erase', credentialKey(domain));
    removed.push(`docker-credential-${helper}`);
  }
  for (const file of [path, ...containersAuthPaths(env)]) {
    const doc = file === path ? docker : await readConfig(file);
    if (doc && dropEntries(doc, domain)) {
      await writeConfig(file, doc);
      removed.push(file);
    }
  }
  return [...new Set(removed)];
}

/** Deletes every `auths` key that names the registry (`host`, `https://host/v2/`, …); true if any. */
function dropEntries(doc: ConfigFile, domain: string): boolean {
  let dropped = false;
  for (let hit = findEntry(doc.auths, domain); hit; hit = findEntry(doc.auths, domain)) {
    delete doc.auths![hit[0]];
    dropped = true;
  }
  return dropped;
}

/**
 * 0600 always (chmod even when the file existed), atomically, keeping keys ferry does not know.
 * A symlinked file (dotfile managers: stow, home-manager) is written at its target, so the link stays.
 */
async function writeConfig(path: string, doc: ConfigFile): Promise<void> {
  const target = await outputTarget(path, LOOP_HINT);
  await mkdirs(dirname(target), 0o700);
  await publishBytes(target, JSON.stringify(doc, null, '\t') + '\n', { mode: 0o600 });
  await chmod(target, 0o600);
}

const LOOP_HINT = 'fix the link, or remove it and run `ferry login` again';

function symlinkLoop(path: string): FerryError {
  return new FerryError('IO', `${path} is a loop of symbolic links`, { hint: LOOP_HINT });
}
