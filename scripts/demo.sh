#!/usr/bin/env bash
# `make demo`: the walk-through (WALKTHROUGH.md) on two local nodes, each in its own UTS +
# mount namespace, every command as written there. The steps, the checks and the clean-up
# (always, on exit, error, Ctrl-C or TERM) are in scripts/demo.py; read it there.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
exec "$repo/.venv/bin/python" "$repo/scripts/demo.py" "$@"
