#!/usr/bin/env bash
# Create tools/.venv with the pinned Python dependencies (idempotent: reuses a venv whose
# requirements stamp matches tools/requirements.txt).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --no-cache-dir --upgrade pip
"$venv/bin/python" -m pip install -q --no-cache-dir -r "$here/requirements.txt"
echo "$want" > "$stamp"
echo "tools/.venv ready" >&2
