/**
 * Deadlines carried in each request (`Unimoe-Deadline-Ms`). The value is relative - the milliseconds
 * the sender will still wait, counted from sending - so the two machines' clocks never need to agree;
 * the receiver turns it into a local expiry the moment the message arrives (transit time is small next
 * to any deadline worth setting).
 */
import { WIRE_HEADERS, type HeaderReader } from './format';

/** Header value for a request whose sender gives up at `expiresAt` (a performance.now() time). */
export function deadlineHeader(expiresAt: number, now = performance.now()): string {
  return String(Math.max(0, Math.floor(expiresAt - now)));
}

/**
 * The local performance.now() time at which a received request's sender gives up; Infinity when the
 * message has no (valid) deadline, so old senders keep working.
 */
export function readDeadline(headers: HeaderReader | undefined, receivedAt = performance.now()): number {
  const text = headers?.get(WIRE_HEADERS.deadlineMs);
  if (!text || !/^\d{1,9}$/.test(text)) return Infinity;
  return receivedAt + Number(text);
}
