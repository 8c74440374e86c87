#!/usr/bin/env bash
# The tests marked `slow` (torch.compile and other long paths); the default suite skips them.
set -euo pipefail
cd "$(dirname "$0")/.."
pytest -m slow "$@"
