#!/usr/bin/env bash
# Run the two seed scripts as a new user would, in a scratch folder (default build/demo):
# the state example twice, then the CloudFlow example with a short interval.
# Everything it writes (store, master key, job files, outbox) stays in that folder.
set -euo pipefail

examples="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="${1:-build/demo}"
rm -rf "$work"
mkdir -p "$work"
cd "$work"

export CLOUDWRIGHT_STORE="sqlite:///store.db"
export CLOUDWRIGHT_KEY_FILE="$PWD/master.key"
export DATA_ENGINE_HOME="$PWD/jobs"
export GMAIL_OUTBOX="$PWD/outbox"
unset CLOUDWRIGHT_MASTER_KEY CLOUDWRIGHT_APP SMTP_HOST

echo "== state example, first run: nothing is stored yet, so it prints None"
cloudwright run "$examples/state_example.py"

echo
echo "== state example, second run: it prints the timestamp the first run stored"
cloudwright run "$examples/state_example.py"
cloudwright state list --app state_example

echo
echo "== CloudFlow example: launch a job, wait for it, email the user"
cloudwright run "$examples/cloudflow_job.py" --interval 1s \
    --input notification_email=you@example.com --input rows=2000000

echo
echo "== the run as stored"
run_id="$(cloudwright runs --app cloudflow_job --limit 1 --quiet)"
cloudwright status "$run_id" --app cloudflow_job
echo "outbox: $(ls "$GMAIL_OUTBOX"/*.eml)"
