/**
 * One unit request that survives dead, stopped and overloaded replicas and NATS restarts, within one
 * overall budget:
 * - hedging: a request still unanswered after `hedgeAfterMs` (from the unit's observed latency) is sent
 *   again - to `resendTo` (a replica known to be alive) when given - and again after twice that, and so
 *   on; the first reply wins and the others are ignored (units are pure functions, so any reply is the
 *   answer and none is ever used twice);
 * - `overloaded`, `expired` and `internal` replies and "no responders" are retried after a backoff
 *   that doubles (25 ms to 500 ms), with jitter, so that retries thin out instead of piling onto a busy
 *   pool;
 * - while the connection is down nothing is sent (it would wait in the client's buffer); the request
 *   waits for the reconnect, then goes out again;
 * - each message carries the time left (`Unimoe-Deadline-Ms`), so a worker drops work nobody waits for.
 * When the budget runs out the request fails, saying what went wrong last.
 */
import { ErrorCode, headers as natsHeaders, type Msg, type NatsConnection, type NatsError } from 'nats';
import type { NatsConnectionWatch } from '@unimoe/shared/runtime/nats-status';
import { deadlineHeader } from '@unimoe/shared/wire/deadline';
import { readErrorReply, WIRE_HEADERS } from '@unimoe/shared/wire/format';

export type RequestFailure = 'timeout' | 'no-responders' | 'disconnected' | 'overloaded' | 'error-reply' | 'nats';

export class RequestFailed extends Error {
  constructor(
    readonly reason: RequestFailure,
    message: string,
  ) {
    super(message);
    this.name = 'RequestFailed';
  }
}

export interface ReliableRequest {
  nc: NatsConnection;
  watch: NatsConnectionWatch;
  subject: string;
  body: Uint8Array;
  headers: Record<string, string>;
  /** The whole request, every attempt and wait included. */
  budgetMs: number;
  /** First re-send after this long without a reply; each further one waits twice as long. */
  hedgeAfterMs: number;
  /**
   * Most messages sent for this request that a replica may have computed (bounds the extra load a fault
   * can cause); messages nobody took or that were refused unrun (no responders, overloaded, expired)
   * do not count.
   */
  maxAttempts: number;
  /**
   * "No responders" this many times in a row (outside a reconnect) means nobody hosts the unit - but not
   * before `noResponderHoldMs` (0 fails fast): a unit that has answered before is more likely restarting
   * (a whole pool restarting, workers resubscribing), so the caller holds its request that long.
   */
  noResponderRetries: number;
  noResponderHoldMs: number;
  /**
   * Where hedges and retries go instead of `subject` (e.g. one live replica's own subject), with what to
   * do when nobody listens there any more; undefined: `subject` again.
   */
  resendTo?: () => { subject: string; onGone: () => void } | undefined;
  onSend?: (kind: 'first' | 'hedge' | 'retry') => void;
  onFailure?: (kind: 'no-responders' | 'timeout') => void;
}

export interface ReliableReply {
  msg: Msg;
  /** performance.now() when the answered message was sent (its own round trip, not the whole wait). */
  sentAt: number;
  attempts: number;
}

const RETRY_BASE_MS = 25;
const RETRY_MAX_MS = 500;

