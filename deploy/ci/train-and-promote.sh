#!/usr/bin/env bash
# The nightly train-and-promote job, step by step: what .github/workflows/train-and-promote.yml
# runs, and what tests/test_registry_serving.py runs against a real tracking server.
#
# Environment: where things are (PREPIQ_SOURCE_URL, MLFLOW_TRACKING_URI, ...), plus
#   PREPIQ      the prepiq command (default: .venv/bin/prepiq)
#   TRIALS      Optuna trials per model (default: params.yaml)
#   GITHUB_STEP_SUMMARY, GITHUB_OUTPUT   written when set (as on GitHub Actions)
#
# The gate judges on each model's hold-out stored in MLflow (registry/holdout.py): a fresh
# runner downloads it; only a model with none stored anywhere gets one frozen.
# Exit: 0 when a champion changed or every champion was kept (`prepiq promote` 0 or 3,
# both normal outcomes); otherwise the failing step's code (promote: 2 a model could not be
# judged, 1 an internal error).
set -uo pipefail
cd "$(dirname "$0")/../.."
prepiq=${PREPIQ:-.venv/bin/prepiq}
data_dir=${PREPIQ_DATA_DIR:-data}

echo "::group::train"
if [ -n "${TRIALS:-}" ]; then
    "$prepiq" train --trials "$TRIALS" || exit $?
else
    "$prepiq" train || exit $?
fi
echo "::endgroup::"

echo "::group::promote"
"$prepiq" promote --model all
code=$?
echo "::endgroup::"
[ -n "${GITHUB_OUTPUT:-}" ] && echo "exit_code=$code" >> "$GITHUB_OUTPUT"

if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
    for report in "$data_dir"/promotion/*.md; do
        [ -e "$report" ] && cat "$report" >> "$GITHUB_STEP_SUMMARY"
    done
fi

case "$code" in
    0) echo "promotion: a champion changed" ;;
    3) echo "promotion: every champion kept" ;;
    *) echo "promotion failed (exit $code)" >&2; exit "$code" ;;
esac
