#!/usr/bin/env bash
# npm test: installs what the tests need when it is missing, builds, runs node's test runner.
# Node's runner ends with its own counts ("# pass N", "# fail N").
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d node_modules ]; then
  npm ci --no-audit --no-fund
fi
npx tsc -p tsconfig.json
node --test --test-concurrency=2 dist/test/
