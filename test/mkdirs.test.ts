import { mkdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { mkdirs } from '../src/util/mkdirs.js';
import { tempDir } from './helpers/fs.js';

describe('mkdirs (mkdir -p that ends)', () => {
  it('makes every missing level with the mode asked, accepts an existing directory, and races with itself', async () => {
    const root = await tempDir();
    const deep = join(root, 'a', 'b', 'c');
    await mkdirs(deep, 0o700);
    expect((await stat(deep)).isDirectory()).toBe(true);
    expect((await stat(join(root, 'a'))).mode & 0o777).toBe(0o700);
    await mkdirs(deep);
    await Promise.all(Array.from({ length: 8 }, () => mkdirs(join(root, 'x', 'y', 'z'))));
    expect((await stat(join(root, 'x', 'y', 'z'))).isDirectory()).toBe(true);
    await mkdir(join(root, 'rel'));
    await mkdirs(join(root, 'rel', '.', 'sub'));
    expect((await stat(join(root, 'rel', 'sub'))).isDirectory()).toBe(true);
  });

  it('fails as mkdir -p does: a file in the way, and a directory that will not hold a new name (/proc)', async () => {
    const root = await tempDir();
    await writeFile(join(root, 'file'), 'x');
    await expect(mkdirs(join(root, 'file'))).rejects.toMatchObject({ code: 'EEXIST' });
    await expect(mkdirs(join(root, 'file', 'sub'))).rejects.toMatchObject({ code: 'ENOTDIR' });
    await expect(mkdirs('/proc/ferry-nope/a/b')).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
