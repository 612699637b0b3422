/**
 * `/dashboard` in headless Chromium (Debian's /usr/bin/chromium driven by playwright-core): after a text
 * and an image request, the data's routed-token totals match the token counts the API reported, and
 * the screenshot's heatmap cells differ in colour where the image load differs (and not where it is
 * equal, e.g. all-zero video).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { decode } from 'fast-png';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { DashboardData } from '@unimoe/edge/api/dashboard';
import { startServer, type RunningServer } from '@unimoe/edge/serve';
import { FIXTURES } from '../helpers/fixtures';
import { makeTempDir } from '../helpers/tmp';
import { tinyMultimodalBundle } from './harness';

const CHROMIUM = '/usr/bin/chromium';
let tmp: Awaited<ReturnType<typeof makeTempDir>>;
let server: RunningServer;
let browser: Browser;

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium (.ci/run does)`);
  tmp = await makeTempDir('dashboard');
  const bundle = await tinyMultimodalBundle(tmp.dir);
  server = await startServer({ bundle, port: 0, host: '127.0.0.1', databaseUrl: `file:${join(tmp.dir, 'usage.db')}`, api: { noAuth: true } });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
}, 240_000);
afterAll(async () => {
  await browser?.close();
  await server?.close();
  await tmp?.cleanup();
});

async function complete(content: unknown): Promise<{ prompt_tokens: number; completion_tokens: number; prompt_tokens_details?: Record<string, number> }> {
  const res = await fetch(`${server.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'tiny-mm', messages: [{ role: 'user', content }], max_tokens: 4, temperature: 0 }),
  });
  const body = (await res.json()) as { usage: { prompt_tokens: number; completion_tokens: number } };
  if (!res.ok) throw new Error(`completion failed: ${JSON.stringify(body)}`);
  return body.usage;
}

it('shows routed tokens per layer x expert by modality; cell colours follow the load', async () => {
  const png = readFileSync(join(FIXTURES, 'media', 'gray_50x70.png')).toString('base64');
  const usages = [
    await complete('Hello there'),
    await complete([{ type: 'text', text: 'What is this?' }, { type: 'image_url', image_url: { url: `data:image/png;base64,${png}` } }]),
  ];
  const data = (await fetch(`${server.url}/dashboard/data`).then((r) => r.json())) as DashboardData;
  const K = server.manifest.config.routing.topK;
  // Every position the engine ran (the last generated token is never fed back) went to K experts per layer.
  const positions = usages.reduce((s, u) => s + u.prompt_tokens + u.completion_tokens - 1, 0);
  const imageTokens = server.manifest.modalityTokens!.image!;
  for (let l = 0; l < data.layers; l++) {
    expect(data.total.all[l]!.reduce((a, b) => a + b, 0)).toBe(K * positions);
    expect(data.total.image[l]!.reduce((a, b) => a + b, 0)).toBe(K * imageTokens);
    expect(data.total.video[l]!.every((v) => v === 0)).toBe(true);
  }

  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  try {
    await page.goto(`${server.url}/dashboard`);
    await page.waitForFunction(() => (window as unknown as { dashboard: { updates: number } }).dashboard.updates > 0);
    await page.click('button[data-view="total"]');
    const colourAt = async (modality: string, cells: [number, number][]) => {
      await page.click(`button[data-modality="${modality}"]`);
      await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))); // painted
      const centers = await page.evaluate((cs) => cs.map(([l, e]) => (window as unknown as { dashboard: { cellCenter(l: number, e: number): { x: number; y: number } } }).dashboard.cellCenter(l, e)), cells);
      const shot = decode(await page.screenshot());
      return centers.map(({ x, y }) => {
        const at = (Math.round(y + 20) * shot.width + Math.round(x)) * shot.channels; // below the centred value label
        return [shot.data[at]!, shot.data[at + 1]!, shot.data[at + 2]!];
      });
    };
    const image = data.total.image[0]!;
    const hi = image.indexOf(Math.max(...image));
    const lo = image.indexOf(Math.min(...image));
    expect(image[hi]).toBeGreaterThan(image[lo]!);
    const [hot, cold] = await colourAt('image', [[0, hi], [0, lo]]);
    const distance = (a: number[], b: number[]) => Math.hypot(a[0]! - b[0]!, a[1]! - b[1]!, a[2]! - b[2]!);
    expect(distance(hot!, cold!)).toBeGreaterThan(40); // the busier cell is drawn visibly darker
    expect(hot![0]! + hot![1]! + hot![2]!).toBeLessThan(cold![0]! + cold![1]! + cold![2]!);
    const video = await colourAt('video', [[0, 0], [0, 1], [1, 2]]);
    expect(distance(video[0]!, video[1]!)).toBeLessThan(5); // equal (zero) loads, equal colours
    expect(distance(video[0]!, video[2]!)).toBeLessThan(5);
  } finally {
    await page.close();
  }
}, 240_000);
