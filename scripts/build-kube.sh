#!/usr/bin/env bash
# Build a real Kubernetes v1.20.2 (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
# kube-proxy, kubectl and the pod sandbox's `pause`) and fetch etcd into DEST_DIR, offline from
# Debian packages.
#
# usage: scripts/build-kube.sh [DEST_DIR]     (default: ~/.cache/lnsync/k8s)
#
# No registry we can reach ships Kubernetes binaries, but Debian's `kubernetes` *source* package
# is the full tree with vendor/, so it builds with Debian's Go 1.19 (bookworm) and nothing from the
# network but this machine's Debian mirror. Repairs (each found by trying):
#   1. pkg/generated/openapi is not in the tarball: generate it with the vendored openapi-gen.
#   2. The vendored modern-go/reflect2 1.0.1 crashes under Go >= 1.18 (SIGSEGV in mapiterinit):
#      replace it with Debian's 1.0.2.
#   3. The kubelet rewrites the host's vm.overcommit_memory, kernel.panic and kernel.panic_on_oops
#      by default: it only warns once KernelTunableModify becomes KernelTunableWarn.
# Cold: ~20-25 min on 2 cores (the work dir is ~3 GB); cached afterwards.
# Idempotent: exits at once when DEST_DIR already holds working binaries. The ~2 GB work dir is
# removed after a successful build unless KAPI_KEEP_WORK=1. System apt state is never touched: the
# package lists live in the work dir.
set -euo pipefail

DEST=$(realpath -m "${1:-${LNSYNC_K8S_BIN:-$HOME/.cache/lnsync/k8s}}")
WORK=$(realpath -m "${KAPI_WORK:-$DEST.build}")
K8S_VERSION=v1.20.2
K8S_DEB=1.20.5+really1.20.2-1.1+deb12u1

COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

have_binaries() {
  local c
  for c in "${COMPONENTS[@]}"; do
    [ -x "$DEST/$c" ] || return 1
  done
  [ -x "$DEST/etcd" ] && [ -x "$DEST/pause" ] &&
    "$DEST/kube-apiserver" --version 2>/dev/null | grep -x "Kubernetes $K8S_VERSION" >/dev/null &&
    "$DEST/kubelet" --version 2>/dev/null | grep -x "Kubernetes $K8S_VERSION" >/dev/null &&
    "$DEST/etcd" --version >/dev/null 2>&1
}

if have_binaries; then
  echo "Kubernetes $K8S_VERSION and etcd already in $DEST"
  exit 0
fi

mkdir -p "$DEST"
# One build at a time (make test-k8s may be started twice).
exec 9>"$DEST/.build.lock"
flock 9
if have_binaries; then exit 0; fi

started=$(date +%s)
echo "building Kubernetes $K8S_VERSION into $DEST (work dir $WORK; ~20-25 min on 2 cores, once)"
mkdir -p "$WORK/lists/partial" "$WORK/cache/archives/partial" "$WORK/src" "$WORK/debs" "$WORK/root"
cd "$WORK"

# This machine's own Debian sources, with source packages enabled, in a private apt state.
mkdir -p "$WORK/sources.list.d"
: >"$WORK/sources.list"
if [ -f /etc/apt/sources.list ]; then
  sed -n 's/^deb \(.*\)$/deb \1\ndeb-src \1/p' /etc/apt/sources.list >"$WORK/sources.list"
fi
for f in /etc/apt/sources.list.d/*.sources; do
  if [ -f "$f" ]; then sed 's/^Types: *deb *$/Types: deb deb-src/' "$f" >"$WORK/sources.list.d/${f##*/}"; fi
