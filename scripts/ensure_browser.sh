#!/bin/sh
# Install what the browser tests need (Debian's chromium and chromium-driver) when it is missing.
# Run by the README's test command. Needs root and apt-get; elsewhere it says what to install and
# leaves the browser tests to skip.
set -e
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
    exit 0
fi
echo "note: chromium and chromedriver not found and not installable here (needs root and apt-get);" \
     "the headless-browser tests will be skipped" >&2
