// Test images without any registry, built by src/demo/images.ts (shared with the demo and the
// benchmarks): the host's node, its libraries and the app files, imported through the Engine API.
// Test images are tagged by content and carry the label turquoise.test.

import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ensureImage, removeImage, type ImageOptions } from "../../src/demo/images.js";
import type { DockerApi } from "../../src/runtime/docker-api.js";

export { NODE_IN_IMAGE } from "../../src/demo/images.js";
/** On every test image, so a leftover one is easy to find and remove. */
export const TEST_IMAGE_LABEL = "turquoise.test";

export const FIXTURES_DIR = fileURLToPath(new URL("../../../test/fixtures/", import.meta.url));

export type TestImageOptions = Omit<ImageOptions, "tag">;

/**
 * Makes sure the image `<name>:<content hash>` exists and returns that reference. Callers that may
 * run at the same time should use different names, so that one's cleanup cannot remove the other's image.
 */
export function ensureTestImage(name: string, opts: TestImageOptions): Promise<string> {
  return ensureImage(name, { ...opts, labels: { ...opts.labels, [TEST_IMAGE_LABEL]: "true" } });
}

/** Removes a test image; one that is already gone is fine. */
export function removeTestImage(ref: string, api?: DockerApi): Promise<void> {
  return removeImage(ref, api);
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