done
APT=(-o Dir::Etc::sourcelist="$WORK/sources.list" -o Dir::Etc::sourceparts="$WORK/sources.list.d"
  -o Dir::State::Lists="$WORK/lists" -o Dir::Cache="$WORK/cache" -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
apt-get "${APT[@]}" -qq update

echo "- downloading sources and toolchain"
(cd src && apt-get "${APT[@]}" -qq source --download-only "kubernetes=$K8S_DEB")
(cd debs && apt-get "${APT[@]}" -qq download \
  golang-1.19-go golang-1.19-src golang-github-modern-go-reflect2-dev etcd-server)
for deb in debs/*.deb; do dpkg-deb -x "$deb" root; done

echo "- unpacking the Kubernetes tree"
rm -rf k8s && mkdir k8s
tar -xzf src/kubernetes_*.orig.tar.gz -C k8s --strip-components=1
rm -rf k8s/vendor/github.com/modern-go/reflect2
cp -r root/usr/share/gocode/src/github.com/modern-go/reflect2 k8s/vendor/github.com/modern-go/
sed -i 's/b := KernelTunableModify/b := KernelTunableWarn/' k8s/pkg/kubelet/cm/container_manager_linux.go
grep -q 'b := KernelTunableWarn' k8s/pkg/kubelet/cm/container_manager_linux.go

# GOPATH mode, as Debian's own debian/rules builds it (module mode refuses the vendored go.mod).
export GOROOT="$WORK/root/usr/lib/go-1.19" GOPATH="$WORK/gopath" GOCACHE="$WORK/gocache"
export GO111MODULE=off GOPROXY=off GOFLAGS= CGO_ENABLED=0 PATH="$WORK/root/usr/lib/go-1.19/bin:$PATH"
mkdir -p "$GOPATH/src/k8s.io"
ln -sfn "$WORK/k8s" "$GOPATH/src/k8s.io/kubernetes"
cd "$GOPATH/src/k8s.io/kubernetes"

echo "- generating the OpenAPI definitions"
go build -o "$WORK/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
pkgs=$(find -H . \( -path './_*' -o -path './.*' -o -path ./vendor \) -prune -o -type f -name '*.go' -print |
  xargs grep -l '+k8s:openapi-gen=' | sed 's|^\./||; s|/[^/]*$||; s|^staging/src|vendor|' |
  grep -v -e '^vendor/k8s.io/code-generator/' -e '^vendor/k8s.io/sample-apiserver/' |
  LC_ALL=C sort -u | sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)
"$WORK/openapi-gen" -i "$pkgs" -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
  -h hack/boilerplate/boilerplate.generatego.txt -r "$WORK/openapi-report.txt" 2>"$WORK/openapi-gen.log"

echo "- compiling ${COMPONENTS[*]}"
# Without both version packages stamped, /version reports v0.0.0-master and clients misjudge the API.
V="-X k8s.io/kubernetes/vendor/k8s.io/@/version.gitVersion=$K8S_VERSION"
V="$V -X k8s.io/kubernetes/vendor/k8s.io/@/version.gitMajor=1"
V="$V -X k8s.io/kubernetes/vendor/k8s.io/@/version.gitMinor=20"
V="$V -X k8s.io/kubernetes/vendor/k8s.io/@/version.gitTreeState=clean"
mkdir -p "$WORK/out"
go build -trimpath -ldflags "-s -w ${V//@/component-base} ${V//@/client-go/pkg}" \
  -o "$WORK/out/" $(printf './cmd/%s ' "${COMPONENTS[@]}")
for c in "${COMPONENTS[@]}"; do
  cp "$WORK/out/$c" "$DEST/$c.part" && mv "$DEST/$c.part" "$DEST/$c"
done
echo "- compiling pause (the pod sandbox's process)"
gcc -Os -static -o "$DEST/pause.part" build/pause/linux/pause.c && mv "$DEST/pause.part" "$DEST/pause"
cp "$WORK/root/usr/bin/etcd" "$DEST/etcd.part" && mv "$DEST/etcd.part" "$DEST/etcd"

cd "$DEST"
have_binaries || { echo "built binaries do not run" >&2; exit 1; }
"$DEST/kube-apiserver" --version
"$DEST/kubelet" --version
"$DEST/etcd" --version | sed -n 1p
if [ "${KAPI_KEEP_WORK:-0}" != 1 ]; then rm -rf "$WORK"; fi
echo "done in $(($(date +%s) - started)) s"
