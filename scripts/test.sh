#!/usr/bin/env bash
# npm test: installs and starts what the tests need when it is missing (npm packages, PostgreSQL),
# builds, then runs node's test runner, which ends with its own counts ("# pass N", "# fail N").
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d node_modules ]; then
  npm ci --no-audit --no-fund
fi
# The migration and turquoise-path tests run against a real PostgreSQL server.
pg_url_line=$(bash scripts/ensure-postgres.sh | tail -n 1)
export "${pg_url_line?}"
npx tsc -p tsconfig.json
node --test --test-concurrency=2 dist/test/
