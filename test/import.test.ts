import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { chmod, link, mkdir, open, readdir, readFile, rm, symlink as fsSymlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync, zstdCompressSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { exitCodeFor, toFerryError } from '../src/errors.js';
import { applyChanges, splitWords } from '../src/fs/changes.js';
import { tarDirectory } from '../src/fs/dir-tar.js';
import { importImage, type ImportOptions, type ImportReport } from '../src/fs/import.js';
import { FERRY, ferry, type RunResult } from './helpers/cli.js';
import { blobDigests, blobFile, indexEntries, sha256 } from './helpers/expected-images.js';
import { TESTDATA, tempDir } from './helpers/fs.js';
import { dir, file, hardlink, symlink, tarOf } from './helpers/layers.js';
import { listTar } from './helpers/tar-list.js';
import { hasTool } from './helpers/tools.js';

const skopeo = hasTool('skopeo');

async function store(): Promise<string> {
  return join(await tempDir(), 'store');
}

function run(st: string, args: string[], env: Record<string, string | undefined> = {}): Promise<RunResult> {
  return ferry(args, { env: { FERRY_STORE: st, SOURCE_DATE_EPOCH: undefined, ...env } });
}

async function ok(st: string, args: string[], env: Record<string, string | undefined> = {}): Promise<RunResult> {
  const r = await run(st, args, env);
  expect(r.code, `ferry ${args.join(' ')}\n${r.stderr}`).toBe(0);
  return r;
}

interface Inspected {
  digest: string;
  manifest: { layers: Array<{ mediaType: string; digest: string; size: number }>; config: { digest: string } };
  config: {
    created: string;
    architecture: string;
    os: string;
    variant?: string;
    config: Record<string, unknown>;
    rootfs: { diff_ids: string[] };
    history: Array<{ created: string; created_by?: string; comment?: string }>;
  };
}

async function inspect(st: string, name: string): Promise<Inspected> {
  return JSON.parse((await ok(st, ['inspect', name])).stdout) as Inspected;
}

/** Runs ferry with `input` on stdin. */
function withStdin(st: string, args: string[], input: Buffer, env: Record<string, string> = {}): Promise<RunResult> {
  const child = spawn(FERRY, args, { env: { ...process.env, FERRY_STORE: st, ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  child.stdin.end(input);
  return new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
}

/** In-process import through the library; returns the report or the exit code the CLI would give. */
async function lib(o: Partial<ImportOptions> & { input?: ImportOptions['input'] }): Promise<{ code: number; message: string; report?: ImportReport; storeDir: string }> {
  const storeDir = o.storeDir ?? (await store());
  try {
    const report = await importImage({ name: 'x:1', storeDir, ...o });
    return { code: 0, message: '', report, storeDir };
  } catch (e) {
    const err = toFerryError(e);
    return { code: exitCodeFor(err), message: err.message, storeDir };
  }
}

const ROOTFS = tarOf([
  dir('bin/'),
  file('bin/app', '#!/bin/sh\necho app\n', { mode: 0o755 }),
  hardlink('bin/app2', 'bin/app'),
  symlink('bin/sh', '/bin/busybox'),
  dir('etc/'),
  file('etc/passwd', 'root:x:0:0\n'),
  file('etc/owned', 'x', { uid: 1000, gid: 1000 }),
]);

async function tarFile(content: Buffer = ROOTFS, name = 'rootfs.tar'): Promise<string> {
  const p = join(await tempDir(), name);
  await writeFile(p, content);
  return p;
}

describe.concurrent('ferry import', () => {
  it('makes a one-layer OCI image: gzip layer, diff_id = the tar\'s digest, host platform, history', async () => {
    const st = await store();
    const input = await tarFile();
    const r = await ok(st, ['import', input, 'example.com/rootfs:1', '-m', 'from a test'], { SOURCE_DATE_EPOCH: '1700000000' });
    expect(r.stdout).toMatch(/Imported .*rootfs\.tar as example\.com\/rootfs:1 into the store$/m);
    const img = await inspect(st, 'example.com/rootfs:1');
    expect(img.config.rootfs.diff_ids).toEqual([sha256(ROOTFS)]);
    expect(img.manifest.layers).toHaveLength(1);
    expect(img.manifest.layers[0]!.mediaType).toBe('application/vnd.oci.image.layer.v1.tar+gzip');
    expect(`${img.config.os}/${img.config.architecture}`).toBe(`linux/${process.arch === 'x64' ? 'amd64' : process.arch}`);
    expect(img.config.created).toBe('2023-11-14T22:13:20Z');
    expect(img.config.history).toEqual([{ created: '2023-11-14T22:13:20Z', created_by: 'ferry import', comment: 'from a test' }]);
    await ok(st, ['verify']);
  });

  it('is reproducible: the same input and SOURCE_DATE_EPOCH (env or flag) give the same digest', async () => {
    const input = await tarFile();
    const viaEnv = JSON.parse((await ok(await store(), ['import', input, 'x:1', '--json'], { SOURCE_DATE_EPOCH: '1700000000' })).stdout) as { digest: string };
    const viaFlag = JSON.parse((await ok(await store(), ['import', input, 'x:1', '--json', '--source-date-epoch', '1700000000'])).stdout) as { digest: string };
    const again = await lib({ input, sourceDateEpoch: 1700000000 });
    expect(viaFlag.digest).toBe(viaEnv.digest);
    expect(again.report!.digest).toBe(viaEnv.digest);
    const later = await lib({ input, sourceDateEpoch: 1700000001 });
    expect(later.report!.digest).not.toBe(viaEnv.digest);
    expect(later.report!.layer).toEqual(again.report!.layer);
  });

  it('without SOURCE_DATE_EPOCH, created is now', async () => {
    const st = await store();
    await ok(st, ['import', await tarFile(), 'x:1']);
    const created = Date.parse((await inspect(st, 'x:1')).config.created);
    expect(Math.abs(created - Date.now())).toBeLessThan(60_000);
  });

  it('reads plain, gzip and zstd tars, from a file or stdin: same diff_id, same image', async () => {
    const digests = new Set<string>();
    const r = await withStdin(await store(), ['import', '-', 'x:1', '--json'], zstdCompressSync(ROOTFS), { SOURCE_DATE_EPOCH: '1700000000' });
    expect(r.code, r.stderr).toBe(0);
    digests.add((JSON.parse(r.stdout) as { digest: string }).digest);
    for (const body of [ROOTFS, gzipSync(ROOTFS), zstdCompressSync(ROOTFS)]) {
      digests.add((await lib({ input: await tarFile(body), sourceDateEpoch: 1700000000 })).report!.digest);
    }
    expect(digests.size).toBe(1);
  });

  it('--compress zstd and none set the layer media type; none stores the tar as is', async () => {
    const st = await store();
    await ok(st, ['import', await tarFile(), 'z:1', '--compress', 'zstd']);
    const n = await lib({ input: await tarFile(), name: 'n:1', storeDir: st, compression: 'none' });
    const z = await inspect(st, 'z:1');
    expect(z.manifest.layers[0]!.mediaType).toBe('application/vnd.oci.image.layer.v1.tar+zstd');
    expect((await readFile(blobFile(st, z.manifest.layers[0]!.digest))).subarray(0, 4).toString('hex')).toBe('28b52ffd');
    expect(n.report!.layer.mediaType).toBe('application/vnd.oci.image.layer.v1.tar');
    expect(n.report!.layer.digest).toBe(sha256(ROOTFS));
    await ok(st, ['verify']);
  });

  it('import -> export -> import gives the same layer digest (and export returns the imported bytes)', async () => {
    const st = await store();
    const first = join(await tempDir(), 'first.tar');
    await ok(st, ['export', `oci:${TESTDATA}:layers`, '-o', first]);
    const env = { SOURCE_DATE_EPOCH: '1700000000' };
    const a = JSON.parse((await ok(st, ['import', first, 'round:1', '--json'], env)).stdout) as { layer: { digest: string; diffId: string } };
    const second = join(await tempDir(), 'second.tar');
    await ok(st, ['export', 'round:1', '-o', second]);
    expect((await readFile(second)).equals(await readFile(first))).toBe(true);
    const b = JSON.parse((await ok(st, ['import', second, 'round:2', '--json'], env)).stdout) as { layer: { digest: string; diffId: string } };
    expect(b.layer).toEqual(a.layer);
    expect(a.layer.diffId).toBe(sha256(await readFile(first)));
  });

  it('-c/--change: CMD, ENTRYPOINT, ENV, WORKDIR, USER, EXPOSE, LABEL, VOLUME, STOPSIGNAL in JSON and shell forms', async () => {
    const st = await store();
    await ok(st, [
      'import', await tarFile(), 'c:1',
      '-c', 'CMD ["/bin/app", "--serve"]',
      '-c', 'ENTRYPOINT /bin/sh -c "exec app"',
      '-c', 'ENV PATH=/usr/bin:/bin LANG="C.UTF-8"',
      '-c', 'ENV GREETING hello world',
      '-c', 'WORKDIR /srv',
      '-c', 'WORKDIR data',
      '-c', 'USER 1000:1000',
      '-c', 'EXPOSE 80 443/tcp 53/udp 8000-8002',
      '-c', 'LABEL org.opencontainers.image.title="my app" tier=web',
      '-c', 'VOLUME ["/data", "/cache"]',
      '-c', 'VOLUME /logs',
      '-c', 'stopsignal SIGQUIT',
    ]);
    expect((await inspect(st, 'c:1')).config.config).toEqual({
      Cmd: ['/bin/app', '--serve'],
      Entrypoint: ['/bin/sh', '-c', '/bin/sh -c "exec app"'],
      Env: ['PATH=/usr/bin:/bin', 'LANG=C.UTF-8', 'GREETING=hello world'],
      WorkingDir: '/srv/data',
      User: '1000:1000',
      ExposedPorts: { '80/tcp': {}, '443/tcp': {}, '53/udp': {}, '8000/tcp': {}, '8001/tcp': {}, '8002/tcp': {} },
      Labels: { 'org.opencontainers.image.title': 'my app', tier: 'web' },
      Volumes: { '/data': {}, '/cache': {}, '/logs': {} },
      StopSignal: 'SIGQUIT',
    });
  });

  it('-c: an unsupported or malformed instruction is a usage error naming it; nothing is stored', async () => {
    const st = await store();
    const r = await run(st, ['import', await tarFile(), 'c:1', '-c', 'RUN rm -rf /']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/"RUN rm -rf \/": RUN is not a supported change instruction/);
    expect(await blobDigests(st)).toEqual([]);
    for (const [change, message] of [
      ['EXPOSE http', /"http" is not PORT/],
      ['ENV', /ENV needs an argument/],
      ['LABEL a="unterminated', /unterminated " quote/],
      ['USER a b', /USER takes one argument/],
      ['STOPSIGNAL', /needs an argument/],
    ] as const) {
      const bad = await lib({ input: await tarFile(), changes: [change] });
      expect(bad.code, change).toBe(2);
      expect(bad.message).toMatch(message);
    }
  });

  it('--platform is recorded in the config', async () => {
    const st = await store();
    await ok(st, ['import', await tarFile(), 'p:1', '--platform', 'linux/arm/v7']);
    const c = (await inspect(st, 'p:1')).config;
    expect([c.os, c.architecture, c.variant]).toEqual(['linux', 'arm', 'v7']);
  });

  it('--dir reads small files ahead: every byte and size right across sizes; a file that grew or shrank after it was listed is refused', async () => {
    const root = join(await tempDir(), 'root');
    // At the top: the root's entries are listed before the first chunk comes out.
    await mkdir(root);
    const sizes = [0, 1, 511, 512, 513, 4096, 100_000, 1 << 20, (1 << 20) + 1, 3 << 20];
    const content = (i: number, n: number) => Buffer.alloc(n, `file ${i};`);
    const want = new Map<string, string>();
    for (let i = 0; i < 120; i++) {
      const n = sizes[i % sizes.length]!;
      const name = `f${String(i).padStart(3, '0')}`;
      await writeFile(join(root, name), content(i, n));
      want.set(name, sha256(content(i, n)).slice(7));
    }
    const out = join(await tempDir(), 'd.tar');
    await pipeline(tarDirectory(root), createWriteStream(out));
    const files = (await listTar(out)).filter((e) => e.type === 'file');
    expect(new Map(files.map((e) => [e.name, e.sha256!]))).toEqual(want);

    // Listed first, changed before it is read (megabytes after what the stream has buffered): a
    // streamed file that grew, small read-ahead files that grew and shrank.
    for (const [victim, grow] of [['f119', true], ['f113', true], ['f102', false]] as const) {
      const st = tarDirectory(root);
      const it = st[Symbol.asyncIterator]();
      await it.next();
      const before = content(Number(victim.slice(1)), sizes[Number(victim.slice(1)) % sizes.length]!);
      await writeFile(join(root, victim), grow ? Buffer.concat([before, Buffer.from('more')]) : before.subarray(0, before.length - 1));
      const err = await (async () => {
        for (;;) if ((await it.next()).done) return undefined;
      })().catch((e: unknown) => e);
      await writeFile(join(root, victim), before);
      expect(String(err), victim).toMatch(new RegExp(`"${victim}" changed while it was read \\(\\d+ bytes when listed, \\d+( or more)? read\\)`));
      expect(exitCodeFor(toFerryError(err)), victim).not.toBe(0);
    }
  });

  it('--dir keeps memory flat as a file grows (peak RSS of 16 MiB and 384 MiB within 30 MiB)', async () => {
    const rss: number[] = [];
    for (const mib of [16, 384]) {
      const root = join(await tempDir(), 'root');
      await mkdir(root);
      const fh = await open(join(root, 'big'), 'w');
      const block = Buffer.alloc(1 << 20, 7);
      for (let i = 0; i < mib; i++) await fh.write(block);
      await fh.close();
      const r = await ferry(['import', '--dir', root, '--compress', 'none', '--to', `oci:${join(await tempDir(), 'out')}:x`], {
        env: { FERRY_STORE: await store() },
        wrap: ['/usr/bin/time', '-f', 'MAXRSS %M'],
      });
      expect(r.code, r.stderr).toBe(0);
      rss.push(Number(/MAXRSS (\d+)/.exec(r.stderr)![1]) / 1024);
      await rm(root, { recursive: true, force: true });
    }
    process.stderr.write(`import --dir peak RSS: 16 MiB file ${rss[0]!.toFixed(0)} MiB, 384 MiB file ${rss[1]!.toFixed(0)} MiB\n`);
    expect(rss[1]! - rss[0]!).toBeLessThan(30);
  });

  it('--dir tars a directory deterministically: sorted, modes, owners, links kept, mtimes clamped to SOURCE_DATE_EPOCH', async () => {
    const root = join(await tempDir(), 'root');
    await mkdir(join(root, 'b', 'deep'), { recursive: true });
    await mkdir(join(root, 'a'));
    await writeFile(join(root, 'b', 'deep', 'f.txt'), 'deep');
    await writeFile(join(root, 'a', 'z'), 'z');
    await writeFile(join(root, 'a', 'y'), 'y');
    await chmod(join(root, 'a', 'y'), 0o4750);
    await link(join(root, 'a', 'y'), join(root, 'b', 'y-link'));
    await fsSymlink('../a/z', join(root, 'b', 'to-z'));
    await utimes(join(root, 'a', 'z'), 1000, 1000);
    const env = { SOURCE_DATE_EPOCH: '1700000000' };
    const st = await store();
    const one = JSON.parse((await ok(st, ['import', '--dir', root, 'd:1', '--json'], env)).stdout) as { digest: string };
    await utimes(join(root, 'b', 'deep', 'f.txt'), new Date(), new Date()); // newer than the epoch: clamped
    const two = JSON.parse((await ok(await store(), ['import', '--dir', root, 'd:1', '--json'], env)).stdout) as { digest: string };
    expect(two.digest).toBe(one.digest);
    const out = join(await tempDir(), 'd.tar');
    await ok(st, ['export', 'd:1', '-o', out]);
    const entries = await listTar(out);
    expect(entries.map((e) => [e.name, e.type])).toEqual([
      ['a/', 'dir'],
      ['b/', 'dir'],
      ['b/deep/', 'dir'],
      ['b/to-z', 'symlink'],
      ['a/y', 'file'],
      ['b/y-link', 'hardlink'],
      ['a/z', 'file'],
      ['b/deep/f.txt', 'file'],
    ]);
    const y = entries.find((e) => e.name === 'a/y')!;
    expect(y.mode).toBe(0o4750);
    expect(y.uid).toBe(process.getuid!());
    expect(entries.find((e) => e.name === 'b/to-z')!.linkname).toBe('../a/z');
  });

  it('--dir --compress zstd or gzip is reproducible under load: parallel runs give one digest; the zstd layer is one frame', async () => {
    const root = join(await tempDir(), 'root');
    await mkdir(root);
    await writeFile(join(root, 'a'), 'a\n');
    const env = { SOURCE_DATE_EPOCH: '1700000000' };
    for (const [c, runs] of [['zstd', 16], ['gzip', 8]] as const) {
      const layouts = await Promise.all(Array.from({ length: runs }, async () => join(await tempDir(), 'layout')));
      await Promise.all(layouts.map(async (l) => ok(await store(), ['import', '--dir', root, 'app:1', '--to', `oci:${l}:app`, '--compress', c, '-q'], env)));
      const digests = new Set(await Promise.all(layouts.map(async (l) => (await indexEntries(l))[0]!.digest)));
      expect([...digests], c).toHaveLength(1);
      if (c === 'zstd') {
        const manifest = JSON.parse((await readFile(blobFile(layouts[0]!, [...digests][0]!))).toString()) as Inspected['manifest'];
        const layer = await readFile(blobFile(layouts[0]!, manifest.layers[0]!.digest));
        expect(layer.indexOf(Buffer.from('28b52ffd', 'hex'), 1), 'a second zstd frame').toBe(-1);
      }
    }
  });

  it('--to oci:DIR:TAG writes a layout ferry verify accepts; NAME then is the image name', async () => {
    const st = await store();
    const layout = join(await tempDir(), 'layout');
    await ok(st, ['import', await tarFile(), 'example.com/app:2', '--to', `oci:${layout}:v2`]);
    const [entry] = await indexEntries(layout);
    expect(entry!.annotations).toEqual({ 'org.opencontainers.image.ref.name': 'v2' });
    await ok(st, ['verify', layout]);
    expect(await readdir(st).catch(() => [])).toEqual([]);
  });

  it.skipIf(!skopeo)('skopeo inspect accepts an imported image copied into an oci: layout', async () => {
    const st = await store();
    const layout = join(await tempDir(), 'layout');
    await ok(st, ['import', await tarFile(), 'app:1']);
    await ok(st, ['copy', 'app:1', `oci:${layout}:app`]);
    const child = spawn('skopeo', ['inspect', `oci:${layout}:app`]);
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    expect(await new Promise((r) => child.on('close', r))).toBe(0);
    const info = JSON.parse(out) as { Layers: string[]; Os: string };
    expect(info.Layers).toHaveLength(1);
    expect(info.Os).toBe('linux');
  });
});

describe.concurrent('ferry import: bad input is refused before anything is stored', () => {
  async function refusedByCli(content: Buffer, code: number, message: RegExp): Promise<void> {
    const st = await store();
    const r = await run(st, ['import', await tarFile(content), 'bad:1']);
    expect(r.code, r.stderr).toBe(code);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(await blobDigests(st)).toEqual([]);
    expect(await indexEntries(st).catch(() => [])).toEqual([]);
  }

  async function refused(content: Buffer, code: number, message: RegExp): Promise<void> {
    const r = await lib({ input: await tarFile(content), name: 'bad:1' });
    expect(r.code, r.message).toBe(code);
    expect(r.message).toMatch(message);
    expect(await blobDigests(r.storeDir)).toEqual([]);
    expect(await indexEntries(r.storeDir).catch(() => [])).toEqual([]);
  }

  it('a TMPDIR that does not exist is exit 7 naming it and the variable (import spools the layer there), nothing stored', async () => {
    const st = await store();
    const input = await tarFile(tarOf([file('etc/hostname', 'box\n')]));
    const r = await ferry(['--store', st, 'import', input, 'spool:1'], { env: { TMPDIR: '/nonexistent-ferry-tmp' } });
    expect(r.code, r.stderr).toBe(7);
    expect(r.stderr).toContain('cannot make a temporary directory in /nonexistent-ferry-tmp (TMPDIR)');
    expect(r.stderr).toContain('hint: set TMPDIR to a writable directory');
    expect(await blobDigests(st)).toEqual([]);
  });

  it('an import onto a name the store gives another image says so, and whether that image has a name left', async () => {
    const st = await store();
    const first = await tarFile(tarOf([file('etc/hostname', 'one\n')]));
    const second = await tarFile(tarOf([file('etc/hostname', 'two\n')]));
    const a = await ferry(['--store', st, 'import', first, 'example.com/imp:1']);
    expect(a.code, a.stderr).toBe(0);
    const old = /Digest: (sha256:[0-9a-f]{64})/.exec(a.stdout)![1];
    const b = await ferry(['--store', st, 'import', second, 'example.com/imp:1']);
    expect(b.code, b.stderr).toBe(0);
    expect(b.stdout).toContain(`example.com/imp:1 named ${old} until now (it has no other name now: the next ferry gc or rmi deletes it)`);
  });

  it('F5: a spool a killed import or export left in TMPDIR is removed by the next one; a live run\'s, another name, and its own are left', async () => {
    const tmp = await tempDir();
    // A pid that is surely gone: a process that has exited.
    const gone = await new Promise<number>((resolve) => {
      const child = spawn('true');
      child.on('exit', () => resolve(child.pid!));
    });
    const dead = join(tmp, `ferry-import-${gone}-AbC123`);
    const deadExport = join(tmp, `ferry-export-${gone}-XyZ789`);
    const live = join(tmp, `ferry-import-${process.pid}-LiVe01`);
    const other = join(tmp, 'ferry-import-notmine');
    for (const d of [dead, deadExport, live, other]) {
      await mkdir(d);
      await writeFile(join(d, 'layer'), 'x'.repeat(1000));
    }
    const input = await tarFile(tarOf([file('etc/hostname', 'box\n')]));
    const r = await ferry(['--store', await store(), 'import', input, 'spool:1'], { env: { TMPDIR: tmp } });
    expect(r.code, r.stderr).toBe(0);
    expect((await readdir(tmp)).sort()).toEqual([`ferry-import-${process.pid}-LiVe01`, 'ferry-import-notmine']);
  });

  it('A4: "../evil" and "/abs" entries', async () => {
    await Promise.all([
      refusedByCli(tarOf([file('../evil', 'x')]), 3, /import of .*rootfs\.tar: entry "\.\.\/evil" escapes the root/),
      refused(tarOf([file('/abs', 'x')]), 3, /entry "\/abs" has an absolute path/),
    ]);
  });

  it('A6, A7, A9: root symlink, escaping or missing hardlink targets, invalid whiteouts', async () => {
    await Promise.all([
      refusedByCli(tarOf([symlink('.', '/')]), 3, /would replace the root directory/),
      refused(tarOf([hardlink('x', '../../etc/shadow')]), 3, /points outside the root/),
      refused(tarOf([hardlink('x', 'missing')]), 3, /which does not exist/),
      refused(tarOf([file('.wh.', '')]), 3, /invalid whiteout/),
    ]);
  });

  it('A15: garbage, a truncated archive, an empty input, bzip2', async () => {
    await Promise.all([
      refusedByCli(Buffer.from('this is not a tar archive at all, just some text. '.repeat(20)), 3, /checksum mismatch/),
      refused(ROOTFS.subarray(0, 700), 3, /unexpected end of archive/),
      refused(Buffer.alloc(0), 3, /the input is empty/),
      refused(Buffer.from('BZh91AY&SY'), 3, /bzip2 compression is not supported/),
      refused(gzipSync(ROOTFS).subarray(0, 40), 3, /cannot decompress|unexpected end/),
    ]);
  });

  it('a missing file, a bad name or a missing name are usage errors (exit 2)', async () => {
    const st = await store();
    const missing = await run(st, ['import', '/nonexistent/rootfs.tar', 'x:1']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/\/nonexistent\/rootfs\.tar: no such file/);
    const badName = await run(st, ['import', await tarFile(), 'UPPER/Case:tag']);
    expect(badName.code).toBe(2);
    const noName = await run(st, ['import', await tarFile()]);
    expect(noName.code).toBe(2);
    expect(noName.stderr).toMatch(/name the image/);
  });
});

describe('change instructions (unit)', () => {
  it('splits words like the Dockerfile parser: quotes and escapes', () => {
    expect(splitWords(`a "b c" 'd "e"' f\\ g h="i j"`)).toEqual(['a', 'b c', 'd "e"', 'f g', 'h=i j']);
  });

  it('later ENV replaces an earlier value of the same key; shell-form CMD is wrapped in /bin/sh -c', () => {
    expect(applyChanges(['ENV A=1 B=2', 'ENV A=3', 'CMD echo "$A"'])).toEqual({ Env: ['A=3', 'B=2'], Cmd: ['/bin/sh', '-c', 'echo "$A"'] });
  });
});
