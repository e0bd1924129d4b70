#!/bin/sh
# Put Prometheus' `promtool` into DEST_DIR, for the alerting-rule tests (tests/test_monitoring.py).
#
# usage: scripts/install-promtool.sh DEST_DIR      -> DEST_DIR/promtool
#
# A promtool on PATH is linked. Otherwise it comes from Debian's `prometheus` package, downloaded
# (`apt-get download`, no root needed, nothing installed or started: the package also holds the
# server and its service) and unpacked into ~/.cache/lnsync/promtool/. If neither works it says so
# and exits 0: the tests that need promtool are then skipped with that reason.
set -eu

dest=${1:?usage: install-promtool.sh DEST_DIR}
cache=${LNSYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lnsync}/promtool

works() { [ -x "$1" ] && "$1" --version >/dev/null 2>&1; }

if works "$dest/promtool"; then exit 0; fi
mkdir -p "$dest"
if [ "${LNSYNC_PROMTOOL_DOWNLOAD:-0}" != 1 ] && found=$(command -v promtool) && works "$found"; then
  ln -sfn "$found" "$dest/promtool"
  echo "promtool -> $dest/promtool ($found)"
  exit 0
fi
if ! works "$cache/promtool"; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
    # Package lists may be missing (a fresh container); refreshing them needs root.
    if [ "$(id -u)" = 0 ]; then apt-get update -qq >/dev/null 2>&1 || true; fi
    if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
      echo "install-promtool: cannot download Debian's prometheus package; the alerting-rule tests will be skipped" >&2
      exit 0
    fi
  fi
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
  mkdir -p "$cache"
  cp "$tmp/root/usr/bin/promtool" "$cache/promtool.part"
  mv "$cache/promtool.part" "$cache/promtool"
fi
ln -sfn "$cache/promtool" "$dest/promtool"
echo "promtool $("$cache/promtool" --version 2>&1 | head -n1 | cut -d' ' -f3) -> $dest/promtool"
