#!/usr/bin/env bash
# The two-node demo. It grows with the project; today it shows what has landed.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "demo: nothing to show yet"
