/** Chat request bodies no server may accept (malformed JSON, wrong types, hostile sizes), shared by the API fuzz tests. */
import { MODEL } from './helpers';

/** Deterministic pseudo-random numbers for the body mutations (a 32-bit LCG). */
export function lcg(seed: number) {
  return (n: number) => {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    return seed % n;
  };
}

/** `model` is the served model's name, so bodies fail for what is malformed in them, not for naming another model. */
export function malformedBodies(model = MODEL): string[] {
  const valid = { model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 };
  const deepArray = '['.repeat(50_000) + ']'.repeat(50_000);
  const deepObject = '{"type":"text","text":'.repeat(20_000) + '"x"' + '}'.repeat(20_000);
  const deepValue = '{"a":'.repeat(20_000) + '1' + '}'.repeat(20_000);
  const fixed: unknown[] = [
    '{',
    '{"model": "tiny-4e", "messages": [',
    '',
    'null',
    '[]',
    '"just a string"',
    '\u0000\u0001\u0002',
    '{"model": "tiny-4e", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e999}',
    deepArray,
    `{"model":"${model}","messages":[{"role":"user","content":${deepArray}}]}`,
    `{"model":"${model}","messages":[{"role":"user","content":[${deepObject}]}]}`,
    ...['n', 'stop', 'temperature', 'stream_options', 'model'].map((k) => `{"model":"${model}","messages":[{"role":"user","content":"hi"}],"${k}":${deepValue}}`),
    `{"model":"${model}","messages":[{"role":${deepValue},"content":"hi"}]}`,
    { ...valid, messages: 'hi' },
    { ...valid, model: 5 },
    { ...valid, messages: [{ role: 'user', content: {} }] },
    { ...valid, messages: [{ role: 'wizard', content: 'hi' }] },
    { ...valid, messages: [{ role: 'tool', content: 'hi', tool_call_id: 'x' }] },
    { ...valid, messages: [{ content: 'hi' }] },
    { ...valid, messages: [{ role: 'user', content: 'a'.repeat(3 << 20) }] },
    { ...valid, model: 'm'.repeat(1 << 20) },
    { ...valid, messages: [{ role: 'x'.repeat(1 << 20), content: 'hi' }] },
    { ...valid, messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/png;base64,' + '!'.repeat(1 << 20) } }] }] },
    { ...valid, messages: [{ role: 'user', content: [{ type: 'input_audio', input_audio: { data: 'QUJD=', format: 'wav' } }] }] },
    { ...valid, messages: [{ role: 'user', content: [{ type: 'video_url', video_url: { url: 'data:video/mp4;base64,AAAA' } }] }] },
    { ...valid, max_tokens: -1 },
    { ...valid, max_tokens: '4' },
    { ...valid, temperature: null, top_p: -0.5 },
    { ...valid, seed: 1.5 },
    { ...valid, stop: [1, 2] },
    { ...valid, stream: 1 },
    { ...valid, messages: [{ role: 'assistant', content: 'hi' }] },
    { ...valid, messages: [{ role: 'user', content: [] }, { role: 'user', content: null }] },
  ];
  const rand = lcg(7);
  const junk = [null, 0, -1, 1.5, 'x', '', true, [], {}, [[[]]], { a: { b: {} } }, 'data:image/png;base64,=', 'x'.repeat(10_000)];
  const keys = ['model', 'messages', 'max_tokens', 'temperature', 'top_p', 'seed', 'stop', 'n', 'stream', 'stream_options', 'max_completion_tokens'];
  const mutated: unknown[] = [];
  while (mutated.length < 150) {
    const body: Record<string, unknown> = structuredClone(valid);
    const edits = 1 + rand(3);
    for (let i = 0; i < edits; i++) {
      const k = keys[rand(keys.length)]!;
      if (rand(4) === 0) delete body[k];
      else body[k] = junk[rand(junk.length)];
    }
    if (rand(3) === 0) body.messages = [{ role: junk[rand(junk.length)], content: junk[rand(junk.length)] }];
    const s = JSON.stringify(body);
    const ok = (() => {
      try {
        const b = JSON.parse(s);
        return b.model === model && Array.isArray(b.messages) && b.messages.length === 1 && b.messages[0].role === 'user' && typeof b.messages[0].content === 'string';
      } catch {
        return false;
      }
    })();
    if (!ok) mutated.push(body); // keep only bodies that cannot be valid requests
  }
  return [...fixed, ...mutated].map((b) => (typeof b === 'string' ? b : JSON.stringify(b)));
}
