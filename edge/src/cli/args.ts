/** Small helpers shared by the CLI commands: parsing flags and id lists, reporting usage errors. */
import { parseArgs, type ParseArgsConfig } from 'node:util';

/** A problem with how the command was called or with its inputs: printed without a stack trace. */
export class CliError extends Error {
  override name = 'CliError';
}

export function parseCommand<T extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: T, usage: string) {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(`usage: ${usage}`);
    process.exit(0);
  }
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new CliError(`${(err as Error).message}\nusage: ${usage}`);
  }
}

export function parseIds(text: string): number[] {
  const ids = text.split(',').map((s) => s.trim());
  if (ids.some((s) => !/^\d+$/.test(s))) throw new CliError(`--ids: "${text}" is not a comma-separated list of token ids`);
  return ids.map(Number);
}

export function parseNumber(value: string | undefined, flag: string, fallback: number, opts: { min?: number; max?: number; integer?: boolean } = {}): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || (opts.integer && !Number.isInteger(n))) throw new CliError(`${flag}: "${value}" is not a${opts.integer ? 'n integer' : ' number'}`);
  if (opts.min !== undefined && n < opts.min) throw new CliError(`${flag}: ${n} is below ${opts.min}`);
  if (opts.max !== undefined && n > opts.max) throw new CliError(`${flag}: ${n} is above ${opts.max}`);
  return n;
}
