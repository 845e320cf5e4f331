#!/usr/bin/env bash
# The web console's end-to-end test: starts a fresh incidentd on 127.0.0.1 and drives Debian's
# headless Chromium through it with playwright-core (tests/e2e/console.mjs). Screenshots of every
# page it visits are kept in target/e2e-artifacts/ (or $ARTIFACTS).
#
#   bash tests/e2e.sh [path/to/incidentd]      # default: target/debug/incidentd
#
# Builds nothing: build the binary first (`cargo build`; `cargo test` builds it too). Needs Node.js
# 20 or newer with npm, and Chromium at $CHROMIUM (default /usr/bin/chromium; Debian: apt-get
# install -y chromium). playwright-core is installed from the lockfile into tests/e2e/node_modules;
# it never downloads a browser.
set -euo pipefail

bin=${1:-target/debug/incidentd}
case $bin in /*) ;; *) bin=$PWD/$bin ;; esac
cd "$(dirname "$0")/.."
chromium=${CHROMIUM:-/usr/bin/chromium}
artifacts=${ARTIFACTS:-$PWD/target/e2e-artifacts}

if [ ! -x "$bin" ]; then
  echo "e2e.sh: no incidentd binary at $bin; build it first (cargo build)" >&2
  exit 2
fi
if [ ! -x "$chromium" ]; then
  echo "e2e.sh: no Chromium at $chromium; install it (Debian: apt-get install -y chromium) or set CHROMIUM" >&2
  exit 2
fi
for tool in node npm; do
  command -v "$tool" >/dev/null 2>&1 || { echo "e2e.sh: $tool not found; install Node.js 20+ and npm" >&2; exit 2; }
done

# shellcheck source=tests/server.sh
source tests/server.sh
make_workdir e2e

if [ ! -f tests/e2e/node_modules/playwright-core/package.json ]; then
  echo "== npm ci (playwright-core, from tests/e2e/package-lock.json)"
  # The browser is Debian's; playwright must not try to fetch its own.
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix tests/e2e --no-audit --no-fund --loglevel=error
fi
echo "== $("$chromium" --version 2>/dev/null || echo chromium), node $(node --version)"

start_server "$bin" "$work"
rm -rf "$artifacts"
mkdir -p "$artifacts"
status=0
BASE_URL=$base_url ADMIN_TOKEN=$admin_token CHROMIUM=$chromium ARTIFACTS=$artifacts \
  node tests/e2e/console.mjs || status=$?
if [ "$status" -ne 0 ]; then
  echo "== the console e2e test failed; screenshots so far are in $artifacts" >&2
  echo "== incidentd log (last 50 lines)" >&2
  tail -n 50 "$work/server.log" >&2
fi
exit "$status"
