/** A streaming chat completion client for the benchmarks: time to first token, inter-token gaps, tokens. */

export interface StreamStats {
  ttftMs: number;
  gapsMs: number[];
  tokens: number;
}

/** One streaming chat completion; timings from the bytes as they arrive. */
export async function streamChat(url: string, model: string, content: string, maxTokens: number): Promise<StreamStats> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages: [{ role: 'user', content }], max_tokens: maxTokens, temperature: 0, stream: true, stream_options: { include_usage: true } }),
  });
  if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  let ttftMs = NaN;
  let last = 0;
  const gapsMs: number[] = [];
  let tokens = 0;
  let buffer = '';
  const decoder = new TextDecoder();
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.replace(/^data: /, '');
      if (data === '[DONE]') continue;
      const parsed = JSON.parse(data);
      if (parsed.usage) tokens = parsed.usage.completion_tokens;
      if (parsed.choices?.[0]?.delta?.content !== undefined && parsed.choices[0].delta.content !== '') {
        const now = performance.now();
        if (Number.isNaN(ttftMs)) ttftMs = now - t0;
        else gapsMs.push(now - last);
        last = now;
      }
    }
  }
  return { ttftMs, gapsMs, tokens };
}
