// Counts said in words: "1 instance", "2 instances", never "1 instances".

/** n and the word, in the plural unless n is 1; `plural` for words that do not just take an s. */
export function count(n: number, singular: string, plural = `${singular}s`): string {
  return `${n} ${n === 1 ? singular : plural}`;
}
