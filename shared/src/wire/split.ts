/**
 * Splitting a [T, H] batch into several messages when it would exceed the server's max payload.
 * Expert FFNs work row by row, so row ranges are independent requests and their replies concatenate.
 */
import { WIRE_DTYPE_BYTES, type WireDType } from './format';

/** Room left for headers: NATS counts them against max_payload, and ours are well under this. */
export const HEADER_ALLOWANCE_BYTES = 1024;

/** The most token rows one message may carry. */
export function maxRowsPerMessage(maxPayload: number, hidden: number, dtype: WireDType): number {
  const rowBytes = hidden * WIRE_DTYPE_BYTES[dtype];
  const rows = Math.floor((maxPayload - HEADER_ALLOWANCE_BYTES) / rowBytes);
  if (rows < 1) {
    throw new Error(`one row of hidden size ${hidden} (${rowBytes} bytes as ${dtype}) does not fit the server's max payload of ${maxPayload} bytes`);
  }
  return rows;
}

/** [start, end) row ranges covering `rows` rows, each at most `maxRows` long. */
export function rowRanges(rows: number, maxRows: number): Array<[number, number]> {
  const ranges: Array<[number, number]> = [];
  for (let start = 0; start < rows; start += maxRows) ranges.push([start, Math.min(rows, start + maxRows)]);
  return ranges;
}
