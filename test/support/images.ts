// Test images without any registry: a root filesystem holding the host's own node binary, the shared
// libraries it links (and the dynamic loader), and the app files, imported through the Engine API
// (docker import) with its CMD, labels and HEALTHCHECK. Cached by content: an unchanged image is
// not built twice.

import { execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { chmod, mkdir, mkdtemp, readdir, rm, stat, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { DockerApi, isDockerNotFound } from "../../src/runtime/docker-api.js";

/** Where the host's node lands in every test image (in the default PATH, so "node" works too). */
export const NODE_IN_IMAGE = "/usr/local/bin/node";
/** On every test image, so a leftover one is easy to find and remove. */
export const TEST_IMAGE_LABEL = "turquoise.test";

export const FIXTURES_DIR = fileURLToPath(new URL("../../../test/fixtures/", import.meta.url));

export interface TestImageOptions {
  api?: DockerApi;
  /** What to put in the image besides node: path in the image → file or directory on the host. */
  files: Record<string, string>;
  cmd: string[];
  env?: Record<string, string>;
  labels?: Record<string, string>;
  /** The arguments of a HEALTHCHECK line, e.g. `--interval=1s CMD ["node", "/app/probe.mjs"]`. */
  healthcheck?: string;
}

/**
 * Makes sure the image `<name>:<content hash>` exists and returns that reference. Callers that may
 * run at the same time should use different names, so that one's cleanup cannot remove the other's image.
 */
export async function ensureTestImage(name: string, opts: TestImageOptions): Promise<string> {
  const api = opts.api ?? new DockerApi();
  const files: Record<string, string> = { [NODE_IN_IMAGE]: process.execPath, ...nodeLibraries(), ...opts.files };
  const changes = [
    `CMD ${JSON.stringify(opts.cmd)}`,
    ...Object.entries(opts.env ?? {}).map(([k, v]) => `ENV ${k}=${JSON.stringify(v)}`),
    ...Object.entries({ ...opts.labels, [TEST_IMAGE_LABEL]: "true" }).map(([k, v]) => `LABEL ${JSON.stringify(k)}=${JSON.stringify(v)}`),
    ...(opts.healthcheck ? [`HEALTHCHECK ${opts.healthcheck}`] : []),
  ];
  const tag = (await contentHash(files, changes)).slice(0, 16);
  const ref = `${name}:${tag}`;
  try {
    await api.inspectImage(ref);
    return ref;
  } catch (e) {
    if (!isDockerNotFound(e)) throw e;
  }

  const rootfs = await mkdtemp(join(tmpdir(), "turquoise-image-"));
  try {
    await chmod(rootfs, 0o755);
    await mkdir(join(rootfs, "tmp"));
    await chmod(join(rootfs, "tmp"), 0o1777);
    // Symlinks to the host's files; tar --dereference stores what they point to.
    for (const [inImage, onHost] of Object.entries(files)) {
      await mkdir(join(rootfs, dirname(inImage)), { recursive: true });
      await symlink(onHost, join(rootfs, inImage));
    }
    const tar = spawn("tar", ["--create", "--dereference", "--owner=0", "--group=0", "--numeric-owner", "-C", rootfs, "."], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let tarErrors = "";
    tar.stderr.on("data", (c: Buffer) => (tarErrors += c.toString()));
    const tarExit = new Promise<number | null>((resolve) => tar.on("close", resolve));
    await api.importImage(tar.stdout, { repo: name, tag, changes });
    const code = await tarExit;
    if (code !== 0) throw new Error(`tar of the test image's root filesystem failed (${code}): ${tarErrors}`);
  } finally {
    await rm(rootfs, { recursive: true, force: true });
  }
  return ref;
}

/** Removes a test image; one that is already gone is fine. */
export async function removeTestImage(ref: string, api = new DockerApi()): Promise<void> {
  try {
    await api.removeImage(ref, { force: true });
  } catch (e) {
    if (!isDockerNotFound(e)) throw e;
  }
}

export const ECHO_IMAGE_CMD = ["node", "--import", "/app/listen-on-host.mjs", "/app/echo-app.mjs"];

/** The echo app (test/fixtures/echo-app.mjs), set up to listen on $HOST inside a container. */
export function echoImageOptions(extra: Partial<TestImageOptions> = {}): TestImageOptions {
  return {
    files: {
      "/app/echo-app.mjs": join(FIXTURES_DIR, "echo-app.mjs"),
      "/app/listen-on-host.mjs": join(FIXTURES_DIR, "listen-on-host.mjs"),
    },
    cmd: ECHO_IMAGE_CMD,
    ...extra,
  };
}

/** The shared libraries node links, and the dynamic loader, at the paths ldd names. */
function nodeLibraries(): Record<string, string> {
  const libs: Record<string, string> = {};
  for (const line of execFileSync("ldd", [process.execPath], { encoding: "utf8" }).split("\n")) {
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
    const path = /=>\s*(\/\S+)/.exec(line)?.[1] ?? /^\s*(\/\S+)/.exec(line)?.[1];
    if (path) libs[path] = path;
  }
  return libs;
}

async function contentHash(files: Record<string, string>, changes: string[]): Promise<string> {
  const hash = createHash("sha256");
  hash.update(JSON.stringify(changes));
  for (const [inImage, onHost] of Object.entries(files).sort(([a], [b]) => a.localeCompare(b))) {
    hash.update(`\0${inImage}\0`);
    await hashPath(hash, onHost);
  }
  return hash.digest("hex");
}

async function hashPath(hash: ReturnType<typeof createHash>, path: string): Promise<void> {
  const st = await stat(path);
  if (st.isDirectory()) {
    for (const entry of (await readdir(path)).sort()) {
      hash.update(`\0${entry}\0`);
      await hashPath(hash, join(path, entry));
    }
    return;
  }
  hash.update(String(st.mode));
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
}
