// Docker images without any registry: a root filesystem holding the host's own node binary, the
// shared libraries it links (and the dynamic loader), and the app's files, imported through the
// Engine API (docker import) with its CMD, labels and HEALTHCHECK. Cached by content: an unchanged
// image is not built twice. ensureBooksImages() builds one image per books-service release, for the
// demo, the tests and the benchmarks with `runtime: docker`.

import { execFileSync, spawn } from "node:child_process";
import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, stat, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, relative, sep } from "node:path";
import { DockerApi, isDockerNotFound, type ImageInspect } from "../runtime/docker-api.js";
import { LABELS } from "../runtime/docker.js";
import { BOOKS_DIR, BOOKS_FILE_IN_CONTAINER, REPO_ROOT } from "./workspace.js";

/** Where the host's node lands in every image (in the default PATH, so "node" works too). */
export const NODE_IN_IMAGE = "/usr/local/bin/node";
/** On images built with an explicit tag: the content hash they were built from, so a changed app is rebuilt. */
export const CONTENT_LABEL = "turquoise.content";
/** The repository of the books-service images: turquoise-books:v1, turquoise-books:v2, ... */
export const BOOKS_IMAGE_REPO = "turquoise-books";
/** On every books-service image, so they are easy to find (and remove). */
export const BOOKS_IMAGE_LABEL = "turquoise.example";
/** Where books-service lives inside its images. */
export const BOOKS_APP_DIR = "/app";

export interface ImageOptions {
  api?: DockerApi;
  /** What to put in the image besides node: path in the image → file or directory on the host. */
  files: Record<string, string>;
  cmd: string[];
  env?: Record<string, string>;
  labels?: Record<string, string>;
  /** The arguments of a HEALTHCHECK line, e.g. `--interval=1s CMD ["node", "/app/probe.mjs"]`. */
  healthcheck?: string;
  workdir?: string;
  /** Put the host's node and the libraries it links in the image (default true). */
  node?: boolean;
  /**
   * The tag to build. Without one the tag is the content hash; with one, the image carries the hash
   * in its label turquoise.content and is rebuilt when the content changes.
   */
  tag?: string;
}

/**
 * Makes sure the image `<repo>:<tag or content hash>` exists and returns that reference. Callers that
 * may run at the same time should use different repositories when they remove their images, so that
 * one's cleanup cannot remove the other's image.
 */
export async function ensureImage(repo: string, opts: ImageOptions): Promise<string> {
  const api = opts.api ?? new DockerApi();
  const files: Record<string, string> = { ...(opts.node === false ? {} : hostBinary(NODE_IN_IMAGE, process.execPath)), ...opts.files };
  const changes = [
    `CMD ${JSON.stringify(opts.cmd)}`,
    ...(opts.workdir ? [`WORKDIR ${opts.workdir}`] : []),
    ...Object.entries(opts.env ?? {}).map(([k, v]) => `ENV ${k}=${JSON.stringify(v)}`),
    ...Object.entries(opts.labels ?? {}).map(([k, v]) => `LABEL ${JSON.stringify(k)}=${JSON.stringify(v)}`),
    ...(opts.healthcheck ? [`HEALTHCHECK ${opts.healthcheck}`] : []),
  ];
  const hash = await contentHash(files, changes);
  const tag = opts.tag ?? hash.slice(0, 16);
  const ref = `${repo}:${tag}`;
  const existing = await inspectIfPresent(api, ref);
  if (existing && (opts.tag === undefined || existing.Config?.Labels?.[CONTENT_LABEL] === hash)) return ref;

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
    const withHash = opts.tag === undefined ? changes : [...changes, `LABEL ${JSON.stringify(CONTENT_LABEL)}=${JSON.stringify(hash)}`];
    await api.importImage(tar.stdout, { repo, tag, changes: withHash });
    const code = await tarExit;
    if (code !== 0) throw new Error(`tar of the image's root filesystem failed (${code}): ${tarErrors}`);
  } finally {
    await rm(rootfs, { recursive: true, force: true });
  }
  // The tag moved to the new image; the old one goes unless a container still runs it (409), which is fine.
  if (existing) await api.removeImage(existing.Id).catch(() => undefined);
  return ref;
}

/** Removes an image; one that is already gone is fine. */
export async function removeImage(ref: string, api = new DockerApi()): Promise<void> {
  try {
    await api.removeImage(ref, { force: true });
  } catch (e) {
    if (!isDockerNotFound(e)) throw e;
  }
}

/** A host binary at a path in the image, with the shared libraries it links (and the dynamic loader) at the paths ldd names. */
export function hostBinary(inImage: string, onHost: string): Record<string, string> {
  const files: Record<string, string> = { [inImage]: onHost };
  for (const line of execFileSync("ldd", [onHost], { encoding: "utf8" }).split("\n")) {
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
    const path = /=>\s*(\/\S+)/.exec(line)?.[1] ?? /^\s*(\/\S+)/.exec(line)?.[1];
    if (path) files[path] = path;
  }
  return files;
}

export interface BooksImagesOptions {
  /** The repository (default turquoise-books): images are <prefix>:<release>. */
  prefix?: string;
  api?: DockerApi;
}