export function reliableRequest(r: ReliableRequest): Promise<ReliableReply> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const deadline = started + r.budgetMs;
    let settled = false;
    let attempts = 0;
    /** Sends known not to have been computed anywhere. */
    let unrun = 0;
    let pending = 0;
    let hedgeAfter = r.hedgeAfterMs;
    let retryDelay = RETRY_BASE_MS;
    let noResponders = 0;
    let waitingForConnection = false;
    let last: { reason: RequestFailure; detail: string } = { reason: 'timeout', detail: 'no reply' };
    let timer: ReturnType<typeof setTimeout> | undefined;

    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(budgetTimer);
      fn();
    };
    const fail = () =>
      settle(() => reject(new RequestFailed(last.reason, `${last.detail} (${attempts} messages in ${Math.round(performance.now() - started)} ms)`)));
    const budgetTimer = setTimeout(() => {
      if (last.reason === 'timeout') r.onFailure?.('timeout');
      fail();
    }, r.budgetMs);

    /** The next message after `ms` (the hedge timer or a retry's backoff; one of them at a time). */
    const schedule = (ms: number, kind: 'hedge' | 'retry') => {
      clearTimeout(timer);
      if (deadline - performance.now() > ms) timer = setTimeout(() => send(kind), ms);
    };

    const retryLater = () => {
      if (pending > 0) return; // another attempt is still out; its hedge timer keeps running
      schedule(retryDelay * (0.5 + Math.random()), 'retry');
      retryDelay = Math.min(RETRY_MAX_MS, retryDelay * 2);
    };

    const send = (kind: 'first' | 'hedge' | 'retry') => {
      if (settled) return;
      const remaining = deadline - performance.now();
      if (remaining < 1) return;
      if (r.watch.closed) {
        last = { reason: 'nats', detail: 'the NATS connection is closed' };
        return fail();
      }
      if (!r.watch.connected) {
        last = { reason: 'disconnected', detail: 'the NATS connection is down and did not come back in time' };
        if (!waitingForConnection) {
          waitingForConnection = true;
          void r.watch.whenConnected().then(() => {
            waitingForConnection = false;
            send('retry');
          });
        }
        return;
      }
      if (attempts - unrun >= r.maxAttempts) {
        if (pending === 0) fail(); // e.g. every replica failed it (internal): no point waiting out the budget
        return; // else the last ones may still answer, until the budget
      }
      attempts++;
      pending++;
      r.onSend?.(kind);
      const direct = kind === 'first' ? undefined : r.resendTo?.();
      const h = natsHeaders();
      for (const [k, v] of Object.entries(r.headers)) h.set(k, v);
      const sentAt = performance.now();
      h.set(WIRE_HEADERS.deadlineMs, deadlineHeader(deadline, sentAt));
      let request: Promise<Msg>;
      try {
        request = r.nc.request(direct?.subject ?? r.subject, r.body, { timeout: Math.ceil(remaining), headers: h });
      } catch (err) {
        pending--;
        last = { reason: 'nats', detail: `NATS request failed: ${(err as Error).message}` };
        return fail();
      }
      request.then(
        (msg) => {
          pending--;
          if (settled) return; // a late reply to a superseded attempt
          const error = readErrorReply(msg.headers);
          if (error && (error.code === 'overloaded' || error.code === 'expired' || error.code === 'internal')) {
            // Dropped or failed on that replica; another one (or this one, later) may do it.
            if (error.code !== 'internal') unrun++;
            last = { reason: error.code === 'overloaded' ? 'overloaded' : 'error-reply', detail: `worker replied ${error.code}: ${error.message}` };
            return retryLater();
          }
          settle(() => resolve({ msg, sentAt, attempts }));
        },
        (err: NatsError) => {
          pending--;
          if (settled) return;
          if (err.code === ErrorCode.NoResponders && direct) {
            // That replica is gone; the next re-send picks another one (or the queue group).
            direct.onGone();
            unrun++;
            if (pending === 0) schedule(0, 'retry');
            return;
          }
          if (err.code === ErrorCode.NoResponders) {
            noResponders++;
            unrun++;
            last = { reason: 'no-responders', detail: 'nobody answers (is a pool serving it running?)' };
            // Just after a NATS restart the workers may not have resubscribed yet: keep trying then.
            const held = performance.now() - started < r.noResponderHoldMs;
            if (noResponders > r.noResponderRetries && !held && !r.watch.settling && pending === 0) {
              r.onFailure?.('no-responders');
              return fail();
            }
            return retryLater();
          }
          if (err.code === ErrorCode.Timeout) return; // this attempt had the whole remaining budget
          // Connection lost with the request in flight, or closed: go round again (waits for a reconnect).
          last = { reason: 'nats', detail: `NATS request failed: ${err.message}` };
          if (pending === 0) schedule(0, 'retry');
        },
      );
      schedule(hedgeAfter, 'hedge');
      hedgeAfter *= 2;
    };

    send('first');
  });
}
