#!/bin/sh
# Put Prometheus' `promtool` and `prometheus` into DEST_DIR, for the alerting-rule tests and the
# test that scrapes running services (tests/test_monitoring.py, tests/services/test_prometheus_scrape.py).
#
# usage: scripts/install-prometheus.sh DEST_DIR      -> DEST_DIR/promtool, DEST_DIR/prometheus
#
# Binaries on PATH are linked. Otherwise they come from Debian's `prometheus` package, downloaded
# (`apt-get download`, no root needed, nothing installed or started) and unpacked into
# ~/.cache/lnsync/prometheus/. If neither works it says so and exits 0: the tests that need them
# are then skipped with that reason.
set -eu

dest=${1:?usage: install-prometheus.sh DEST_DIR}
cache=${LNSYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lnsync}/prometheus
tools="promtool prometheus"

works() { [ -x "$1" ] && "$1" --version >/dev/null 2>&1; }
all_work() {
  for t in $tools; do works "$1/$t" || return 1; done
}

if all_work "$dest"; then exit 0; fi
mkdir -p "$dest"
if [ "${LNSYNC_PROMETHEUS_DOWNLOAD:-0}" != 1 ]; then
  linked=1
  for t in $tools; do
    if found=$(command -v "$t") && works "$found"; then ln -sfn "$found" "$dest/$t"; else linked=0; fi
  done
  if [ "$linked" = 1 ]; then
    echo "promtool, prometheus -> $dest (from PATH)"
    exit 0
  fi
fi
if ! all_work "$cache"; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
    # Package lists may be missing (a fresh container); refreshing them needs root.
    if [ "$(id -u)" = 0 ]; then apt-get update -qq >/dev/null 2>&1 || true; fi
    if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
      echo "install-prometheus: cannot download Debian's prometheus package; the tests that need promtool or prometheus will be skipped" >&2
      exit 0
    fi
  fi
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
  mkdir -p "$cache"
  for t in $tools; do
    cp "$tmp/root/usr/bin/$t" "$cache/$t.part"
    mv "$cache/$t.part" "$cache/$t"
  done
fi
for t in $tools; do ln -sfn "$cache/$t" "$dest/$t"; done
echo "promtool, prometheus $("$cache/promtool" --version 2>&1 | head -n1 | cut -d' ' -f3) -> $dest"
