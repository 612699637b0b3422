/** Wire format: encoding against numpy/torch bit patterns, and every malformed message refused by name. */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  decodeTensorMessage,
  encodeErrorReply,
  encodeTensorMessage,
  readErrorReply,
  WireError,
  type HeaderReader,
  type WireDType,
} from '@unimoe/shared/wire/format';
import { maxRowsPerMessage, rowRanges } from '@unimoe/shared/wire/split';
import { statsSubject, unitSubject } from '@unimoe/shared/wire/subjects';

const ref = JSON.parse(readFileSync(new URL('./fixtures/wire_reference.json', import.meta.url), 'utf8')) as {
  values: number[];
  f16: number[];
  bf16: number[];
  f16_decoded: Array<number | string>;
  bf16_decoded: Array<number | string>;
};
const asNumber = (v: number | string) => (v === 'inf' ? Infinity : v === '-inf' ? -Infinity : (v as number));

function reader(h: Record<string, string>): HeaderReader {
  return { get: (name) => h[name] };
}

function refused(headers: Record<string, string> | undefined, body: Uint8Array, hidden: number): WireError {
  try {
    decodeTensorMessage(headers ? reader(headers) : undefined, body, { hidden });
  } catch (err) {
    expect(err).toBeInstanceOf(WireError);
    return err as WireError;
  }
  throw new Error('message was accepted');
}

describe('wire encoding', () => {
  const values = Float32Array.from(ref.values);
  const rows = 2;
  const hidden = values.length / rows; // 38 reference values as [2, 19]

  it('f32 body is the float32 little-endian bytes', () => {
    const m = encodeTensorMessage({ dtype: 'f32', rows, hidden, data: values, requestId: 'r-1' });
    expect(m.headers).toEqual({ 'Unimoe-Wire': '1', 'Unimoe-Dtype': 'f32', 'Unimoe-Shape': `${rows},${hidden}`, 'Unimoe-Request-Id': 'r-1' });
    const view = new DataView(m.body.buffer, m.body.byteOffset, m.body.byteLength);
    expect(m.body.byteLength).toBe(values.length * 4);
    for (let i = 0; i < values.length; i++) expect(Object.is(view.getFloat32(i * 4, true), values[i])).toBe(true);
    const back = decodeTensorMessage(reader(m.headers), m.body, { hidden });
    expect(back.rows).toBe(rows);
    expect(back.requestId).toBe('r-1');
    expect(Array.from(back.data)).toEqual(Array.from(values));
  });

  it.each([
    ['f16', ref.f16, ref.f16_decoded],
    ['bf16', ref.bf16, ref.bf16_decoded],
  ] as const)('%s body matches the reference bit patterns and decodes to their values', (dtype, bits, decoded) => {
    const m = encodeTensorMessage({ dtype: dtype as WireDType, rows, hidden, data: values });
    const view = new DataView(m.body.buffer, m.body.byteOffset, m.body.byteLength);
    expect(Array.from({ length: values.length }, (_, i) => view.getUint16(i * 2, true))).toEqual(bits);
    const back = decodeTensorMessage(reader(m.headers), m.body, { hidden });
    expect(Array.from(back.data)).toEqual(decoded.map(asNumber));
  });

  it('decodes a body that sits at an unaligned offset of a larger buffer (as NATS hands it over)', () => {
    const m = encodeTensorMessage({ dtype: 'f32', rows: 1, hidden: 3, data: Float32Array.of(1.5, -2, 3.25) });
    const big = new Uint8Array(m.body.byteLength + 7);
    big.set(m.body, 3);
    expect(Array.from(decodeTensorMessage(reader(m.headers), big.subarray(3, 3 + m.body.byteLength), { hidden: 3 }).data)).toEqual([1.5, -2, 3.25]);
  });

  it('an empty [0, H] tensor is valid (the readiness ping)', () => {
    const m = encodeTensorMessage({ dtype: 'f32', rows: 0, hidden: 32, data: new Float32Array(0) });
    expect(decodeTensorMessage(reader(m.headers), m.body, { hidden: 32 }).rows).toBe(0);
  });

  it('error replies carry code and a single-line message', () => {
    const m = encodeErrorReply('bad-shape', 'line one\r\nline two', 'id\n7');
    expect(m.headers['Unimoe-Error']).toBe('bad-shape line one??line two');
    expect(m.headers['Unimoe-Request-Id']).toBe('id?7');
    expect(readErrorReply(reader(m.headers))).toEqual({ code: 'bad-shape', message: 'line one??line two' });
    expect(readErrorReply(reader({ 'Unimoe-Wire': '1' }))).toBeUndefined();
  });
});

