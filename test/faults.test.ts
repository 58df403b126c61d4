import { execFileSync } from 'node:child_process';
import { chmod, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { ferry, finish, start } from './helpers/cli.js';
import { TESTDATA, tempDir, tempFilesIn } from './helpers/fs.js';
import { TAGS, testdataImages as expected } from './helpers/expected-images.js';
import { makeLayout } from './helpers/images.js';
import { makeTarLayout, writeTarBlob } from './helpers/layers.js';
import { startServe } from './helpers/serve.js';
import { isRoot } from './helpers/tools.js';



/** Runs as an unprivileged user: root ignores file permissions, so EACCES needs someone else. */
const NOBODY = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];

const mounts: string[] = [];
afterAll(() => {
  for (const m of mounts.splice(0)) {
    try {
      execFileSync('umount', ['-l', m]);
    } catch {
      // already gone
    }
  }
});

async function tmpfs(size: string, opts = ''): Promise<string> {
  const dir = await tempDir('ferry-tmpfs-');
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}${opts ? ',' + opts : ''}`, 'tmpfs', dir]);
  mounts.push(dir);
  return dir;
}

const canMount = isRoot() && (() => {
  try {
    execFileSync('sh', ['-c', 'command -v mount setpriv'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
if (!canMount) {
  const msg = 'faults tests that need root (tmpfs mounts, setpriv) are SKIPPED: run the suite as root';
  if (process.env.CI === 'true') throw new Error(`CI=true: ${msg}`);
  process.stderr.write(`\n*** ${msg} ***\n\n`);
}

/** Waits (up to ~10 s) until a copy into the layout `dst` has a blob's temp file open. */
async function writingInto(dst: string): Promise<boolean> {
  for (let i = 0; i < 2000; i++) {
    if ((await tempFilesIn(join(dst, 'blobs')).catch(() => [])).length > 0) return true;
    await sleep(5);
  }
  return false;
}

describe('interruption and crashes', () => {
  it('F2: a copy killed with SIGKILL halfway, then rerun, exits 0 and verify is clean', async () => {
    const src = join(await tempDir(), 'src');
    await makeLayout(src, [{ tag: 'big', layers: [96 << 20, 96 << 20, 96 << 20] }]);
    const dst = join(await tempDir(), 'dst');
    const child = start(['copy', `oci:${src}:big`, `oci:${dst}:big`]);
    const done = finish(child);
    // Kill it once a blob is being written.
    await writingInto(dst);
    child.kill('SIGKILL');
    const killed = await done;
    expect(killed.signal).toBe('SIGKILL');
    const index = JSON.parse(await readFile(join(dst, 'index.json'), 'utf8'));
    expect(index.manifests).toEqual([]);
    const rerun = await ferry(['copy', `oci:${src}:big`, `oci:${dst}:big`]);
    expect(rerun.stderr).toBe(rerun.stderr); // message about removed temps is optional: it depends on timing
    expect(rerun.code).toBe(0);
    expect(await tempFilesIn(dst)).toEqual([]);
    const v = await ferry(['verify', dst]);
    expect(v.code).toBe(0);
    expect(v.stdout).toContain('0 problem(s)');
  });

  // SIGHUP: the terminal or ssh session went away (ferry was killed outright, temp files left).
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]] as const) {
    it(`F1: ${signal} during a copy exits ${code} within 2 s, removes temp files and leaves index.json unchanged`, async () => {
      const src = join(await tempDir(), 'src');
      await makeLayout(src, [{ tag: 'big', layers: [160 << 20, 160 << 20] }]);
      const dst = join(await tempDir(), 'dst');
      const child = start(['copy', `oci:${src}:big`, `oci:${dst}:big`]);
      const done = finish(child);
      expect(await writingInto(dst), 'the copy never started writing a blob').toBe(true);
      const sent = performance.now();
      child.kill(signal);
      const r = await done;
      expect(performance.now() - sent).toBeLessThan(2000);
      expect(r.code).toBe(code);
      expect(r.stderr).toContain('interrupted');
      expect(await tempFilesIn(dst).catch(() => [])).toEqual([]);
      // The layout this copy created holds no image: either it is gone (nothing complete was
      // stored, so nothing is left), or it is there with an empty index and only complete blobs.
      const index = await readFile(join(dst, 'index.json'), 'utf8').catch(() => undefined);
      if (index !== undefined) expect(JSON.parse(index).manifests).toEqual([]);
    });
  }

  it('started with SIGHUP ignored (nohup, trap \'\' HUP), a hangup leaves the run going: Node resets it, bin/ferry tells ferry', async () => {
    const src = join(await tempDir(), 'src');
    await makeLayout(src, [{ tag: 'big', layers: [96 << 20] }]);
    const dst = join(await tempDir(), 'dst');
    const child = start([], { wrap: ['sh', '-c', `trap '' HUP; exec "$0" copy oci:${src}:big oci:${dst}:big`] });
    const done = finish(child);
    expect(await writingInto(dst), 'the copy never started writing a blob').toBe(true);
    child.kill('SIGHUP');
    const r = await done;
    expect(r.code, r.stderr).toBe(0);
    expect((await ferry(['verify', dst])).code).toBe(0);
  });

  it('F5: leftovers of a dead run (temp files, a stale lock, a torn blob) do not block a rerun', async () => {
    const dst = join(await tempDir(), 'dst');
    expect((await ferry(['copy', `oci:${TESTDATA}:plain`, `oci:${dst}:p`])).code).toBe(0);
    const blobs = join(dst, 'blobs', 'sha256');
    await writeFile(join(blobs, '.tmp-999999-dead-' + 'a'.repeat(64)), 'partial');
    await writeFile(join(dst, 'index.json.lock'), JSON.stringify({ pid: 999999, host: hostname(), since: 'x' }));
    const layer = (await expected()).layers!.layers![0]!;
    await writeFile(join(blobs, layer.digest.slice(7)), 'torn');
    const r = await ferry(['copy', `oci:${TESTDATA}:layers`, `oci:${dst}:l`]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/broke a stale lock/);
    expect(r.stderr).toMatch(/removed 1 temporary file/);
    expect((await ferry(['verify', dst])).code).toBe(0);
  });
});

describe('limits', () => {
  it('A18: a 5 GiB index.json is refused with exit 3 "exceeds limit", memory flat', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    await writeFile(join(dir, 'index.json'), '');
    execFileSync('truncate', ['-s', '5G', join(dir, 'index.json')]);
    const r = await ferry(['copy', `oci:${dir}:x`, `oci:${join(await tempDir(), 'dst')}:x`], { wrap: ['/usr/bin/time', '-f', 'maxrss=%M'] });
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/exceeds limit/);
    const rssKb = Number(/maxrss=(\d+)/.exec(r.stderr)?.[1]);
    expect(rssKb).toBeLessThan(256 * 1024);
  });
});

describe('a cap on the size of one file (FAT32: 4 GiB), made here with ulimit -f', () => {
  // The kernel's EFBIG, as a FAT32 stick gives it at 4 GiB: ferry ignores SIGXFSZ (Node does), so
  // the write fails instead of the process being killed. It was exit 1 with a stack trace.
  const capped = (kib: number) => ({ wrap: ['bash', '-c', `ulimit -f ${kib}; exec "$0" "$@"`] });

  it('save, export and load stop with exit 7 naming the file, hint at --volume-size, and leave nothing', async () => {
    const dir = await tempDir();
    const src = join(dir, 'src');
    const layer = await writeTarBlob(src, [{ name: 'big', bigFile: 1 << 20 }]);
    await makeTarLayout(src, [{ tag: 'big', layers: [{ file: layer }] }]);
    const out = join(dir, 'out');
    await mkdir(out);
    for (const [args, file] of [
      [['save', `oci:${src}:big`, '-o', join(out, 'x.tar')], join(out, 'x.tar')],
      [['export', `oci:${src}:big`, '-o', join(out, 'r.tar')], join(out, 'r.tar')],
    ] as const) {
      const r = await ferry([...args], capped(256));
      expect(r.code, r.stderr).toBe(7);
      expect(r.stderr).toContain(`EFBIG: ${file} (file too large for this filesystem)`);
      expect(r.stderr).toContain('--volume-size 4G');
      expect(r.stderr).not.toMatch(/\n\s+at /);
      expect(await readdir(out)).toEqual([]);
    }
    // Volumes under the cap are how a big save fits.
    const vols = await ferry(['save', '-q', `oci:${src}:big`, '-o', join(out, 'v.tar'), '--volume-size', '200K'], capped(256));
    expect(vols.code, vols.stderr).toBe(0);
    expect((await ferry(['verify', ...(await readdir(out)).map((n) => join(out, n))])).code).toBe(0);
    const archive = join(dir, 'big.tar');
    expect((await ferry(['save', '-q', `oci:${src}:big`, '-o', archive])).code).toBe(0);
    const store = join(dir, 'store');
    const load = await ferry(['--store', store, 'load', '-i', archive], capped(256));
    expect(load.code, load.stderr).toBe(7);
    expect(load.stderr).toContain(`EFBIG: ${join(store, 'blobs', 'sha256')}`);
    expect(await tempFilesIn(store).catch(() => [])).toEqual([]);
  });
});

/** A FAT32 filesystem (the usual USB stick) through FUSE: this kernel may have no vfat, CI's neither. */
async function fatStick(): Promise<string | undefined> {
  try {
    execFileSync('sh', ['-c', 'command -v mkfs.vfat fusefat && test -c /dev/fuse'], { stdio: 'ignore' });
    const dir = await tempDir('ferry-fat-');
    const image = join(dir, 'stick.img');
    const mnt = join(dir, 'mnt');
    await mkdir(mnt);
    execFileSync('truncate', ['-s', '64M', image]);
    execFileSync('mkfs.vfat', ['-F', '32', image], { stdio: 'ignore' });
    execFileSync('fusefat', ['-o', 'rw+', image, mnt], { stdio: 'ignore' });
    mounts.push(mnt);
    return mnt;
  } catch {
    return undefined;
  }
}

describe('a FAT32 stick', () => {
  it('save and volumes land on it (no hard links there), an existing file is still refused; an archive over 4 GiB is refused before writing', async (ctx) => {
    const mnt = canMount ? await fatStick() : undefined;
    if (!mnt) {
      process.stderr.write('\n*** the FAT32 test is SKIPPED: it needs root, /dev/fuse, fusefat and mkfs.vfat (apt-get install fusefat dosfstools) ***\n\n');
      ctx.skip();
      return;
    }
    const src = join(await tempDir(), 'src');
    const layer = await writeTarBlob(src, [{ name: 'big', bigFile: 300 << 10 }]);
    await makeTarLayout(src, [{ tag: 'app', layers: [{ file: layer }] }]);
    // Was: EPERM from link(), after the whole archive was written, and the archive deleted.
    const saved = await ferry(['save', '-q', `oci:${src}:app`, '-o', join(mnt, 'app.tar')]);
    expect(saved.code, saved.stderr).toBe(0);
    const again = await ferry(['save', '-q', `oci:${src}:app`, '-o', join(mnt, 'app.tar')]);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain('already exists');
    const vols = await ferry(['save', '-q', `oci:${src}:app`, '-o', join(mnt, 'v.tar'), '--volume-size', '128K']);
    expect(vols.code, vols.stderr).toBe(0);
    const files = (await readdir(mnt)).sort();
    expect(files.filter((n) => /^v\.\d{3}\.tar$/.test(n)).length).toBeGreaterThan(1);
    expect(files.filter((n) => n.startsWith('.tmp-'))).toEqual([]);
    expect((await ferry(['verify', ...files.map((n) => join(mnt, n))])).code).toBe(0);
    // An image whose manifest names a 5 GiB layer (a sparse file: never read).
    const huge = join(await tempDir(), 'huge');
    const { createHash } = await import('node:crypto');
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    await mkdir(join(huge, 'blobs', 'sha256'), { recursive: true });
    const layerHex = 'a'.repeat(64);
    await writeFile(join(huge, 'blobs', 'sha256', layerHex), '');
    execFileSync('truncate', ['-s', '5G', join(huge, 'blobs', 'sha256', layerHex)]);
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [`sha256:${'b'.repeat(64)}`] } }));
    await writeFile(join(huge, 'blobs', 'sha256', sha(config)), config);
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${sha(config)}`, size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${layerHex}`, size: 5 * 2 ** 30 }],
    }));
    await writeFile(join(huge, 'blobs', 'sha256', sha(manifest)), manifest);
    await writeFile(join(huge, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    await writeFile(join(huge, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${sha(manifest)}`, size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': 'huge' } }] }));
    const big = await ferry(['save', `oci:${huge}:huge`, '-o', join(mnt, 'huge.tar')]);
    expect(big.code, big.stderr).toBe(3);
    expect(big.stderr).toContain(`but ${mnt} is FAT and holds at most 4294967295 bytes in one file; nothing was written`);
    expect(big.stderr).toContain('--volume-size 4G');
    const oversized = await ferry(['save', `oci:${huge}:huge`, '-o', join(mnt, 'h.tar'), '--volume-size', '5G']);
    expect(oversized.code).toBe(2);
    expect(oversized.stderr).toContain(`larger than ${mnt} (FAT) can hold in one file`);
    expect((await readdir(mnt)).sort()).toEqual(files);
    // A name FAT cannot hold (EPERM through FUSE, EINVAL from the kernel's vfat) is not a permission problem.
    const colon = await ferry(['save', '-q', `oci:${src}:app`, '-o', join(mnt, 'app:1.tar')]);
    expect(colon.code).toBe(7);
    expect(colon.stderr).toContain('FAT and exFAT (USB sticks) allow none of : * ? " < > | \\ in a file name');
    expect((await readdir(mnt)).sort()).toEqual(files);
    // sync keeps its archive there too; a volume size FAT cannot hold is refused, dry run or not.
    const served = await startServe(join(await tempDir(), 'serve'), ['-q']);
    try {
      expect((await ferry(['copy', '-q', `oci:${src}:app`, `docker://${served.host}/fat/app:1`])).code).toBe(0);
      for (const extra of [[], ['--dry-run']]) {
        const big = await ferry(['sync', `${served.host}/fat/app`, join(mnt, 'sync.tar'), '--volume-size', '5G', ...extra]);
        expect(big.code, big.stderr).toBe(2);
        expect(big.stderr).toContain(`larger than ${mnt} (FAT) can hold in one file`);
      }
      const synced = await ferry(['sync', '-q', `${served.host}/fat/app`, join(mnt, 'sync.tar')]);
      expect(synced.code, synced.stderr).toBe(0);
      expect((await ferry(['verify', join(mnt, 'sync.tar')])).code).toBe(0);
    } finally {
      await served.stop();
    }
  });
});

