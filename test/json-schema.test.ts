import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COMMAND_NAMES } from '../src/cli/main.js';
import { ferry, start, type RunOptions, type RunResult } from './helpers/cli.js';
import { blobFile, testdataImages } from './helpers/expected-images.js';
import { TESTDATA, flipByte, tempDir, testdataCopy } from './helpers/fs.js';
import { PASSWORD, startDistribution, USER, type RunningRegistry } from './helpers/registry.js';
import { hasTool } from './helpers/tools.js';

/**
 * Runs every command with --json against testdata, a real docker-registry and ferry serve, and
 * validates each line (NDJSON commands) or the document (the others) against
 * docs/schemas/ferry-output.schema.json; failed runs must end in a valid error line.
 */

const SCHEMA_ID = 'urn:ferry:json-output:1';
const ajv = new Ajv2020({ allErrors: true, strict: true });
for (const file of ['plan.schema.json', 'ferry-output.schema.json']) {
  ajv.addSchema(JSON.parse(await readFile(join(import.meta.dirname, '..', 'docs', 'schemas', file), 'utf8')) as object);
}

/** Commands in COMMANDS that print no JSON, and why. (`completion` is yargs', not in COMMANDS: it prints a shell script.) */
const NO_JSON: Record<string, string> = {};

const covered = new Set<string>();

function validate(def: string, value: unknown): void {
  const check = ajv.getSchema(`${SCHEMA_ID}#/$defs/${def}`);
  if (!check) throw new Error(`no $defs/${def} in the schema`);
  if (!check(value)) throw new Error(`does not match $defs/${def}: ${ajv.errorsText(check.errors, { separator: '\n  ' })}\n${JSON.stringify(value)}`);
}

function commandOf(args: string[]): string {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--store') i++;
    else if (!args[i]!.startsWith('-')) return args[i]!;
  }
  throw new Error(`no command in ${args.join(' ')}`);
}

function checkError(r: RunResult, line: unknown): void {
  validate('error', line);
  expect((line as { exitCode: number }).exitCode, 'the error line carries the exit code').toBe(r.code);
}

/** An NDJSON command: every line validates; the last is the result (or, failing, the error). */
async function lines(def: string, args: string[], o: RunOptions & { code?: number } = {}): Promise<Array<Record<string, unknown>>> {
  const r = await ferry(['--json', ...args], o);
  expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(o.code ?? 0);
  const out = r.stdout.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
  for (const l of out) validate(def, l);
  const last = out.at(-1);
  if (r.code === 0) expect(last?.event).toBe('result');
  else checkError(r, last);
  covered.add(commandOf(args));
  return out;
}

/** A one-document command: stdout is one JSON value matching `def` (or, failing, the error line). */
async function doc<T = Record<string, unknown>>(def: string, args: string[], o: RunOptions & { code?: number } = {}): Promise<T> {
  const r = await ferry(['--json', ...args], o);
  expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(o.code ?? 0);
  const value = JSON.parse(r.stdout) as T;
  if (r.code !== 0 && (value as { event?: string }).event === 'error') checkError(r, value);
  else validate(def, value);
  covered.add(commandOf(args));
  return value;
}

describe('the schema is strict enough to catch regressions', () => {
  const good = {
    event: 'result',
    images: [{ ref: 'x:1', digest: `sha256:${'a'.repeat(64)}`, mediaType: 'application/vnd.oci.image.manifest.v1+json', platforms: ['linux/amd64'], names: [{ tag: '1' }] }],
    blobs: { copied: 1, skipped: 0, mounted: 0, bytesCopied: 10, bytesSkipped: 0 },
    manifests: { copied: 1, skipped: 0 },
  };

  it('accepts a well-formed result and refuses renamed, missing, mistyped or unknown fields', () => {
    validate('result.copy', good);
    validate('result.copy', { ...good, images: [{ ...good.images[0], source: `sha256:${'b'.repeat(64)}` }] });
    const bad: unknown[] = [
      { ...good, images: [{ ...good.images[0], source: 'sha256:abc' }] },
      { ...good, extra: 1 },
      { ...good, blobs: { ...good.blobs, bytesCopied: '10' } },
      { ...good, manifests: { copied: 1 } },
      { ...good, images: [{ ...good.images[0], digest: 'sha256:abc' }] },
      { ...good, images: [{ ...good.images[0], platforms: ['linux'] }] },
      { ...good, event: 'results' },
    ];
    for (const b of bad) expect(() => validate('copy', b), JSON.stringify(b)).toThrow(/does not match/);
    expect(() => validate('error', { event: 'error', code: 'OOPS', exitCode: 2, message: 'x' })).toThrow(/does not match/);
    expect(() => validate('copy', { event: 'blob-done', digest: good.images[0]!.digest })).toThrow(/does not match/);
  });
});

