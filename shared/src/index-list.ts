/** Parses index lists like `0-3`, `0,2,5` or `0-1,4` into sorted unique numbers. */
export function parseIndexList(text: string, what: string): number[] {
  const out = new Set<number>();
  for (const part of text.split(',')) {
    const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(part);
    if (!m) throw new Error(`${what}: ${JSON.stringify(text)} is not a list like 0-3 or 0,2,5`);
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (hi < lo) throw new Error(`${what}: range ${part.trim()} runs backwards`);
    if (hi - lo > 100_000) throw new Error(`${what}: range ${part.trim()} is implausibly large`);
    for (let i = lo; i <= hi; i++) out.add(i);
  }
  return [...out].sort((a, b) => a - b);
}

/** The inverse of parseIndexList: [0,1,2,5] -> `0-2,5` (`separator` between the runs). */
export function formatIndexList(indices: readonly number[], separator = ','): string {
  const sorted = [...new Set(indices)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    parts.push(j === i ? String(sorted[i]) : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(separator);
}
