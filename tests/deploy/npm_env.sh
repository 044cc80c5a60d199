#!/usr/bin/env bash
# Test wrapper: makes the npm packages of tests/deploy/package-lock.json
# available, then runs "$@" with NODE_PATH pointing at them.
#
# The packages are installed once with `npm ci` into a cache folder keyed
# by the lockfile's hash ($SLUICE_NPM_CACHE, default ~/.cache/sluice-npm,
# where ~ is the user's real home: Bazel may hide $HOME), never into the
# source tree. Later runs, and other tests, reuse it. Needs node and npm
# (scripts/install-deps) and, the first time only, the npm registry.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
home="$(getent passwd "$(id -u)" | cut -d: -f6)"
cache="${SLUICE_NPM_CACHE:-${home:-/tmp}/.cache/sluice-npm}"
key="$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -c1-16)"
dir="$cache/$key"

if [ ! -f "$dir/.complete" ]; then
  command -v npm >/dev/null || { echo "npm_env: npm not found (run scripts/install-deps)" >&2; exit 1; }
  mkdir -p "$cache"
  tmp="$(mktemp -d "$cache/.install.XXXXXX")"
  cp "$here/package.json" "$here/package-lock.json" "$tmp/"
  echo "npm_env: npm ci into $dir (first run only)" >&2
  # HOME: npm's own cache and the user's .npmrc (registry, CA) live there.
  (cd "$tmp" && HOME="$home" npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
  touch "$tmp/.complete"
  # Atomic: a concurrent install that finished first wins, ours is dropped.
  mv -T "$tmp" "$dir" 2>/dev/null || rm -rf "$tmp"
fi

export NODE_PATH="$dir/node_modules"
export PATH="$dir/node_modules/.bin:$PATH"
exec "$@"
