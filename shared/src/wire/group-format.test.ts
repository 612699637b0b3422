import { describe, expect, it } from 'vitest';
import { decodeGroupReply, decodeGroupRequest, encodeGroupReply, encodeGroupRequest } from './group-format';
import { WIRE_HEADERS, WireError } from './format';
import { expertGroupName, expertGroupsOfUnits, parseExpertGroupName, replicaUnitSubject, unitSubject } from './subjects';

const H = 4;
const headersOf = (h: Record<string, string>) => ({ get: (k: string) => h[k] });

describe('layer-group messages', () => {
  it('round-trips: each expert gets its rows gathered from the distinct rows, the reply splits back per expert', () => {
    const x = Float32Array.from({ length: 3 * H }, (_, i) => i / 8);
    const req = encodeGroupRequest({ dtype: 'f32', hidden: H, x, experts: [{ expert: 2, rows: Uint32Array.from([2, 0]) }, { expert: 0, rows: Uint32Array.from([1]) }], requestId: 'r1' });
    expect(req.headers[WIRE_HEADERS.shape]).toBe(`3,${H}`);
    expect(req.headers[WIRE_HEADERS.experts]).toBe('2:2,0:1');
    expect(req.body.byteLength).toBe(3 * H * 4 + 3 * 4);
    const got = decodeGroupRequest(headersOf(req.headers), req.body, { hidden: H, experts: [0, 1, 2] });
    expect(got.requestId).toBe('r1');
    expect(got.pairs).toBe(3);
    expect(got.experts.map((e) => [e.expert, e.rows, [...e.x]])).toEqual([
      [2, 2, [...x.subarray(2 * H, 3 * H), ...x.subarray(0, H)]],
      [0, 1, [...x.subarray(H, 2 * H)]],
    ]);
    const reply = encodeGroupReply('f16', H, got.experts.map((e) => ({ expert: e.expert, y: e.x })), 'r1');
    const ys = decodeGroupReply(headersOf(reply.headers), reply.body, { hidden: H, experts: [[2, 2], [0, 1]] });
    expect([...ys[0]!]).toEqual([...got.experts[0]!.x]); // these values are exact in f16
    expect(() => decodeGroupReply(headersOf(reply.headers), reply.body, { hidden: H, experts: [[2, 1], [0, 2]] })).toThrow(/reply carries experts "2:2,0:1", the request asked for 2:1,0:2/);
  });

  it('encodes f16/bf16 requests whose values end off a 4-byte boundary (3 rows of hidden 3)', () => {
    for (const dtype of ['f16', 'bf16'] as const) {
      const x = Float32Array.from({ length: 9 }, (_, i) => i / 8); // exact in both
      const req = encodeGroupRequest({ dtype, hidden: 3, x, experts: [{ expert: 0, rows: Uint32Array.from([2, 1]) }] });
      expect(req.body.byteLength).toBe(9 * 2 + 2 * 4);
      const got = decodeGroupRequest(headersOf(req.headers), req.body, { hidden: 3, experts: [0] });
      expect([...got.experts[0]!.x]).toEqual([...x.subarray(6, 9), ...x.subarray(3, 6)]);
    }
  });

  it('refuses experts outside the group, repeated, or a body that does not match', () => {
    const req = encodeGroupRequest({ dtype: 'f32', hidden: H, x: new Float32Array(H), experts: [{ expert: 1, rows: Uint32Array.from([0]) }] });
    const decode = (h: Record<string, string>, body = req.body) => () => decodeGroupRequest(headersOf(h), body, { hidden: H, experts: [0, 1] });
    expect(decode({ ...req.headers, [WIRE_HEADERS.experts]: '5:1' })).toThrow(/expert 5 is not in this group/);
    expect(decode({ ...req.headers, [WIRE_HEADERS.experts]: '1:1,1:0' })).toThrow(/expert 1 is listed twice/);
    expect(decode(req.headers, req.body.subarray(1))).toThrow(WireError);
    expect(() => encodeGroupRequest({ dtype: 'f32', hidden: H, x: new Float32Array(H), experts: [{ expert: 1, rows: Uint32Array.from([1]) }] })).toThrow(/names row 1 of 1/);
  });

  it('names groups as unit-like subject tokens and parses them back', () => {
    expect(expertGroupName(3, [5, 0, 1, 2, 7, 6])).toBe('layer3.experts.0-2_5-7');
    expect(parseExpertGroupName('layer3.experts.0-2_5-7')).toEqual({ layer: 3, experts: [0, 1, 2, 5, 6, 7] });
    expect(parseExpertGroupName('layer3.expert1')).toBeUndefined();
    expect(parseExpertGroupName('layer3.experts.4-2')).toBeUndefined();
    expect(expertGroupsOfUnits(['layer0.expert2', 'layer0.expert3', 'layer1.expert3', 'vision.encoder'])).toEqual(['layer0.experts.2-3', 'layer1.experts.3']);
    const model = { name: 'm', hash: 'abc123' };
    expect(unitSubject(model, 'layer0.experts.0-3')).toBe('unimoe.m.abc123.unit.layer0.experts.0-3');
    expect(replicaUnitSubject(model, 'a-1', 'layer0.experts.0-3')).toBe('unimoe.m.abc123.replica.a-1.unit.layer0.experts.0-3');
  });
});
