#!/usr/bin/env bash
# Copy the browser builds of the client libraries pinned in tools/package.json into the
# package (relaycast/api/static/vendor/), each with its licence. An upgrade is one command:
#   bash tools/vendor-browser-libs.sh pusher-js@8.6.0 socket.io-client@4.8.1
# (pins those versions, npm-installs them, copies them; with no argument: copies what is
# installed). tests/test_ui_api.py fails when a vendored file differs from tools/node_modules.
set -euo pipefail
cd "$(dirname "$0")"
if [ $# -ge 1 ]; then
    npm install --save-exact --no-audit --no-fund --loglevel=error "$@"
fi
dest=../relaycast/api/static/vendor
mkdir -p "$dest"

vendor() {  # package, file inside the package, licence files...
    local package=$1 file=$2 name version
    shift 2
    name=$(basename "$file")
    version=$(node -p "require('./node_modules/$package/package.json').version")
    cp "node_modules/$package/$file" "$dest/$name"
    {
        echo "$package $version, copied unmodified from the npm package's $file"
        echo "by tools/vendor-browser-libs.sh (pinned in tools/package.json)."
        for licence in "$@"; do
            echo
            cat "node_modules/$package/$licence"
        done
    } > "$dest/$name.LICENSE.txt"
    echo "vendored $package $version into relaycast/api/static/vendor/$name"
}

vendor pusher-js dist/web/pusher.min.js LICENCE dist/web/pusher.min.js.LICENSE.txt
vendor socket.io-client dist/socket.io.min.js LICENSE