describe('--json output validates against docs/schemas/ferry-output.schema.json', () => {
  let store: string;
  let dir: string;

  beforeAll(async () => {
    dir = await tempDir();
    store = join(dir, 'store');
  });

  it('local commands: copy, images, inspect, tag, save, load, verify, export, import, rmi, gc, inventory', async () => {
    const exp = await testdataImages();
    const s = ['--store', store];
    const copied = await lines('copy', [...s, 'copy', `oci:${TESTDATA}:layers`, 'example.com/app:1']);
    expect(copied.map((l) => l.event)).toEqual(expect.arrayContaining(['resolved', 'queued', 'blob-start', 'blob-done', 'manifest', 'tagged', 'result']));
    await lines('copy', [...s, 'copy', `oci:${TESTDATA}:multi`, 'example.com/multi:1']);

    const images = await doc<Array<{ digest: string }>>('images', [...s, 'images']);
    expect(images.map((i) => i.digest)).toContain(exp.layers.digest);
    await doc('inspect', [...s, 'inspect', 'example.com/app:1']);
    const index = await doc('inspect', ['inspect', `oci:${TESTDATA}:multi`]);
    expect(index.index).toBeDefined();
    await doc('tag', [...s, 'tag', 'example.com/app:1', 'example.com/app:2']);

    const tar = join(dir, 'app.tar');
    const saved = await lines('save', [...s, 'save', 'example.com/app:1', 'example.com/multi:1', '-o', tar]);
    expect(saved.map((l) => l.event)).toContain('blob-done');
    const loaded = await lines('load', ['--store', join(dir, 'loaded'), 'load', '-i', tar]);
    expect(loaded.map((l) => l.event)).toEqual(expect.arrayContaining(['image', 'result']));
    await lines('load', ['--store', join(dir, 'loaded'), 'load', '-i', tar]);

    expect((await doc('verify', [...s, 'verify'])).ok).toBe(true);
    expect((await doc('verify', [...s, 'verify', 'example.com/app:1'])).ok).toBe(true);
    expect((await doc<Array<{ ok: boolean }>>('verify.archives', ['verify', tar]))[0]!.ok).toBe(true);
    // Problems found: the report is the one document (no error line after it), exit 4.
    const damaged = await testdataCopy();
    await flipByte(blobFile(damaged, exp.layers.layers![0]!.digest));
    const bad = await doc<{ ok: boolean; problems: unknown[] }>('verify', ['verify', damaged], { code: 4 });
    expect(bad.ok).toBe(false);
    // A damaged volume set: its problem names the volume it is in.
    await lines('save', [...s, 'save', 'example.com/app:1', '-o', join(dir, 'set.tar'), '--volume-size', '64k']);
    const volume = join(dir, 'set.001.tar');
    const bytes = await readFile(volume);
    const layer = exp.layers.layers![0]!.digest;
    bytes[bytes.indexOf(`blobs/sha256/${layer.slice(7)}\0`) + 512 + 10]! ^= 0xff;
    await writeFile(volume, bytes);
    const badSet = await doc<Array<{ problems: Array<{ digest: string; volume: number }> }>>('verify.archives', ['verify', volume], { code: 4 });
    expect(badSet[0]!.problems).toEqual([expect.objectContaining({ digest: layer, volume: 1 })]);

    await doc('export', [...s, 'export', 'example.com/app:1', '-o', join(dir, 'rootfs.tar')]);
    await doc('export', [...s, 'export', 'example.com/app:1', '--dir', join(dir, 'rootfs')]);
    await doc('import', [...s, 'import', join(dir, 'rootfs.tar'), 'example.com/imported:1']);
    await doc('rmi', [...s, 'rmi', 'example.com/app:2']);
    await doc('rmi', [...s, 'rmi', 'example.com/imported:1']);
    await doc('gc', [...s, 'gc', '--dry-run']);
    await doc('gc', [...s, 'gc']);
    await doc('inventory', [...s, 'inventory']);
    await doc('inventory.written', [...s, 'inventory', '-o', join(dir, 'have.json')]);
  });

  it('failed runs end in one error line whose exitCode is the exit code', async () => {
    await lines('copy', ['copy', `oci:${join(dir, 'none')}:x`, `oci:${join(dir, 'd')}:x`], { code: 2 });
    await lines('pull', ['pull'], { code: 2 }); // usage: missing argument
    await lines('load', ['load', '-i', join(dir, 'missing.tar')], { code: 2 });
    const broken = join(dir, 'broken.tar');
    await (await import('node:fs/promises')).writeFile(broken, 'not an archive at all'.repeat(40));
    await lines('load', ['load', '-i', broken], { code: 3 });
    await doc('inspect', ['--store', join(dir, 'store'), 'inspect', 'example.com/nothing:1'], { code: 2 });
    await doc('export', ['export', 'x:1'], { code: 2 }); // --json with the tar on stdout
  });

  it('--json=true is --json for the error line too; --no-json after it turns it off', async () => {
    const missing = ['--store', join(dir, 'none'), 'inspect', 'example.com/nothing:1'];
    const on = await ferry(['--json=true', ...missing]);
    expect(on.code).toBe(2);
    checkError(on, JSON.parse(on.stdout));
    const off = await ferry(['--json', '--no-json', ...missing]);
    expect(off.code).toBe(2);
    expect(off.stdout).toBe('');
  });

  it('save -o - prints no JSON on stdout, which carries the archive: not even the error line of a failure', async () => {
    const s = ['--store', join(dir, 'save-stdout')];
    expect((await ferry([...s, 'copy', '-q', `oci:${TESTDATA}:plain`, 'example.com/app:1'])).code).toBe(0);
    const failed = await ferry(['--json', ...s, 'save', 'example.com/nothing:1', '-o', '-']);
    expect(failed.code).toBe(2);
    expect(failed.stdout).toBe('');
    expect(failed.stderr).toContain('ferry: error: image "example.com/nothing:1" not found');
    const saved = await ferry(['--json', ...s, 'save', 'example.com/app:1', '-o', '-']);
    expect(saved.code, saved.stderr).toBe(0);
    expect(saved.stdout).toContain('oci-layout');
    expect(saved.stdout).not.toContain('"event"');
  });

  describe.skipIf(!hasTool('docker-registry') || !hasTool('htpasswd'))('registry commands (docker-registry, ferry serve)', () => {
    let reg: RunningRegistry;
    let locked: RunningRegistry;
    beforeAll(async () => {
      [reg, locked] = await Promise.all([startDistribution(), startDistribution({ auth: 'htpasswd' })]);
    });
    afterAll(async () => {
      await Promise.all([reg?.stop(), locked?.stop()]);
    });

    it('push, push --from, pull, tags, catalog, sync, rm', async () => {
      const s = ['--store', store];
      await lines('copy', [...s, 'copy', `oci:${TESTDATA}:layers`, 'example.com/app:1']);
      await lines('push', [...s, 'push', 'example.com/app:1', `${reg.host}/json/app:1`]);
      await lines('push', [...s, 'push', '--from', join(dir, 'app.tar'), `${reg.host}/from`]);
      await lines('pull', ['--store', join(dir, 'pulled'), 'pull', `${reg.host}/json/app:1`]);
      expect(await doc('tags', ['tags', `${reg.host}/json/app`])).toEqual(['1']);
      await doc('inspect', ['inspect', `docker://${reg.host}/json/app:1`]);
      expect(await doc('catalog', ['catalog', reg.host])).toContain('json/app');
      const plan = await doc<{ dryRun: boolean; jobs: unknown[] }>('plan', ['sync', '--dry-run', `${reg.host}/json/app`, `oci:${join(dir, 'mirror')}`]);
      expect(plan.dryRun).toBe(true);
      expect(plan.jobs).toHaveLength(1);
      await doc('sync', ['sync', `${reg.host}/json/app`, `oci:${join(dir, 'mirror')}`]);
      const archived = await doc<{ jobs: Array<{ rewritten?: boolean }> }>('sync', ['sync', `${reg.host}/json/app`, join(dir, 'mirror.tar')]);
      expect(archived.jobs[0]!.rewritten).toBe(true);
      const volumePlan = await doc<{ archive: { volumeSize: number } }>('plan', ['sync', '--dry-run', '--volume-size', '64K', `${reg.host}/json/app`, join(dir, 'volumes.tar')]);
      expect(volumePlan.archive.volumeSize).toBe(65536);
      const volumes = await doc<{ jobs: Array<{ volumes?: string[] }> }>('sync', ['sync', '--volume-size', '64K', `${reg.host}/json/app`, join(dir, 'volumes.tar')]);
      expect(volumes.jobs[0]!.volumes).toEqual([join(dir, 'volumes.001.tar')]);
      // A job that fails: the report says so, the exit code too, and no error line follows it.
      const failed = await doc<{ jobs: Array<{ failed: unknown[] }> }>('sync', ['sync', `${reg.host}/json/nothing`, `oci:${join(dir, 'mirror')}`], { code: 2 });
      expect(failed.jobs[0]!.failed).toHaveLength(1);
      await doc('rm', ['rm', `docker://${reg.host}/json/app:1`]);
      await lines('pull', ['--store', join(dir, 'pulled'), 'pull', `${reg.host}/json/app:1`], { code: 2 });
    });

    it('login and logout, and a refused login', async () => {
      const env = { DOCKER_CONFIG: await tempDir() };
      const bad = await ferry(['--json', 'login', locked.host, '-u', USER, '--password-stdin'], { env, input: 'wrong' });
      expect(bad.code).toBe(5);
      checkError(bad, JSON.parse(bad.stdout));
      await doc('login', ['login', locked.host, '-u', USER, '--password-stdin'], { env, input: PASSWORD });
      expect((await doc<{ removed: boolean }>('logout', ['logout', locked.host], { env })).removed).toBe(true);
    });

    it('serve: a listening line while it runs, a result line after a clean stop', async () => {
      const child = start(['--store', store, '--json', 'serve', '--addr', '127.0.0.1:0']);
      let stdout = '';
      child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
      const closed = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
      for (let i = 0; i < 150 && !stdout.includes('\n'); i++) await new Promise((ok) => setTimeout(ok, 100));
      const listening = JSON.parse(stdout.split('\n')[0]!) as { event: string; host: string; port: number };
      validate('serve', listening);
      expect(listening.event).toBe('listening');
      const tags = await doc('tags', ['tags', `${listening.host}:${listening.port}/example.com/app`]);
      expect(tags).toEqual(['1']);
      child.kill('SIGTERM');
      expect(await closed).toBe(0);
      const out = stdout.trim().split('\n').map((l) => JSON.parse(l) as { event: string });
      for (const l of out) validate('serve', l);
      expect(out.map((l) => l.event)).toEqual(['listening', 'result']);
      covered.add('serve');
    });

    it('every command in COMMANDS was run with --json, or is listed with the reason it has none', () => {
      const missing = COMMAND_NAMES.filter((c) => !covered.has(c) && !(c in NO_JSON));
      expect(missing).toEqual([]);
    });
  });
});
