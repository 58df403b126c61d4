import { describe, expect, it } from 'vitest';
import { byNaturalOrder } from '../src/util/order.js';

describe('byNaturalOrder (tag order in sync)', () => {
  it('compares digit runs by value and the rest by code unit', () => {
    const tags = ['v10', 'v2', 'v1', '1.10.0', '1.9.1', '1.9', 'latest', 'Latest', 'v1-rc1', 'v1.0', '2024-01-15', '2023-12-31', 'a'];
    expect([...tags].sort(byNaturalOrder)).toEqual(['1.9', '1.9.1', '1.10.0', '2023-12-31', '2024-01-15', 'Latest', 'a', 'latest', 'v1', 'v1-rc1', 'v1.0', 'v2', 'v10']);
  });

  it('is a total order: zero padding and huge numbers are told apart, equal strings are equal', () => {
    expect(byNaturalOrder('v7', 'v07')).not.toBe(0);
    expect(Math.sign(byNaturalOrder('v7', 'v07'))).toBe(-Math.sign(byNaturalOrder('v07', 'v7')));
    expect(byNaturalOrder('build-99999999999999999999', 'build-100000000000000000000')).toBeLessThan(0);
    expect(byNaturalOrder('x1y', 'x1y')).toBe(0);
    expect(byNaturalOrder('', 'a')).toBeLessThan(0);
  });
});
