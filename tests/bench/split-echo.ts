/**
 * The bare round trip the split bench compares dispatch against: a process that answers every request
 * on one subject with the request's own bytes and headers, doing nothing else.
 * Usage: node --import tsx tests/bench/split-echo.ts <nats-url> <subject>
 */
import { connect } from 'nats';

const [url, subject] = process.argv.slice(2);
if (!url || !subject) {
  console.error('usage: split-echo.ts <nats-url> <subject>');
  process.exit(2);
}
const nc = await connect({ servers: url, name: 'unimoe-bench-echo' });
nc.subscribe(subject, { callback: (err, msg) => (err ? console.error(err.message) : msg.respond(msg.data, { headers: msg.headers })) });
await nc.flush();
console.log(`echo ready on ${subject}`);
process.once('SIGTERM', () => void nc.drain().then(() => process.exit(0)));
