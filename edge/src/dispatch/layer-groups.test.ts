import { describe, expect, it } from 'vitest';
import { assembleGroupReplies, planGroupRows, planGroups, sliceGroupRows, writeGroupRows } from './layer-groups';

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

/** The plan's distinct rows, gathered as a message would (writeGroupRows). */
const gathered = (batches: ReturnType<typeof batch>[], plan: ReturnType<typeof planGroupRows>, start = 0, end = plan.distinct) => {
  const out = new Float32Array((end - start) * H);
  writeGroupRows(batches, plan, start, end, H, out);
  return [...out];
};

describe('planGroupRows', () => {
  it('sends a step row shared by two experts once', () => {
    const batches = [batch(0, [4, 7]), batch(1, [7, 9])];
    const plan = planGroupRows(batches);
    expect(plan.distinct).toBe(3);
    expect(gathered(batches, plan)).toEqual([4, 4.5, 7, 7.5, 9, 9.5]);
    expect(gathered(batches, plan, 1, 3)).toEqual([7, 7.5, 9, 9.5]);
    expect(plan.experts.map((e) => [e.expert, [...e.rows]])).toEqual([
      [0, [0, 1]],
      [1, [1, 2]],
    ]);
  });

  it('keeps every token as its own row without step rows', () => {
    const plan = planGroupRows([batch(0), batch(1)]);
    expect(plan.distinct).toBe(2);
    expect(plan.experts.map((e) => [...e.rows])).toEqual([[0], [1]]);
  });
});

describe('sliceGroupRows', () => {
  // Experts 0 and 1 share step rows 2 and 3: distinct rows 0..5 carry 1, 1, 2, 2, 1, 1 pairs.
  const packed = planGroupRows([batch(0, [0, 1, 2, 3]), batch(1, [2, 3, 5, 6])]);
  const rowBytes = H * 4;

  it('keeps a group that fits in one message whole', () => {
    const slices = sliceGroupRows(packed, { rowBytes, maxBytes: 10 * rowBytes })!; // 6 rows + 8 indices; 8 reply rows
    expect(slices.map((s) => [s.start, s.end, s.pairs])).toEqual([[0, 6, 8]]);
  });

  it('cuts runs of rows whose request and reply fit, balanced, each pair exactly once', () => {
    // At most 3 reply rows per message: 8 pairs need 3 messages.
    const slices = sliceGroupRows(packed, { rowBytes, maxBytes: 3 * rowBytes })!;
    // (Rows of 8 bytes: each message's 4-byte indices count too, which is what cuts rows 4-5 off.)
    expect(slices.map((s) => [s.start, s.end, s.pairs])).toEqual([
      [0, 2, 2],
      [2, 3, 2],
      [3, 4, 2],
      [4, 6, 2],
    ]);
    for (const s of slices) expect((s.end - s.start) * rowBytes + s.pairs * 4).toBeLessThanOrEqual(3 * rowBytes);
    // Every (expert, token) pair once, pointing at the right row.
    const seen = new Map<string, number>();
    for (const s of slices) {
      for (const e of s.experts) {
        e.positions.forEach((t, j) => {
          seen.set(`${e.batch}:${t}`, (seen.get(`${e.batch}:${t}`) ?? 0) + 1);
          expect(s.start + e.rows[j]!).toBe(packed.experts[e.batch]!.rows[t]);
        });
      }
    }
    expect([...seen.values()]).toEqual(Array(8).fill(1));
  });

  it("gives up when one row's pairs alone exceed the limit", () => {
    expect(sliceGroupRows(packed, { rowBytes, maxBytes: rowBytes })).toBeUndefined();
  });
});

describe('assembleGroupReplies', () => {
  it("puts each slice's reply rows back at their batch positions", () => {
    const batches = [batch(0, [0, 1, 2, 3]), batch(1, [2, 3, 5, 6])];
    const plan = planGroupRows(batches);
    const slices = sliceGroupRows(plan, { rowBytes: H * 4, maxBytes: 3 * H * 4 })!;
    // A fake expert output: the input row itself (x = [r, r + 0.5]), so the expected result is the input.
    const replies = slices.map((s) => {
      const rows = gathered(batches, plan, s.start, s.end);
      return s.experts.map((e) => Float32Array.from([...e.rows].flatMap((r) => rows.slice(r * H, (r + 1) * H))));
    });
    const out = assembleGroupReplies(slices, replies, [4, 4], H);
    expect([...out[0]!]).toEqual([0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5]);
    expect([...out[1]!]).toEqual([2, 2.5, 3, 3.5, 5, 5.5, 6, 6.5]);
  });
});