describe('concurrency', () => {
  it('F3: killing writers of index.json at random moments never leaves it torn', async () => {
    const store = join(await tempDir(), 'store');
    expect((await ferry(['--store', store, 'copy', `oci:${TESTDATA}:plain`, 'example.com/p:0'])).code).toBe(0);
    // Kills spread around the time a whole tag command takes here, so some land while it writes.
    const t0 = performance.now();
    expect((await ferry(['--store', store, 'tag', 'example.com/p:0', 'example.com/p:timed'])).code).toBe(0);
    const whole = performance.now() - t0;
    const outcomes = { old: 0, new: 0 };
    for (let i = 1; i <= 12; i++) {
      const before = await readFile(join(store, 'index.json'), 'utf8');
      const child = start(['--store', store, 'tag', 'example.com/p:0', `example.com/p:${i}`]);
      const done = finish(child);
      await sleep(whole * (0.4 + (((i * 37) % 12) / 12) * 0.8));
      child.kill('SIGKILL');
      await done;
      const after = await readFile(join(store, 'index.json'), 'utf8');
      if (after === before) {
        outcomes.old++;
        continue;
      }
      // Not the old file: then exactly the old entries plus the new tag's, nothing else.
      const entries = (text: string) => (JSON.parse(text) as { manifests: unknown[] }).manifests.map((m) => JSON.stringify(m));
      const was = entries(before);
      const now = entries(after);
      expect(was.filter((e) => !now.includes(e))).toEqual([]);
      const added = now.filter((e) => !was.includes(e));
      expect(added).toHaveLength(1);
      expect(added[0]).toContain(`example.com/p:${i}`);
      outcomes.new++;
    }
    expect(outcomes.old + outcomes.new).toBe(12);
    expect((await ferry(['--store', store, 'verify'])).code).toBe(0);
  });

  it('G1: several copies of different images into one layout at the same time all land', async () => {
    for (let round = 0; round < 3; round++) {
      const dst = join(await tempDir(), 'dst');
      const runs = await Promise.all(TAGS.map((t) => ferry(['copy', `oci:${TESTDATA}:${t}`, `oci:${dst}:${t}`])));
      for (const r of runs) expect(r.code, r.stderr).toBe(0);
      const index = JSON.parse(await readFile(join(dst, 'index.json'), 'utf8'));
      expect(index.manifests.map((m: { annotations: Record<string, string> }) => m.annotations['org.opencontainers.image.ref.name']).sort()).toEqual([...TAGS].sort());
    }
  });

  it('G1: two copies into one store both appear in ferry images', async () => {
    const store = join(await tempDir(), 'store');
    const [a, b] = await Promise.all([
      ferry(['--store', store, 'copy', `oci:${TESTDATA}:layers`, 'example.com/a:1']),
      ferry(['--store', store, 'copy', `oci:${TESTDATA}:docker`, 'example.com/b:1']),
    ]);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    const images = await ferry(['--store', store, 'images']);
    expect(images.stdout).toMatch(/example\.com\/a\s+1/);
    expect(images.stdout).toMatch(/example\.com\/b\s+1/);
  });

  it('G2: two copies of the same image at the same time both succeed, no torn blob', async () => {
    const dst = join(await tempDir(), 'dst');
    const runs = await Promise.all([0, 1, 2].map(() => ferry(['copy', `oci:${TESTDATA}:multi`, `oci:${dst}:m`])));
    for (const r of runs) expect(r.code, r.stderr).toBe(0);
    expect((await ferry(['verify', dst])).code).toBe(0);
    expect(JSON.parse(await readFile(join(dst, 'index.json'), 'utf8')).manifests).toHaveLength(1);
  });

  it('G4: a live lock makes ferry wait, then exit 8 naming the holder', async () => {
    const dst = join(await tempDir(), 'dst');
    expect((await ferry(['copy', `oci:${TESTDATA}:plain`, `oci:${dst}:p`])).code).toBe(0);
    await writeFile(join(dst, 'index.json.lock'), JSON.stringify({ pid: process.pid, host: hostname(), since: 'now' }));
    const r = await ferry(['copy', `oci:${TESTDATA}:zstd`, `oci:${dst}:z`], { env: { FERRY_LOCK_TIMEOUT: '0.3' } });
    expect(r.code).toBe(8);
    expect(r.stderr).toContain(`locked by process ${process.pid}`);
  });
});

