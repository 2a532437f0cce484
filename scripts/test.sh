#!/usr/bin/env bash
# npm test: installs and starts what the tests need when it is missing (npm packages, PostgreSQL,
# the Swarm lab), builds, then runs node's test runner, which ends with its own counts ("# pass N", "# fail N").
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d node_modules ]; then
  npm ci --no-audit --no-fund
fi
# The migration and turquoise-path tests run against a real PostgreSQL server.
pg_url_line=$(bash scripts/ensure-postgres.sh | tail -n 1)
export "${pg_url_line?}"
npx tsc -p tsconfig.json
# The swarm runtime's tests run on a three-node Swarm of network namespaces (scripts/swarm-lab.sh,
# which prints its set-up time), torn down however the run ends.
bash scripts/swarm-lab.sh up
trap 'bash scripts/swarm-lab.sh down' EXIT
node --test --test-concurrency=2 dist/test/
