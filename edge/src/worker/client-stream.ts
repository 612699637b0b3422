/**
 * Streams a response to the client through workerd's own byte stream, so the app hears when the client has
 * gone. Local workerd (wrangler dev, 1.20260426) does not always say so itself: for about half of the clients
 * that close a token stream, neither `request.signal` aborts nor the response's JavaScript stream is cancelled;
 * workerd just stops reading the body, and the generation would run to `max_tokens` and be billed in full.
 * A write into an IdentityTransformStream, which workerd pumps to the socket itself, does fail then ("Network
 * connection lost"), and pipeTo turns that failure into a cancel of the app's body: Hono's SSE stream aborts,
 * and the API cancels the generation on the engine as for an aborted signal (docs/workers.md).
 */

/** workerd's byte-only identity stream (Workers runtime API; not in the DOM or Node typings). */
declare const IdentityTransformStream: new () => TransformStream<Uint8Array, Uint8Array>;

/** A streaming (SSE) response whose body is cancelled when writing it to the client fails; others as they are. */
export function cancelOnClientGone(res: Response): Response {
  if (!res.body || !res.headers.get('content-type')?.startsWith('text/event-stream')) return res;
  const toClient = new IdentityTransformStream();
  // Rejects when the client went away (after cancelling res.body) or the app's stream failed: both are handled there.
  res.body.pipeTo(toClient.writable).catch(() => {});
  return new Response(toClient.readable, res);
}
