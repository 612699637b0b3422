/** Stand-alone entry: `node --import tsx gpu-worker/src/main.ts <store> --pool ... [--experts ...] [--encoders ...] --nats ...`. */
import { workerCommand } from './cli';

process.exitCode = await workerCommand(process.argv.slice(2));
// The worker has stopped (drained or given up within its bound): nothing left may keep the process alive.
setTimeout(() => process.exit(), 1000).unref();
