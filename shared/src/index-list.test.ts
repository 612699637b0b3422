import { describe, expect, it } from 'vitest';
import { parseIndexList } from './index-list';

describe('parseIndexList', () => {
  it('reads ranges, lists and mixes, sorted and without duplicates', () => {
    expect(parseIndexList('0-3', '--experts')).toEqual([0, 1, 2, 3]);
    expect(parseIndexList('5,0,2', '--experts')).toEqual([0, 2, 5]);
    expect(parseIndexList('0-1, 4,1', '--layers')).toEqual([0, 1, 4]);
    expect(parseIndexList('7', '--layers')).toEqual([7]);
  });

  it('names the flag and the problem', () => {
    expect(() => parseIndexList('a', '--experts')).toThrow('--experts: "a" is not a list like 0-3 or 0,2,5');
    expect(() => parseIndexList('1,', '--experts')).toThrow(/is not a list/);
    expect(() => parseIndexList('-1', '--layers')).toThrow(/is not a list/);
    expect(() => parseIndexList('4-2', '--layers')).toThrow('--layers: range 4-2 runs backwards');
    expect(() => parseIndexList('0-9999999', '--layers')).toThrow(/implausibly large/);
  });
});
