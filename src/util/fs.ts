// Files that must never be seen half-written: the proxy's saved table, agent.json.
import { open, rename, rm } from "node:fs/promises";
import path from "node:path";

/** Writes a temp file, fsyncs it, renames it over the target, then fsyncs the directory. */
export async function writeFileAtomic(file: string, data: string, mode = 0o644): Promise<void> {
  const tmp = `${file}.${process.pid}.${Date.now()}.tmp`;
  const fh = await open(tmp, "w", mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  const dir = await open(path.dirname(file), "r");
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/** The end of a file from byte `from` on (at most maxBytes): a log's news since a process started. "" when unreadable. */
export async function readTail(file: string, from: number, maxBytes = 4_096): Promise<string> {
  try {
    const fh = await open(file, "r");
    try {
      const size = (await fh.stat()).size;
      const start = Math.max(from, size - maxBytes);
      const buf = Buffer.alloc(Math.max(0, size - start));
      await fh.read(buf, 0, buf.length, start);
      return buf.toString("utf8").trim();
    } finally {
      await fh.close();
    }
  } catch {
    return "";
  }
}
