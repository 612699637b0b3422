/** Stand-alone entry: `node --import tsx gpu-worker/src/main.ts <store> --pool ... [--experts ...] [--encoders ...] --nats ...`. */
import { workerCommand } from './cli';

process.exitCode = await workerCommand(process.argv.slice(2));
