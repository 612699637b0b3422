import { describe, expect, it } from 'vitest';
import { packGroupRows, planGroups } from './layer-groups';

const H = 2;
const batch = (expert: number, stepRows?: number[]) => {
  const rows = stepRows ?? [0];
  return { layer: 0, expert, tokens: rows.length, x: Float32Array.from(rows.flatMap((r) => [r, r + 0.5])), ...(stepRows ? { stepRows: Int32Array.from(stepRows) } : {}) };
};

describe('planGroups', () => {
  it('sends each layer group its batches in one message; batches no group hosts go to their units', () => {
    const known = new Map([
      ['layer0.experts.0-1', [0, 1]],
      ['layer0.experts.2-3', [2, 3]],
    ]);
    const batches = [batch(0), batch(2), batch(1), batch(3), batch(5)];
    expect(planGroups(known, batches)).toEqual({
      groups: [
        { name: 'layer0.experts.0-1', indices: [0, 2] },
        { name: 'layer0.experts.2-3', indices: [1, 3] },
      ],
      rest: [4],
    });
    expect(planGroups(undefined, batches)).toEqual({ groups: [], rest: [0, 1, 2, 3, 4] });
  });

  it('spreads an expert hosted by several groups over them (pick), and puts a repeated expert in a second message', () => {
    const known = new Map([
      ['layer0.experts.0-1', [0, 1]],
      ['layer0.experts.1', [1]],
    ]);
    expect(planGroups(known, [batch(0), batch(1)], () => 1).groups).toEqual([
      { name: 'layer0.experts.0-1', indices: [0] },
      { name: 'layer0.experts.1', indices: [1] },
    ]);
    expect(planGroups(known, [batch(0), batch(1)], () => 0).groups).toEqual([{ name: 'layer0.experts.0-1', indices: [0, 1] }]);
    expect(planGroups(new Map([['layer0.experts.0-1', [0, 1]]]), [batch(0), batch(1), batch(0)]).groups).toEqual([
      { name: 'layer0.experts.0-1', indices: [0, 1] },
      { name: 'layer0.experts.0-1', indices: [2] },
    ]);
  });
});

describe('packGroupRows', () => {
  it('sends a step row shared by two experts once', () => {
    const { x, experts } = packGroupRows([batch(0, [4, 7]), batch(1, [7, 9])], H);
    expect([...x]).toEqual([4, 4.5, 7, 7.5, 9, 9.5]);
    expect(experts.map((e) => [e.expert, [...e.rows]])).toEqual([
      [0, [0, 1]],
      [1, [1, 2]],
    ]);
  });

  it('keeps every token as its own row without step rows', () => {
    const { x, experts } = packGroupRows([batch(0), batch(1)], H);
    expect(x.length).toBe(2 * H);
    expect(experts.map((e) => [...e.rows])).toEqual([[0], [1]]);
  });
});
