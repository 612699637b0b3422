// `unimoe engine` and `serve --engine-nats` refuse wrong flag combinations with a message naming the flag.
import { expect, it } from 'vitest';
import { cli } from '../helpers/cli';

it('names the missing or misplaced flag', async () => {
  const cases: [string[], RegExp][] = [
    [['engine', 'some-bundle'], /--nats URL is required/],
    [['engine', 'some-bundle', '--nats', 'nats://127.0.0.1:1', '--local-encoders'], /--local-encoders only applies with --pools/],
    [['engine', 'some-bundle', '--nats', 'nats://127.0.0.1:1', '--id', 'a.b'], /--id "a.b": letters, digits/],
    [['engine', '/nonexistent-bundle', '--nats', 'nats://127.0.0.1:1'], /\/nonexistent-bundle: not a bundle directory/],
    [['serve', 'some-bundle', '--engine-nats', 'nats://127.0.0.1:1', '--max-batch', '4'], /--max-batch does not apply with --engine-nats/],
    [['serve', '--engine-nats', 'nats://127.0.0.1:1'], /expected the <bundle-or-s3-uri> or --model NAME/],
    [['serve', 'some-bundle', '--model', 'x'], /--model and --engine-accept-timeout-s apply with --engine-nats only/],
  ];
  const runs = await Promise.all(cases.map(([args]) => cli(args)));
  runs.forEach((r, i) => {
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toMatch(cases[i]![1]);
  });
});
