import { describe, expect, it } from 'vitest';
import { exitCodeFor, toFerryError } from '../src/errors.js';

/** What the kernel's vfat and exfat give for a name they cannot hold (no such filesystem here: the errno as Node reports it). */
const errno = (code: string, syscall: string, path: string) => Object.assign(new Error(`${code}: ${syscall} '${path}'`), { code, syscall, path });

describe('errno mapping for file names a filesystem refuses', () => {
  it('EINVAL from creating a file is exit 7 naming the output, with the FAT hint when the name has a character FAT refuses', () => {
    const e = toFerryError(errno('EINVAL', 'open', '/mnt/usb/.tmp-123-abcdef01-app:1.tar'));
    expect(e.code).toBe('IO');
    expect(exitCodeFor(e)).toBe(7);
    expect(e.message).toBe('EINVAL: /mnt/usb/app:1.tar (the filesystem refuses this name)');
    expect(e.hint).toContain('FAT and exFAT');
    expect(toFerryError(errno('EINVAL', 'open', '/mnt/usb/plain.tar')).hint).toBe('choose another name or location');
  });

  it('an EINVAL that is not about a name stays an internal error; EPERM gets the FAT hint only for such a name', () => {
    expect(toFerryError(errno('EINVAL', 'read', '/mnt/usb/x.tar')).code).toBe('INTERNAL');
    expect(toFerryError(errno('EPERM', 'open', '/mnt/usb/a?b.tar')).hint).toContain('FAT and exFAT');
    expect(toFerryError(errno('EPERM', 'open', '/srv/x.tar')).hint).toBe('choose a writable location or fix its permissions');
  });
});