describe.skipIf(!canMount)('filesystem faults', () => {
  it('E1: disk full mid-blob exits 7 naming the path and the space needed; temp removed; rerun after freeing space succeeds', async () => {
    const src = join(await tempDir(), 'src');
    const [img] = await makeLayout(src, [{ tag: 'big', layers: [3 << 20] }]);
    const mnt = await tmpfs('2m');
    const dst = join(mnt, 'dst');
    const r = await ferry(['copy', `oci:${src}:big`, `oci:${dst}:big`]);
    expect(r.code).toBe(7);
    expect(r.stderr).toMatch(/ENOSPC/);
    expect(r.stderr).toContain(join(dst, 'blobs', 'sha256', img!.layers[0]!.digest.slice(7)));
    expect(r.stderr).toMatch(/free some space/);
    // "need about 1.1 MiB more on /tmp/ferry-tmpfs-x (free 916.0 KiB)": need + free = what is left to write.
    const m = new RegExp(`need about ([\\d.]+) (B|KiB|MiB) more on ${mnt} \\(free ([\\d.]+) (B|KiB|MiB)\\)`).exec(r.stderr);
    expect(m, r.stderr).not.toBeNull();
    const bytes = (n: string, unit: string) => Number(n) * { B: 1, KiB: 1024, MiB: 1 << 20 }[unit]!;
    const left = img!.layers[0]!.size + img!.config.size + img!.manifest.size;
    expect(bytes(m![1]!, m![2]!) + bytes(m![3]!, m![4]!)).toBeGreaterThan(left - 128 * 1024);
    expect(bytes(m![1]!, m![2]!) + bytes(m![3]!, m![4]!)).toBeLessThan(left + 128 * 1024);
    expect(await tempFilesIn(dst)).toEqual([]);
    expect((await ferry(['verify', dst])).code).toBe(0);
    execFileSync('mount', ['-o', 'remount,size=16m', mnt]);
    expect((await ferry(['copy', `oci:${src}:big`, `oci:${dst}:big`])).code).toBe(0);
    expect((await ferry(['verify', dst])).code).toBe(0);
  });

  it('E1: save and export onto a full disk exit 7 naming the output file, its filesystem and the free space; nothing is left', async () => {
    const src = join(await tempDir(), 'src');
    const layer = await writeTarBlob(src, [{ name: 'big', bigFile: 3 << 20 }]);
    await makeTarLayout(src, [{ tag: 'big', layers: [{ file: layer }] }]);
    const mnt = await tmpfs('2m');
    const save = await ferry(['save', `oci:${src}:big`, '-o', join(mnt, 'x.tar')]);
    expect(save.code, save.stderr).toBe(7);
    expect(save.stderr).toMatch(new RegExp(`ENOSPC: no space left writing ${join(mnt, 'x.tar')}: need about [\\d.]+ (KiB|MiB) more on ${mnt} \\(free `));
    // The temp file filling the disk goes as the save fails: its space counts as free (it said
    // "free 0 B" and asked for the whole archive again).
    const said = new RegExp(`need about ([\\d.]+) (B|KiB|MiB) more on ${mnt} \\(free ([\\d.]+) (B|KiB|MiB)\\)`).exec(save.stderr)!;
    const size = (n: string, unit: string) => Number(n) * { B: 1, KiB: 1024, MiB: 1 << 20 }[unit]!;
    expect(size(said[3]!, said[4]!)).toBeGreaterThan(1 << 20);
    expect(size(said[1]!, said[2]!) + size(said[3]!, said[4]!)).toBeGreaterThan((3 << 20) - (128 << 10));
    expect(size(said[1]!, said[2]!) + size(said[3]!, said[4]!)).toBeLessThan((3 << 20) + (256 << 10));
    const exported = await ferry(['export', `oci:${src}:big`, '-o', join(mnt, 'r.tar')]);
    expect(exported.code, exported.stderr).toBe(7);
    expect(exported.stderr).toMatch(new RegExp(`ENOSPC: no space left writing ${join(mnt, 'r.tar')}: on ${mnt} \\(free [\\d.]+ (B|KiB|MiB)\\)`));
    expect(await readdir(mnt)).toEqual([]);
    // Volumes and load say where too (they were a bare "ENOSPC: PATH").
    const vols = await ferry(['save', `oci:${src}:big`, '-o', join(mnt, 'v.tar'), '--volume-size', '1M']);
    expect(vols.code, vols.stderr).toBe(7);
    expect(vols.stderr).toMatch(new RegExp(`ENOSPC: no space left writing ${mnt}/.*v\\.\\d{3}\\.tar.*on ${mnt} \\(free `));
    expect(await readdir(mnt)).toEqual([]);
    const archive = join(await tempDir(), 'big.tar');
    expect((await ferry(['save', '-q', `oci:${src}:big`, '-o', archive])).code).toBe(0);
    const load = await ferry(['--store', join(mnt, 'store'), 'load', '-i', archive]);
    expect(load.code, load.stderr).toBe(7);
    expect(load.stderr).toMatch(new RegExp(`ENOSPC: no space left writing ${mnt}/store/.*on ${mnt} \\(free `));
  });

  it('E1: sync into an archive that no longer fits exits 7; the old archive is left byte for byte, nothing beside it', async () => {
    const src = join(await tempDir(), 'src');
    await makeLayout(src, [{ tag: 'small', layers: [Buffer.from('a small layer')] }, { tag: 'big', layers: [1200 << 10] }]);
    const served = await startServe(join(await tempDir(), 'serve'), ['-q']);
    try {
      expect((await ferry(['copy', '-q', `oci:${src}:small`, `docker://${served.host}/fault/app:1`])).code).toBe(0);
      const mnt = await tmpfs('2m');
      const file = join(mnt, 'app.tar');
      expect((await ferry(['sync', `${served.host}/fault/app`, file])).code).toBe(0);
      const before = await readFile(file);
      // The staged layer fits; the archive written anew beside it does not.
      expect((await ferry(['copy', '-q', `oci:${src}:big`, `docker://${served.host}/fault/app:2`])).code).toBe(0);
      const r = await ferry(['sync', `${served.host}/fault/app`, file]);
      expect(r.code, r.stderr).toBe(7);
      expect(r.stderr).toContain(`${file} was left as it was`);
      expect(r.stderr).toMatch(/ENOSPC/);
      expect(Buffer.compare(await readFile(file), before)).toBe(0);
      expect(await readdir(mnt)).toEqual(['app.tar']);
    } finally {
      await served.stop();
    }
  });

  it('E2: disk full while writing index.json keeps the old index.json intact', async () => {
    const mnt = await tmpfs('1m');
    const store = join(mnt, 'store');
    expect((await ferry(['--store', store, 'copy', `oci:${TESTDATA}:plain`, 'example.com/p:1'])).code).toBe(0);
    const before = await readFile(join(store, 'index.json'), 'utf8');
    try {
      execFileSync('dd', ['if=/dev/zero', `of=${join(mnt, 'filler')}`, 'bs=4k'], { stdio: 'ignore' });
    } catch {
      // dd stops with ENOSPC, which is the point
    }
    const r = await ferry(['--store', store, 'tag', 'example.com/p:1', 'example.com/p:2']);
    expect(r.code).toBe(7);
    expect(await readFile(join(store, 'index.json'), 'utf8')).toBe(before);
    expect(await tempFilesIn(store)).toEqual([]);
  });

  it('E3: a read-only destination fails with exit 7 before any download', async () => {
    const mnt = await tmpfs('4m');
    await mkdir(join(mnt, 'dst'));
    execFileSync('mount', ['-o', 'remount,ro', mnt]);
    const r = await ferry(['copy', '--json', `oci:${TESTDATA}:layers`, `oci:${join(mnt, 'dst')}:x`]);
    expect(r.code).toBe(7);
    expect(r.stderr).toMatch(/EROFS|read-only/);
    // No event: nothing was copied; only the error line (docs/schemas: $defs/error).
    expect(JSON.parse(r.stdout)).toMatchObject({ event: 'error', code: 'IO', exitCode: 7 });
  });

  it('gc --dry-run of a read-only store (or layout) lists what gc would delete; gc itself exits 7', async () => {
    const mnt = await tmpfs('4m');
    const store = join(mnt, 'store');
    for (const tag of ['layers', 'plain']) {
      expect((await ferry(['--store', store, 'copy', '-q', `oci:${TESTDATA}:${tag}`, `example.com/ro:${tag}`])).code).toBe(0);
    }
    expect((await ferry(['--store', store, 'rmi', '--no-prune', 'example.com/ro:layers'])).code).toBe(0);
    execFileSync('mount', ['-o', 'remount,ro', mnt]);
    const layers = (await expected()).layers;
    for (const args of [['--store', store, 'gc', '--dry-run'], ['gc', '--dry-run', store]]) {
      const r = await ferry(args);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain(`Would delete: ${layers.digest}`);
      expect(r.stdout).toMatch(/Would delete 5 blob\(s\)/);
    }
    const r = await ferry(['--store', store, 'gc']);
    expect(r.code).toBe(7);
    expect(r.stderr).toMatch(/EROFS|read-only/);
  });

  it('E3: a destination without write permission fails with exit 7 (non-root user)', async () => {
    const base = await tempDir();
    await chmod(base, 0o755);
    const dst = join(base, 'dst');
    await mkdir(dst, { mode: 0o555 });
    await chmod(dst, 0o555);
    const r = await ferry(['copy', `oci:${TESTDATA}:layers`, `oci:${dst}:x`], { wrap: NOBODY });
    expect(r.code, r.stderr).toBe(7);
    expect(r.stderr).toMatch(/EACCES/);
    expect(r.stderr).toContain(dst);
  });

  it('E4: EACCES on an existing blob exits 7 naming it', async () => {
    const base = await tempDir();
    await chmod(base, 0o755);
    const src = join(base, 'src');
    const [img] = await makeLayout(src, [{ tag: 't', layers: [Buffer.from('secret layer')] }]);
    await chmod(src, 0o755);
    const blob = join(src, 'blobs', 'sha256', img!.layers[0]!.digest.slice(7));
    await chmod(blob, 0o000);
    const dst = join(base, 'dst');
    await mkdir(dst, { mode: 0o777 });
    await chmod(dst, 0o777);
    const r = await ferry(['copy', `oci:${src}:t`, `oci:${dst}:t`], { wrap: NOBODY });
    expect(r.code, r.stderr).toBe(7);
    expect(r.stderr).toContain(blob);
  });

  it('E5: TMPDIR elsewhere does not matter: temp files live beside their destination', async () => {
    const dst = join(await tempDir(), 'dst');
    const r = await ferry(['copy', `oci:${TESTDATA}:layers`, `oci:${dst}:x`], { env: { TMPDIR: '/nonexistent/tmp' } });
    expect(r.code, r.stderr).toBe(0);
    expect((await stat(join(dst, 'index.json'))).isFile()).toBe(true);
    expect((await readdir(join(dst, 'blobs', 'sha256'))).length).toBe(5);
  });
});
