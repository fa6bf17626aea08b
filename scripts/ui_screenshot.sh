#!/usr/bin/env bash
# Screenshot the Dagster UI's asset lineage with headless Chromium, for the README.
#
#   scripts/ui_screenshot.sh [OUT_DIR]          (default: docs)
#
# Needs uv and Chromium. On Debian/Ubuntu: apt-get update && apt-get install -y chromium
# (or point CHROMIUM at any Chromium/Chrome binary).
#
# In a fresh temporary DAGSTER_HOME and lake it runs one day of the three workloads on the
# emulator (`llm-pipelines workloads`), so the graph shows materialized partitions and checks,
# starts dagster-webserver on a free loopback port, waits until the code location has loaded,
# and saves PNGs of the upstream lineage of catalog_descriptions and eval_model_scores.
# Everything it starts is stopped, and the temporary folder removed, when it exits.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-docs}
chromium=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)}
if [[ -z "$chromium" ]]; then
  echo "Chromium not found: apt-get update && apt-get install -y chromium (or set CHROMIUM)" >&2
  exit 1
fi

work=$(mktemp -d)
server=""
cleanup() {
  if [[ -n "$server" ]]; then
    kill -TERM -- "-$server" 2>/dev/null || true  # the webserver and its code server
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

export DAGSTER_HOME="$work/dagster_home"
export LLM_PIPELINES_LAKE="$work/lake"
export LLM_PIPELINES_EMULATOR_DIR="$work/emulator"
unset ANTHROPIC_API_KEY ANTHROPIC_BASE_URL  # screenshots never need (or show) a real key
mkdir -p "$DAGSTER_HOME" "$out"
# No telemetry, and no "join the community" dialog over the graph.
printf 'telemetry:\n  enabled: false\nnux:\n  enabled: false\n' >"$DAGSTER_HOME/dagster.yaml"

echo "· running one day of the workloads, so the graph has something to show"
uv run llm-pipelines workloads --lake "$LLM_PIPELINES_LAKE" \
  --emulator-dir "$LLM_PIPELINES_EMULATOR_DIR" --batch-latency 0 --products 12 --tickets 20 \
  >"$work/workloads.log"

port=$(uv run python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "· starting dagster-webserver on 127.0.0.1:$port"
setsid uv run dagster-webserver -w workspace.yaml -h 127.0.0.1 -p "$port" >"$work/webserver.log" 2>&1 &
server=$!

uv run python - "$port" "$work/webserver.log" <<'PY'
"""Wait until the webserver answers and the llm_pipelines code location has loaded."""
import json
import sys
import time
import urllib.request

port, log = sys.argv[1], sys.argv[2]
query = b'{"query": "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"}'
deadline = time.monotonic() + 180
while time.monotonic() < deadline:
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/graphql", query, {"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            entries = json.load(response)["data"]["workspaceOrError"]["locationEntries"]
        if any(e["name"] == "llm_pipelines" and e["loadStatus"] == "LOADED" for e in entries):
            sys.exit(0)
    except OSError:
        pass
    time.sleep(1)
print(open(log).read()[-3000:], file=sys.stderr)
sys.exit("the code location did not load within 180 s")
PY

shoot() {
  local name=$1 path=$2 size=$3
  local profile
  profile=$(mktemp -d "$work/chromium-XXXXXX")
  # --virtual-time-budget lets the page fetch its data and lay out the graph before the shot.
  "$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --hide-scrollbars --window-size="$size" \
    --virtual-time-budget=30000 --screenshot="$out/$name.png" \
    "http://127.0.0.1:$port/$path" >"$work/chromium-$name.log" 2>&1
  echo "· $out/$name.png"
}

shoot ui_lineage_catalog "assets/catalog_descriptions?view=lineage&lineageScope=upstream&lineageDepth=10" 2400,1200
shoot ui_lineage_offline_eval "assets/eval_model_scores?view=lineage&lineageScope=upstream&lineageDepth=12" 3000,1500
shoot ui_eval_model_scores "assets/eval_model_scores?view=events" 1800,1300