describe('malformed messages', () => {
  const hidden = 4;
  const good = encodeTensorMessage({ dtype: 'f32', rows: 2, hidden, data: new Float32Array(8).fill(1) });
  const withHeader = (name: string, value: string | undefined) => {
    const h = { ...good.headers };
    if (value === undefined) delete h[name];
    else h[name] = value;
    return h;
  };

  it.each([
    ['no headers at all', undefined, good.body, 'bad-version', /missing Unimoe-Wire/],
    ['missing version', withHeader('Unimoe-Wire', undefined), good.body, 'bad-version', /missing Unimoe-Wire/],
    ['wrong version', withHeader('Unimoe-Wire', '2'), good.body, 'bad-version', /unsupported Unimoe-Wire "2"/],
    ['unknown dtype', withHeader('Unimoe-Dtype', 'f64'), good.body, 'bad-dtype', /unknown Unimoe-Dtype "f64"/],
    ['missing dtype', withHeader('Unimoe-Dtype', undefined), good.body, 'bad-dtype', /missing Unimoe-Dtype/],
    ['garbage shape', withHeader('Unimoe-Shape', 'two by four'), good.body, 'bad-shape', /not "T,H"/],
    ['negative shape', withHeader('Unimoe-Shape', '-2,4'), good.body, 'bad-shape', /not "T,H"/],
    ['three dims', withHeader('Unimoe-Shape', '1,2,4'), good.body, 'bad-shape', /not "T,H"/],
    ['float shape', withHeader('Unimoe-Shape', '2.0,4'), good.body, 'bad-shape', /not "T,H"/],
    ['shape vs body', withHeader('Unimoe-Shape', '3,4'), good.body, 'bad-shape', /needs 48 body bytes, got 32/],
    ['huge declared shape', withHeader('Unimoe-Shape', '999999999999999,4'), good.body, 'bad-shape', /needs \d+ body bytes, got 32/],
    ['overlong number', withHeader('Unimoe-Shape', `${'9'.repeat(400)},4`), good.body, 'bad-shape', /not "T,H"/],
    ['wrong hidden size', withHeader('Unimoe-Shape', '1,8'), good.body, 'bad-hidden', /hidden size 8 does not match the unit's hidden size 4/],
    ['f16 header on an f32 body', withHeader('Unimoe-Dtype', 'f16'), good.body, 'bad-shape', /needs 16 body bytes, got 32/],
    ['truncated body', good.headers, good.body.subarray(0, 31), 'bad-shape', /got 31/],
    ['garbage header values', { 'Unimoe-Wire': '\u0000\u00ff', 'X-Junk': '\u0001' }, good.body, 'bad-version', /unsupported/],
  ] as const)('%s', (_label, headers, body, code, message) => {
    const err = refused(headers as Record<string, string> | undefined, body, hidden);
    expect(err.code).toBe(code);
    expect(err.message).toMatch(message);
  });

  it('a reply with the wrong number of rows is refused', () => {
    expect(() => decodeTensorMessage(reader(good.headers), good.body, { hidden, rows: 3 })).toThrow(/2 rows where 3 were expected/);
  });
});

describe('subjects and splitting', () => {
  it('builds subjects with the model name as one safe token and the bundle hash', () => {
    const tiny = { name: 'tiny-4e', hash: '0123456789ab' };
    expect(unitSubject(tiny, 'layer1.expert3')).toBe('unimoe.tiny-4e.0123456789ab.unit.layer1.expert3');
    expect(unitSubject({ name: 'my model.v2*', hash: 'ff' }, 'head')).toBe('unimoe.my_model_v2_.ff.unit.head');
    expect(statsSubject(tiny, 'pool a')).toBe('unimoe.tiny-4e.0123456789ab.stats.pool_a');
    expect(() => unitSubject(tiny, 'layer1..expert3')).toThrow(/cannot be a NATS subject/);
    expect(() => unitSubject({ name: 'm', hash: 'a.b' }, 'head')).toThrow(/must be lowercase hex/);
  });

  it('fits as many rows as the payload allows after the header allowance', () => {
    // (65536 - 1024) / (32 * 4) = 504 rows of f32, 1008 of f16
    expect(maxRowsPerMessage(65536, 32, 'f32')).toBe(504);
    expect(maxRowsPerMessage(65536, 32, 'f16')).toBe(1008);
    expect(() => maxRowsPerMessage(2048, 4096, 'f32')).toThrow(/does not fit the server's max payload of 2048/);
    expect(rowRanges(10, 4)).toEqual([[0, 4], [4, 8], [8, 10]]);
    expect(rowRanges(4, 4)).toEqual([[0, 4]]);
  });
});
