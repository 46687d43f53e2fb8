#!/usr/bin/env bash
# Copy the pusher-js browser build pinned in tools/package.json into the package
# (api/static/vendor/), with its licence. An upgrade is one command:
#   bash tools/vendor-pusher-js.sh 8.6.0      # pins that version, npm-installs it, copies it
# tests/test_ui_api.py fails when the vendored file differs from tools/node_modules.
set -euo pipefail
cd "$(dirname "$0")"
if [ $# -ge 1 ]; then
    npm install --save-exact --no-audit --no-fund --loglevel=error "pusher-js@$1"
fi
src=node_modules/pusher-js
dest=../api/static/vendor
version=$(node -p "require('./$src/package.json').version")
mkdir -p "$dest"
cp "$src/dist/web/pusher.min.js" "$dest/pusher.min.js"
{
    echo "pusher-js $version, copied unmodified from the npm package's dist/web/pusher.min.js"
    echo "by tools/vendor-pusher-js.sh (pinned in tools/package.json)."
    echo
    cat "$src/LICENCE"
    echo
    cat "$src/dist/web/pusher.min.js.LICENSE.txt"
} > "$dest/pusher.min.js.LICENSE.txt"
echo "vendored pusher-js $version into api/static/vendor/"
