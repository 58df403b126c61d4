import { describe, expect, it } from 'vitest';
import { destinationOf, tempOwnerPid, tempPathWith, tempTail, tempTailOf } from '../src/blob/temp-names.js';

describe('temp names beside an output', () => {
  it('a short name is carried whole and read back, dashes and all', () => {
    const temp = tempPathWith('/d/my-app-1.tar', 4194304, 'abcd0123');
    expect(temp).toBe('/d/.tmp-4194304-abcd0123-my-app-1.tar');
    expect(tempOwnerPid('.tmp-4194304-abcd0123-my-app-1.tar')).toBe(4194304);
    expect(tempTailOf('.tmp-4194304-abcd0123-my-app-1.tar')).toBe('my-app-1.tar');
    expect(destinationOf(temp)).toBe('/d/my-app-1.tar');
  });

  it('a name that fits the filesystem but not with the prefix gets a head and a hash: the temp name stays within 255 bytes', () => {
    for (const name of ['a'.repeat(232), 'b'.repeat(255), 'ü'.repeat(127) + '.tar', '😀'.repeat(63) + '.tar']) {
      const temp = tempPathWith(`/d/${name}`, 4194304, 'abcd0123');
      const base = temp.slice(3);
      expect(Buffer.byteLength(base), name).toBeLessThanOrEqual(255);
      expect(base, 'no character cut in half').not.toContain('\uFFFD');
      expect(Buffer.from(base).toString(), 'no character cut in half').toBe(base);
      // Messages still name what the user asked for.
      expect(destinationOf(temp)).toBe(`/d/${name}`);
    }
    expect(tempTail('a'.repeat(231))).toBe('a'.repeat(231));
  });

  it('two long names with the same beginning get different temp names, each the same in every run', () => {
    const a = 'x'.repeat(240) + '-1.tar';
    const b = 'x'.repeat(240) + '-2.tar';
    expect(tempTail(a)).not.toBe(tempTail(b));
    expect(tempTail(a)).toBe(tempTail(a));
    expect(tempTailOf(`.tmp-7-00ff00ff-${tempTail(a)}`)).toBe(tempTail(a));
  });
});
