#!/bin/sh
# Install bcoin (npm) for the chain-source tests: a real Bitcoin full node that runs regtest in
# memory and answers bitcoind's JSON-RPC. Its native modules are old NAN code that does not build
# against Node 20, so scripts are skipped; of them bcoin needs only mrmr (murmur3, plain C), built
# here against Debian's Node headers; leveldown (its disk database) is replaced by a stub, since the
# tests run it with --memory.
set -eu
cd "$(dirname "$0")"
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
(cd node_modules/mrmr && ../.bin/node-gyp rebuild --nodedir=/usr >/dev/null)
echo "'use strict'; module.exports = () => { throw new Error('leveldown is stubbed: run bcoin with --memory'); };" \
  > node_modules/bdb/lib/level.js
touch node_modules/.installed