/**
 * One image per books-service release (examples/books-service/releases/*), tagged <prefix>:<release>:
 * node, lib/, the release's directory, and the node_modules that pg needs (for DATABASE_URL=postgres:).
 * Each carries the label turquoise.schema from its release's turquoise.json. Returns release → image.
 */
export async function ensureBooksImages(opts: BooksImagesOptions = {}): Promise<Record<string, string>> {
  const repo = opts.prefix ?? BOOKS_IMAGE_REPO;
  const api = opts.api ?? new DockerApi();
  const releasesDir = join(BOOKS_DIR, "releases");
  const releases = (await readdir(releasesDir, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name).sort();
  const shared: Record<string, string> = { [`${BOOKS_APP_DIR}/lib`]: join(BOOKS_DIR, "lib"), ...(await packageFiles("pg", `${BOOKS_APP_DIR}/node_modules`)) };
  const images: Record<string, string> = {};
  for (const release of releases) {
    const dir = join(releasesDir, release);
    const schema = await declaredSchema(join(dir, "turquoise.json"));
    images[release] = await ensureImage(repo, {
      api,
      tag: release,
      files: { ...shared, [`${BOOKS_APP_DIR}/releases/${release}`]: dir },
      cmd: ["node", `${BOOKS_APP_DIR}/releases/${release}/server.mjs`],
      workdir: BOOKS_APP_DIR,
      env: { BOOKS_FILE: BOOKS_FILE_IN_CONTAINER },
      labels: { [BOOKS_IMAGE_LABEL]: "books-service", ...(schema ? { [LABELS.schema]: schema } : {}) },
    });
  }
  return images;
}

/** "1..3" from {"schema": {"min": 1, "max": 3}}; undefined when the release declares nothing. */
async function declaredSchema(file: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
  const schema = (JSON.parse(text) as { schema?: { min?: number; max?: number } }).schema;
  if (schema?.min === undefined || schema.max === undefined) return undefined;
  return schema.min === schema.max ? String(schema.min) : `${schema.min}..${schema.max}`;
}

/**
 * A package and everything it requires (dependencies and optional ones that are installed), as the
 * repository's node_modules resolves them: package file → path under nodeModulesInImage.
 */
async function packageFiles(name: string, nodeModulesInImage: string): Promise<Record<string, string>> {
  const root = join(REPO_ROOT, "node_modules");
  const files: Record<string, string> = {};
  const seen = new Set<string>();
  const visit = async (pkg: string, fromDir: string): Promise<void> => {
    const dir = await resolvePackage(pkg, fromDir);
    if (!dir) throw new Error(`cannot build the books-service images: package "${pkg}" is not installed under ${root} (run npm install)`);
    if (seen.has(dir)) return;
    seen.add(dir);
    const rel = relative(root, dir);
    const inImage = `${nodeModulesInImage}/${rel.startsWith("..") ? pkg : rel.split(sep).join("/")}`;
    // Each entry on its own: a nested node_modules holds only what is required, added below.
    for (const entry of await readdir(dir)) if (entry !== "node_modules") files[`${inImage}/${entry}`] = join(dir, entry);
    const manifest = JSON.parse(await readFile(join(dir, "package.json"), "utf8")) as { dependencies?: Record<string, string>; optionalDependencies?: Record<string, string> };
    for (const dep of Object.keys(manifest.dependencies ?? {})) await visit(dep, dir);
    for (const dep of Object.keys(manifest.optionalDependencies ?? {})) if (await resolvePackage(dep, dir)) await visit(dep, dir);
  };
  await visit(name, REPO_ROOT);
  return files;
}

/** Node's lookup: <dir>/node_modules/<name>, then each parent's. */
async function resolvePackage(name: string, fromDir: string): Promise<string | undefined> {
  for (let dir = fromDir; ; dir = dirname(dir)) {
    const candidate = join(dir, "node_modules", name);
    if (await stat(join(candidate, "package.json")).then(() => true, () => false)) return candidate;
    if (dirname(dir) === dir) return undefined;
  }
}

async function inspectIfPresent(api: DockerApi, ref: string): Promise<ImageInspect | undefined> {
  try {
    return await api.inspectImage(ref);
  } catch (e) {
    if (isDockerNotFound(e)) return undefined;
    throw e;
  }
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

/** File digests by path, size, mtime and inode: node (100 MB) is in every image and hashed once per process. */
const fileDigests = new Map<string, string>();

async function hashPath(hash: Hash, path: string): Promise<void> {
  const st = await stat(path);
  if (st.isDirectory()) {
    for (const entry of (await readdir(path)).sort()) {
      hash.update(`\0${entry}\0`);
      await hashPath(hash, join(path, entry));
    }
    return;
  }
  const key = `${path}\0${st.size}\0${st.mtimeMs}\0${st.ino}`;
  let digest = fileDigests.get(key);
  if (digest === undefined) {
    const file = createHash("sha256");
    for await (const chunk of createReadStream(path)) file.update(chunk as Buffer);
    digest = file.digest("hex");
    fileDigests.set(key, digest);
  }
  hash.update(String(st.mode));
  hash.update(digest);
}
