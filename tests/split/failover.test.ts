// reliableRequest against a real nats-server with two hand-made replicas of one unit: one that answers
// at once and one that holds what it gets (a stopped replica). Every request resolves exactly once with
// its own answer; the held requests' late replies arrive afterwards and change nothing.
import { connect, type Msg, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { reliableRequest, RequestFailed } from '@unimoe/edge/dispatch/reliable-request';
import { NatsConnectionWatch } from '@unimoe/shared/runtime/nats-status';
import { readDeadline } from '@unimoe/shared/wire/deadline';
import { WIRE_HEADERS } from '@unimoe/shared/wire/format';
import { startNatsServer, type NatsServer } from '../helpers/nats-server';

let nats: NatsServer;
let edge: NatsConnection;
let replicas: NatsConnection[];
beforeAll(async () => {
  nats = await startNatsServer();
  edge = await connect({ servers: nats.url });
  replicas = [await connect({ servers: nats.url }), await connect({ servers: nats.url })];
});
afterAll(async () => {
  for (const nc of [edge, ...(replicas ?? [])]) await nc?.close();
  await nats?.stop();
});

/** The reply to body [n]: [n * 10 + who], so a test can tell the value and which replica answered. */
const answer = (body: Uint8Array, who: number) => new Uint8Array([body[0]! * 10 + who]);

describe('reliableRequest', () => {
  it('re-sends what a stuck replica holds, resolves each request once with its own answer, ignores late replies', async () => {
    const subject = 'test.failover.unit';
    const held: Array<() => void> = [];
    let lateReplies = 0;
    const deadlines: number[] = [];
    replicas[0]!.subscribe(subject, {
      queue: subject,
      callback: (_err, msg) => {
        deadlines.push(readDeadline(msg.headers) - performance.now());
        held.push(() => {
          lateReplies++;
          msg.respond(answer(msg.data, 1));
        });
      },
    });
    // The live replica also listens on its own subject, where re-sends go (as the expert backend sends
    // them to the replica that answered last): so no re-send can land on the stuck replica again.
    const live = (_err: unknown, msg: Msg) => msg.respond(answer(msg.data, 2));
    replicas[1]!.subscribe(subject, { queue: subject, callback: live });
    replicas[1]!.subscribe(`${subject}.replica2`, { callback: live });
    await Promise.all(replicas.map((r) => r.flush()));

    const watch = new NatsConnectionWatch(edge, 'test edge', () => {});
    let hedges = 0;
    const results = await Promise.all(
      Array.from({ length: 24 }, (_, n) =>
        reliableRequest({
          nc: edge,
          watch,
          subject,
          body: new Uint8Array([n]),
          headers: { [WIRE_HEADERS.requestId]: `r${n}` },
          budgetMs: 10_000,
          hedgeAfterMs: 50,
          maxAttempts: 8,
          noResponderRetries: 2,
          noResponderHoldMs: 10_000,
          resendTo: () => ({ subject: `${subject}.replica2`, onGone: () => {} }),
          onSend: (kind) => (hedges += kind === 'hedge' ? 1 : 0),
        }),
      ),
    );
    // The stuck replica got some (the queue group picks at random) and each of those was re-sent.
    expect(held.length).toBeGreaterThan(0);
    expect(hedges).toBeGreaterThanOrEqual(held.length);
    results.forEach((r, n) => expect(r.msg.data[0]).toBe(n * 10 + 2)); // every answer from the live replica, each its own
    // Every message carried the time left before the edge gives up (at most the budget).
    for (const d of deadlines) expect(d).toBeLessThanOrEqual(10_000);
    for (const d of deadlines) expect(d).toBeGreaterThan(5_000);
    // The stuck replica wakes up and answers: nothing resolves twice, nothing changes.
    for (const release of held.splice(0)) release();
    await replicas[0]!.flush();
    await edge.flush();
    expect(lateReplies).toBeGreaterThan(0);
    results.forEach((r, n) => expect(r.msg.data[0]).toBe(n * 10 + 2));
  });

  it('fails fast, naming the reason, when nobody has ever hosted the unit', async () => {
    const watch = new NatsConnectionWatch(edge, 'test edge', () => {});
    const started = performance.now();
    const failure = reliableRequest({
      nc: edge,
      watch,
      subject: 'test.failover.nobody',
      body: new Uint8Array([1]),
      headers: {},
      budgetMs: 60_000,
      hedgeAfterMs: 50,
      maxAttempts: 8,
      noResponderRetries: 2,
      noResponderHoldMs: 0,
    });
    await expect(failure).rejects.toBeInstanceOf(RequestFailed);
    await expect(failure).rejects.toMatchObject({ reason: 'no-responders' });
    expect(performance.now() - started).toBeLessThan(60_000); // long before its budget
  });
});
