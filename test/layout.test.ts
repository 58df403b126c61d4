import { mkdir, readFile, readdir, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { copy } from '../src/copy.js';
import { collectGarbage } from '../src/gc.js';
import { addRoot, OciLayout } from '../src/locations/layout.js';
import { withLock } from '../src/locations/lock.js';
import { locatePathRef } from '../src/locations/transport.js';
import { setWarningSink } from '../src/log.js';
import type { Descriptor } from '../src/oci/manifest.js';
import { failure } from './helpers/assert.js';
import { TESTDATA, tempDir } from './helpers/fs.js';
import { makeLayout } from './helpers/images.js';

const d = (n: number): Descriptor => ({ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${String(n).repeat(64).slice(0, 64)}` as never, size: n });


/** The pid of a process that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']);
  return Number(r.stdout.toString());
}

describe('OCI layout', () => {
  it('creates oci-layout, index.json and blobs/sha256', async () => {
    const dir = join(await tempDir(), 'new');
    await OciLayout.open(dir, { create: true });
    expect(JSON.parse(await readFile(join(dir, 'oci-layout'), 'utf8'))).toEqual({ imageLayoutVersion: '1.0.0' });
    expect(JSON.parse(await readFile(join(dir, 'index.json'), 'utf8'))).toEqual({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [],
    });
    expect((await stat(join(dir, 'blobs', 'sha256'))).isDirectory()).toBe(true);
  });

  it('refuses a directory that is not a layout', async () => {
    const err = await failure(OciLayout.open(await tempDir()));
    expect(err.code).toBe('NOT_FOUND');
    expect(err.message).toMatch(/not an OCI image layout/);
  });

  it('refuses an invalid oci-layout file', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'oci-layout'), '{"version": 1}');
    expect((await failure(OciLayout.open(dir))).code).toBe('INVALID_INPUT');
  });

  it('records names the way Docker 25 and containerd do', () => {
    const m = addRoot([], d(1), { tag: '3.20', name: 'docker.io/library/alpine:3.20' });
    expect(m[0]!.annotations).toEqual({
      'org.opencontainers.image.ref.name': '3.20',
      'io.containerd.image.name': 'docker.io/library/alpine:3.20',
    });
  });

  it('retagging replaces only the entry with that name', () => {
    let m = addRoot([], d(1), { tag: 'v1', name: 'example.com/a:v1' });
    m = addRoot(m, d(2), { tag: 'v1', name: 'example.com/b:v1' });
    m = addRoot(m, d(3), { tag: 'v1', name: 'example.com/a:v1' });
    expect(m.map((e) => e.size)).toEqual([2, 3]);
    m = addRoot(m, d(4), { tag: 'bare' });
    m = addRoot(m, d(5), { tag: 'bare' });
    expect(m.map((e) => e.size)).toEqual([2, 3, 5]);
    m = addRoot(m, d(6), undefined);
    m = addRoot(m, d(6), undefined);
    expect(m.map((e) => e.size)).toEqual([2, 3, 5, 6]);
  });

  it('resolves by tag, full name, familiar name and digest; reports ambiguity and absence', async () => {
    const dir = join(await tempDir(), 'l');
    const layout = await OciLayout.open(dir, { create: true });
    await layout.editIndex((m) => addRoot(addRoot(addRoot(m, d(1), { tag: 'latest', name: 'docker.io/library/alpine:latest' }), d(2), { tag: 'latest', name: 'example.com/x:latest' }), d(3), { tag: 'only' }));
    expect((await layout.resolve('alpine')).size).toBe(1);
    expect((await layout.resolve('docker.io/library/alpine:latest')).size).toBe(1);
    expect((await layout.resolve('example.com/x')).size).toBe(2);
    expect((await layout.resolve('only')).size).toBe(3);
    expect((await layout.resolve(d(2).digest)).size).toBe(2);
    const amb = await failure(layout.resolve('latest'));
    expect(amb.code).toBe('INVALID_INPUT');
    expect(amb.message).toMatch(/ambiguous/);
    const missing = await failure(layout.resolve('nope'));
    expect(missing.code).toBe('NOT_FOUND');
    expect(missing.hint).toContain('docker.io/library/alpine:latest');
  });

  it('A2: an index.json digest that is not a digest is refused, never used as a path', async () => {
    for (const bad of ['sha256:../../etc/passwd', `sha256:${'A'.repeat(64)}`, 'sha256:abc', `md5:${'a'.repeat(32)}`]) {
      const dir = await tempDir();
      await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
      await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: bad, size: 1 }] }));
      const layout = await OciLayout.open(dir);
      expect((await failure(layout.entries())).code).toBe('INVALID_DIGEST');
      expect(() => layout.blobPath(bad as never)).toThrow(/invalid digest/);
    }
  });
});

describe('PATH[:REF] with colons on either side', () => {
  it('splits where the path exists, else where the deepest parent exists, else after the last colon', async () => {
    const dir = await tempDir();
    await mkdir(join(dir, 'backup'));
    await mkdir(join(dir, 'at 03:00'));
    const at = (t: string) => locatePathRef(t, 'oci:DIR[:TAG]');
    // A name with a registry port and a tag, into an existing or a new layout.
    expect(await at(`${dir}/backup:127.0.0.1:5000/team/app:1`)).toEqual({ path: `${dir}/backup`, ref: '127.0.0.1:5000/team/app:1' });
    expect(await at(`${dir}/fresh:team/app:1`)).toEqual({ path: `${dir}/fresh`, ref: 'team/app:1' });
    // A directory with a colon in its name, with and without a tag, existing or not yet.
    expect(await at(`${dir}/at 03:00`)).toEqual({ path: `${dir}/at 03:00` });
    expect(await at(`${dir}/at 03:00:v1`)).toEqual({ path: `${dir}/at 03:00`, ref: 'v1' });
    expect(await at(`${dir}/at 03:00/layout:v1`)).toEqual({ path: `${dir}/at 03:00/layout`, ref: 'v1' });
    expect(await at(`${dir}/plain`)).toEqual({ path: `${dir}/plain` });
    // Nothing there at all: the old rule (the reference after the last ':' unless it holds a '/').
    expect(await at('/no/such/place:tag')).toEqual({ path: '/no/such/place', ref: 'tag' });
    await expect(at(`${dir}/backup:`)).rejects.toThrow(/names no tag/);
  });
});

describe('layout lock (G4)', () => {
  /**
   * A layout whose index lock names process `pid`: an edit breaks it (else, a live holder, it
   * waits 1 s and fails LOCKED), with a warning, and adds its entry.
   */
  async function expectLockBroken(pid: number): Promise<string> {
    const dir = join(await tempDir(), 'l');
    const layout = await OciLayout.open(dir, { create: true, lockTimeoutMs: 1000 });
    await writeFile(join(dir, 'index.json.lock'), JSON.stringify({ pid, host: (await import('node:os')).hostname(), since: 'then' }));
    const warnings: string[] = [];
    setWarningSink((m) => warnings.push(m));
    try {
      await layout.editIndex((m) => addRoot(m, d(1), { tag: 'x' }));
    } finally {
      setWarningSink((m) => process.stderr.write(m + '\n'));
    }
    expect(warnings.join('\n')).toMatch(/broke a stale lock .*index\.json\.lock: process \d+ .* is gone/);
    expect((await layout.entries()).map((e) => e.tag)).toEqual(['x']);
    return dir;
  }

  it('G4: a stale lock from a killed process is broken, with a message', async () => {
    const dir = await expectLockBroken(deadPid());
    expect(await readdir(dir)).not.toContain('index.json.lock');
  });

  it('G4: a lock held by a killed process its parent has not reaped yet (a zombie) is broken too', async () => {
    // The background `sleep 1` ends after its shell has become `sleep 30` (exec), which never
    // reaps it. (A child ending at once may be reaped by the shell before the exec.)
    const { spawn } = await import('node:child_process');
    const parent = spawn('sh', ['-c', 'sleep 1 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      const zombie = Number((await new Promise<Buffer>((ok) => parent.stdout!.once('data', ok))).toString().trim());
      for (let i = 0; i < 150 && !(await readFile(`/proc/${zombie}/stat`, 'utf8').catch(() => '')).includes(') Z'); i++) await new Promise((r) => setTimeout(r, 20));
      expect(await readFile(`/proc/${zombie}/stat`, 'utf8')).toContain(') Z');
      await expectLockBroken(zombie);
    } finally {
      parent.kill();
    }
  });

  it('G4: a live lock is waited for, then LOCKED naming the holder', async () => {
    const dir = await tempDir();
    const path = join(dir, 'lock');
    const err = await failure(
      withLock(path, () => withLock(path, async () => 'inner', { timeoutMs: 200 })),
    );
    expect(err.code).toBe('LOCKED');
    expect(err.message).toContain(`process ${process.pid}`);
  });

  it('a lock released in time is acquired', async () => {
    const dir = await tempDir();
    const path = join(dir, 'lock');
    const order: string[] = [];
    await Promise.all([
      withLock(path, async () => {
        order.push('a');
        await new Promise((r) => setTimeout(r, 100));
      }),
      new Promise((r) => setTimeout(r, 10)).then(() => withLock(path, async () => void order.push('b'), { timeoutMs: 5000 })),
    ]);
    expect(order).toEqual(['a', 'b']);
  });

  it('an unreadable lock file older than a minute is broken', async () => {
    const dir = await tempDir();
    const path = join(dir, 'lock');
    await writeFile(path, 'garbage');
    const old = new Date(Date.now() - 120_000);
    await utimes(path, old, old);
    setWarningSink(() => {});
    try {
      expect(await withLock(path, async () => 'ok', { timeoutMs: 100 })).toBe('ok');
    } finally {
      setWarningSink((m) => process.stderr.write(m + '\n'));
    }
  });
});

describe('garbage collection', () => {
  it('deletes unreferenced blobs and keeps referenced ones', async () => {
    const dir = join(await tempDir(), 'l');
    const dst = await OciLayout.open(dir, { create: true });
    await copy(await OciLayout.open(TESTDATA), dst, [{ ref: 'plain', names: [{ tag: 'p' }] }, { ref: 'zstd', names: [{ tag: 'z' }] }]);
    await dst.close();
    const before = (await readdir(join(dir, 'blobs', 'sha256'))).length;
    const gcLayout = await OciLayout.open(dir);
    await gcLayout.untag((e) => e.tag === 'z');
    const dry = await collectGarbage(gcLayout, { dryRun: true });
    expect(dry.removed).toHaveLength(3);
    expect((await readdir(join(dir, 'blobs', 'sha256'))).length).toBe(before);
    const r = await collectGarbage(gcLayout);
    expect(r.removed).toHaveLength(3);
    expect(r.kept).toBe(before - 3);
    expect((await readdir(join(dir, 'blobs', 'sha256'))).length).toBe(before - 3);
  });

  it('spares blobs a live writer may still reference', async () => {
    const dir = join(await tempDir(), 'l');
    await mkdir(dir);
    await makeLayout(dir, [{ tag: 'a', layers: [Buffer.from('x')] }]);
    const writer = await OciLayout.open(dir, { create: true });
    // Pretend another live process (our parent, the test runner's pid) registered as a writer.
    await writeFile(join(dir, `.ferry-writer-${process.ppid}-${Date.now() - 60_000}`), '');
    await writeFile(join(dir, 'blobs', 'sha256', 'f'.repeat(64)), 'new, unreferenced');
    const r = await collectGarbage(await OciLayout.open(dir));
    expect(r.spared).toBe(1);
    expect(r.removed).toEqual([]);
    await writer.close();
  });

  it('refuses to run when a referenced manifest is unreadable', async () => {
    const dir = join(await tempDir(), 'l');
    await mkdir(dir);
    const [img] = await makeLayout(dir, [{ tag: 'a', layers: [Buffer.from('x')] }]);
    await writeFile(join(dir, 'blobs', 'sha256', img!.manifest.digest.slice(7)), 'not json at all');
    const err = await failure(collectGarbage(await OciLayout.open(dir)));
    expect(err.code).toBe('INTEGRITY');
    expect((await readdir(join(dir, 'blobs', 'sha256'))).length).toBe(3);
  });
});
