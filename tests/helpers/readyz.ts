/**
 * /readyz reuses one check for `readyCacheMs` (1 s by default, edge/src/api/readiness.ts), so right after a
 * pool or engine comes or goes it may still give the answer from before. Polls until `status` comes back
 * or `withinMs` passes, and returns the last response (whose status the caller asserts).
 */
export async function readyzSettled(baseUrl: string, status: number, withinMs = 3000): Promise<Response> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const res = await fetch(`${baseUrl}/readyz`);
    if (res.status === status || Date.now() > deadline) return res;
    await res.body?.cancel();
    await new Promise((r) => setTimeout(r, 100));
  }
}
