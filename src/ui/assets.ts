// The dashboard's files: the page, its script and stylesheet from src/ui/static (shipped in the
// package), and Preact, its hooks and htm as ES modules from the installed dependencies, read once
// and served from memory. No CDN and no build step: a fresh clone and an installed package serve the same bytes.
import fs from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";

export interface Asset {
  body: Buffer;
  type: string;
}

/** src/ui/static, from this file in dist/src/ui (the build) or src/ui (sources run directly). */
function staticDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const fromDist = path.resolve(here, "../../../src/ui/static");
  return fs.existsSync(fromDist) ? fromDist : path.join(here, "static");
}

const TYPES: Record<string, string> = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml" };

function moduleFile(specifier: string): string {
  return fileURLToPath(import.meta.resolve(specifier));
}

/** Every asset by its path under /ui; throws, naming the missing file, when the package lacks one. */
export function loadAssets(): Map<string, Asset> {
  const out = new Map<string, Asset>();
  const dir = staticDir();
  for (const name of fs.readdirSync(dir)) {
    const type = TYPES[path.extname(name)];
    if (type) out.set(`/ui/${name === "index.html" ? "" : name}`, { body: fs.readFileSync(path.join(dir, name)), type });
  }
  const vendor = (name: string, file: string, rewrite?: (text: string) => string) => {
    const text = fs.readFileSync(file, "utf8");
    out.set(`/ui/vendor/${name}`, { body: Buffer.from(rewrite ? rewrite(text) : text), type: TYPES[".js"]! });
  };
  vendor("preact.mjs", moduleFile("preact"));
  // The hooks import "preact" by its bare name, which a browser cannot resolve without an import map (an inline script the CSP forbids).
  vendor("hooks.mjs", moduleFile("preact/hooks"), (text) => {
    const out = text.replace(/from\s*"preact"/g, 'from"./preact.mjs"');
    if (out === text) throw new Error(`${moduleFile("preact/hooks")}: no import of "preact" to point at ./preact.mjs; has Preact's build changed?`);
    return out;
  });
  vendor("htm.mjs", moduleFile("htm"));
  return out;
}
