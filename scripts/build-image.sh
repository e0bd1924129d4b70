#!/usr/bin/env bash
# Build lnsync's container images here, without a Docker engine or a registry (`make image`), and
# export each as a docker-archive tar that `ctr -n k8s.io images import FILE` accepts:
#   lnsync:<appVersion>             the project's Dockerfile, default target: the services
#   lnsync-controller:<appVersion>  its `controller` target: the same plus the Kubernetes client
#                                   (the chart's peerController.image)
#   lnsync-postgres:15              images/postgres/Dockerfile: the chart's bundled PostgreSQL from
#                                   Debian bookworm's PostgreSQL 15 (postgresql.image.repository/tag)
#   lnsync/pause:3.4                the pod sandbox, when the k8s build left a static `pause` binary
#
# The base images are LOCAL STAND-INS. The Dockerfiles name the real ones (python:3.11-slim-bookworm,
# debian:bookworm-slim) and stay buildable anywhere with a registry; this machine can reach only
# Debian's apt mirror and PyPI, not Docker Hub. So a Debian bookworm root filesystem is made with
# debootstrap (minbase, trimmed like the slim images: no apt lists, docs, man pages or locales),
# imported into buildah's storage as docker.io/library/debian:bookworm-slim, and Debian's own
# Python 3.11 (python3, python3-venv, with `python` -> python3 in /usr/local/bin) added on top as
# docker.io/library/python:3.11-slim-bookworm. Each is made only when missing from the storage.
# The official images are close but not identical (theirs compiles Python into /usr/local).
#
# buildah (chroot isolation; overlay storage, vfs where overlay does not work) keeps everything
# under the cache directory; its RUN steps reach PyPI and the Debian mirror. Images are rebuilt
# only when their inputs change (a hash of the files they are built from), and buildah's layer
# cache keeps the dependency layer of lnsync's image when only the code changed.
#
# Usage: scripts/build-image.sh            (root; needs buildah, debootstrap, python3)
# Env:   LNSYNC_IMAGE_CACHE  cache and output dir (default ~/.cache/lnsync/images)
#        LNSYNC_K8S_BIN      where build-kube.sh put `pause` (default ~/.cache/lnsync/k8s)
#        LNSYNC_DEBIAN_MIRROR, LNSYNC_DEBIAN_SECURITY_MIRROR  (default: the ones this machine's apt uses)
# Output: $LNSYNC_IMAGE_CACHE/{lnsync,lnsync-controller,lnsync-postgres,pause}.tar and the sizes.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${LNSYNC_IMAGE_CACHE:-$HOME/.cache/lnsync/images}
K8S_BIN=${LNSYNC_K8S_BIN:-$HOME/.cache/lnsync/k8s}
# host_mirror SUITE: the URI this machine's own apt sources use for SUITE (deb822 or one-line form).
host_mirror() {
  {
    awk -v s="$1" '/^[[:space:]]*$/ { u = "" } /^URIs:/ { u = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s && u != "") print u }' /etc/apt/sources.list.d/*.sources 2>/dev/null
    [ -f /etc/apt/sources.list ] && awk -v s="$1" '$1 == "deb" && $3 == s { print $2 }' /etc/apt/sources.list
  } | sed -n 1p || true
}
MIRROR=${LNSYNC_DEBIAN_MIRROR:-$(host_mirror bookworm)}
SECURITY_MIRROR=${LNSYNC_DEBIAN_SECURITY_MIRROR:-$(host_mirror bookworm-security)}
SUITE=bookworm
[ -n "$MIRROR" ] && [ -n "$SECURITY_MIRROR" ] || {
  echo "build-image.sh: no Debian $SUITE mirror in this machine's apt sources: set LNSYNC_DEBIAN_MIRROR and LNSYNC_DEBIAN_SECURITY_MIRROR" >&2
  exit 1
}

DEBIAN_IMAGE=docker.io/library/debian:bookworm-slim
PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm
APP_VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$ROOT/helm/lnsync/Chart.yaml")
LNSYNC_IMAGE=docker.io/library/lnsync:$APP_VERSION
CONTROLLER_IMAGE=docker.io/library/lnsync-controller:$APP_VERSION
POSTGRES_IMAGE=docker.io/library/lnsync-postgres:15
PAUSE_IMAGE=docker.io/lnsync/pause:3.4

[ "$(id -u)" = 0 ] || { echo "build-image.sh: run as root (buildah's chroot builds, debootstrap)" >&2; exit 1; }
for tool in buildah debootstrap python3 sha256sum; do
  command -v "$tool" >/dev/null || { echo "build-image.sh: $tool is missing (apt-get install $tool)" >&2; exit 1; }
done
[ -n "$APP_VERSION" ] || { echo "build-image.sh: no appVersion in helm/lnsync/Chart.yaml" >&2; exit 1; }

mkdir -p "$CACHE"
CACHE=$(realpath "$CACHE")  # debootstrap needs a target path without symlinks
exec 9>"$CACHE/.lock"
flock -n 9 || { echo "build-image.sh: waiting for another build in $CACHE" >&2; flock 9; }

start=$(date +%s)
say() { printf '==> [%4ss] %s\n' "$(($(date +%s) - start))" "$*"; }
# logged LOG CMD...: CMD's output goes to $CACHE/LOG; on failure its tail is shown.
logged() {
  local log=$CACHE/$1
  shift
  "$@" >"$log" 2>&1 || { tail -30 "$log" >&2; echo "build-image.sh: failed, see $log" >&2; exit 1; }
}

# --- buildah, with its storage in the cache ----------------------------------------------------
driver_works() {
  local probe mnt ok=1
  probe=$(buildah --root "$CACHE/storage" --runroot "$CACHE/run" --storage-driver "$1" from scratch 2>/dev/null) || return 1
  if mnt=$(buildah --root "$CACHE/storage" --runroot "$CACHE/run" --storage-driver "$1" mount "$probe" 2>/dev/null) &&
     touch "$mnt/probe" 2>/dev/null; then
    ok=0
  fi
  buildah --root "$CACHE/storage" --runroot "$CACHE/run" --storage-driver "$1" rm "$probe" >/dev/null 2>&1 || true
  return $ok
}
if [ -s "$CACHE/storage-driver" ]; then
  DRIVER=$(cat "$CACHE/storage-driver")  # a storage root keeps the driver it was made with
else
  DRIVER=
  for candidate in overlay vfs; do
    if driver_works "$candidate"; then DRIVER=$candidate; break; fi
    rm -rf "$CACHE/storage" "$CACHE/run"
  done
  [ -n "$DRIVER" ] || { echo "build-image.sh: neither the overlay nor the vfs storage driver works" >&2; exit 1; }
  echo "$DRIVER" >"$CACHE/storage-driver"
fi
B() { buildah --root "$CACHE/storage" --runroot "$CACHE/run" --storage-driver "$DRIVER" "$@"; }
export BUILDAH_ISOLATION=chroot

# Nothing may stay mounted under a root filesystem that is about to be deleted.
umount_under() {
  local m
  for m in $(awk -v d="$1" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r); do umount -l "$m"; done
}
containers=()
cleanup() {
  local c
  for c in "${containers[@]}"; do B rm "$c" >/dev/null 2>&1 || true; done
  # buildah bud leaves a (mounted) working container behind for a failed step and for a stage
  # without instructions (the Dockerfile's default target); this storage is ours alone.
  B rm --all >/dev/null 2>&1 || true
  if [ -d "$CACHE/debian-rootfs.tmp" ]; then
    umount_under "$CACHE/debian-rootfs.tmp"
    rm -rf "$CACHE/debian-rootfs.tmp"
  fi
}
trap cleanup EXIT

image_id() { B images --noheading --no-trunc --format '{{.ID}}' "$1"; }
have_image() { B inspect --type image "$1" >/dev/null 2>&1; }
hash_files() {  # hash_files FILE_OR_DIR...: content and paths of every file, caches left out
  (cd "$ROOT" && find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | LC_ALL=C sort -z |
    xargs -0 sha256sum) | sha256sum | cut -d' ' -f1
}
# export_image IMAGE FILE: a docker-archive (uncompressed layers, RepoTags = IMAGE) for ctr import.
export_image() {
  rm -f "$2.part"
  B push --quiet "$1" "docker-archive:$2.part:$1" >/dev/null
  mv "$2.part" "$2"
}
# up_to_date NAME IMAGE FILE HASH: the image exists, was built from these inputs and is exported.
up_to_date() {
  [ -f "$CACHE/$1.inputs" ] && [ "$(cat "$CACHE/$1.inputs")" = "$4" ] && have_image "$2" && [ -f "$3" ]
}
built() { echo "$4" >"$CACHE/$1.inputs"; }

# --- the base stand-ins ------------------------------------------------------------------------
make_debian_base() {
  local dir=$CACHE/debian-rootfs.tmp c mnt
  say "debian:bookworm-slim stand-in: debootstrap --variant=minbase $SUITE from $MIRROR"
  umount_under "$dir"
  rm -rf "$dir"
  mkdir -p "$dir"
  logged debootstrap.log debootstrap --variant=minbase --components=main "$SUITE" "$dir" "$MIRROR"
  # The slim images' sources and dpkg filters: later apt-get installs stay trimmed as well.
  rm -f "$dir/etc/apt/sources.list"
  cat >"$dir/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  cat >"$dir/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
# As in the slim images: no documentation, manual pages or translations (copyrights stay).
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
  cat >"$dir/etc/apt/apt.conf.d/slim" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
EOF
  # Point-release and security updates, then trim what debootstrap left.
  logged apt-upgrade.log chroot "$dir" /bin/sh -c \
    'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get -y upgrade'
  umount_under "$dir"
  find "$dir/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$dir/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$dir"/usr/share/{man,groff,info,lintian,linda,locale}/* \
    "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/* "$dir"/var/cache/debconf/*-old \
    "$dir"/var/log/* "$dir"/tmp/* "$dir"/var/tmp/* "$dir"/dev/* "$dir"/proc/* "$dir"/sys/* "$dir"/run/*
  c=$(B from scratch)
  containers+=("$c")
  mnt=$(B mount "$c")
  tar -C "$dir" --numeric-owner --xattrs -cf - . | tar -C "$mnt" --numeric-owner --xattrs -xpf -
  B umount "$c" >/dev/null
  B config --os linux --arch amd64 --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd bash --label "io.lnsync.stand-in=debootstrap --variant=minbase $SUITE (scripts/build-image.sh)" "$c"
  B commit --quiet --rm "$c" "$DEBIAN_IMAGE" >/dev/null
  containers=()
  rm -rf "$dir"
}

make_python_base() {
  local c version
  say "python:3.11-slim-bookworm stand-in: Debian's python3 + python3-venv on debian:bookworm-slim"
  c=$(B from --pull-never "$DEBIAN_IMAGE")
  containers+=("$c")
  logged python-base.log B run "$c" -- sh -c 'apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/* \
    && ln -s /usr/bin/python3 /usr/local/bin/python \
    && python -m venv /tmp/probe && rm -rf /tmp/probe'
  version=$(B run "$c" -- python3 -c 'import platform; print(platform.python_version())')
  B config --env LANG=C.UTF-8 --env PYTHON_VERSION="$version" --cmd python3 \
    --label "io.lnsync.stand-in=Debian $SUITE python3 $version on debootstrap minbase (scripts/build-image.sh)" "$c"
  B commit --quiet --rm "$c" "$PYTHON_IMAGE" >/dev/null
  containers=()
}

if ! have_image "$DEBIAN_IMAGE"; then
  make_debian_base
  B rmi "$PYTHON_IMAGE" >/dev/null 2>&1 || true  # stacked on the old one
fi
have_image "$PYTHON_IMAGE" || make_python_base

# --- lnsync ------------------------------------------------------------------------------------
# pip in the build trusts what this machine trusts (e.g. a TLS-inspecting egress proxy's CA) and
# uses its index, through read-only mounts into the RUN steps that leave the image unchanged (at
# most empty mount points in the build stage, which the runtime stage does not copy).
pip_mounts=()
host_ca=${PIP_CERT:-${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}
if [ -r "$host_ca" ]; then
  {
    echo "[global]"
    echo "cert = /etc/pip-build-ca.crt"
    [ -z "${PIP_INDEX_URL:-}" ] || echo "index-url = $PIP_INDEX_URL"
  } >"$CACHE/build-pip.conf"
  pip_mounts=(--volume "$(realpath "$host_ca"):/etc/pip-build-ca.crt:ro" --volume "$CACHE/build-pip.conf:/etc/pip.conf:ro")
fi
lnsync_tar=$CACHE/lnsync.tar
controller_tar=$CACHE/lnsync-controller.tar
inputs=$( {
  hash_files Dockerfile .dockerignore pyproject.toml README.md lnsync services
  image_id "$PYTHON_IMAGE"
} | sha256sum | cut -d' ' -f1)
if up_to_date lnsync "$LNSYNC_IMAGE" "$lnsync_tar" "$inputs" &&
   up_to_date controller "$CONTROLLER_IMAGE" "$controller_tar" "$inputs"; then
  say "$LNSYNC_IMAGE and $CONTROLLER_IMAGE are up to date"
else
  # Two targets of one Dockerfile: the second build reuses the first one's layers.
  say "building $LNSYNC_IMAGE from Dockerfile"
  logged build-lnsync.log B bud --layers --pull-never --isolation chroot "${pip_mounts[@]}" \
    -f "$ROOT/Dockerfile" -t "$LNSYNC_IMAGE" "$ROOT"
  say "building $CONTROLLER_IMAGE from Dockerfile --target controller"
  logged build-controller.log B bud --layers --pull-never --isolation chroot "${pip_mounts[@]}" \
    -f "$ROOT/Dockerfile" --target controller -t "$CONTROLLER_IMAGE" "$ROOT"
  export_image "$LNSYNC_IMAGE" "$lnsync_tar"
  export_image "$CONTROLLER_IMAGE" "$controller_tar"
  built lnsync "$LNSYNC_IMAGE" "$lnsync_tar" "$inputs"
  built controller "$CONTROLLER_IMAGE" "$controller_tar" "$inputs"
fi

# --- PostgreSQL --------------------------------------------------------------------------------
postgres_tar=$CACHE/lnsync-postgres.tar
inputs=$( {
  hash_files images/postgres
  image_id "$DEBIAN_IMAGE"
} | sha256sum | cut -d' ' -f1)
if up_to_date postgres "$POSTGRES_IMAGE" "$postgres_tar" "$inputs"; then
  say "$POSTGRES_IMAGE is up to date"
else
  say "building $POSTGRES_IMAGE from images/postgres/Dockerfile"
  logged build-postgres.log B bud --layers --pull-never --isolation chroot \
    -f "$ROOT/images/postgres/Dockerfile" -t "$POSTGRES_IMAGE" "$ROOT/images/postgres"
  export_image "$POSTGRES_IMAGE" "$postgres_tar"
  built postgres "$POSTGRES_IMAGE" "$postgres_tar" "$inputs"
fi

# --- pause (optional) --------------------------------------------------------------------------
pause_tar=$CACHE/pause.tar
if [ -x "$K8S_BIN/pause" ]; then
  inputs=$(sha256sum <"$K8S_BIN/pause" | cut -d' ' -f1)
  if up_to_date pause "$PAUSE_IMAGE" "$pause_tar" "$inputs"; then
    say "$PAUSE_IMAGE is up to date"
  else
    say "building $PAUSE_IMAGE from $K8S_BIN/pause"
    c=$(B from scratch)
    containers+=("$c")
    B copy --quiet --chmod 0755 "$c" "$K8S_BIN/pause" /pause
    B config --os linux --arch amd64 --entrypoint '["/pause"]' --user 65535:65535 "$c"
    B commit --quiet --rm "$c" "$PAUSE_IMAGE" >/dev/null
    containers=()
    export_image "$PAUSE_IMAGE" "$pause_tar"
    built pause "$PAUSE_IMAGE" "$pause_tar" "$inputs"
  fi
elif [ -f "$pause_tar" ]; then
  say "no $K8S_BIN/pause now: keeping the pause image built from it earlier"
else
  say "no $K8S_BIN/pause (scripts/build-kube.sh makes it): pause image skipped"
fi

# No `buildah rmi --prune`: the layer cache is made of untagged images, which it would delete. Older
# builds' layers stay in the storage; rm -rf the cache directory to reclaim the space.

# --- report ------------------------------------------------------------------------------------
# Uncompressed size: the sum of the image's layers as stored (what `docker images` shows).
image_size() {
  B inspect --type image "$1" | python3 -c '
import json, sys
info = json.load(sys.stdin)
print(sum(layer.get("size", 0) for layer in json.loads(info["Manifest"])["layers"]))'
}
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }
echo
printf '%-40s %12s  %s\n' IMAGE UNCOMPRESSED ARCHIVE
for pair in "$PYTHON_IMAGE:" "$LNSYNC_IMAGE:$lnsync_tar" "$CONTROLLER_IMAGE:$controller_tar" \
  "$DEBIAN_IMAGE:" "$POSTGRES_IMAGE:$postgres_tar" "$PAUSE_IMAGE:$pause_tar"; do
  tar=${pair##*:}
  image=${pair%:*}
  have_image "$image" || continue
  [ -z "$tar" ] || [ -f "$tar" ] || continue
  size=$(image_size "$image")
  printf '%-40s %12s  %s\n' "${image#docker.io/}" "$(mb "$size")" "${tar:-(base stand-in)}"
  if [ "$image" = "$LNSYNC_IMAGE" ] && [ "$size" -gt 250000000 ]; then
    over_budget=$size
  fi
done
if [ -n "${over_budget:-}" ]; then
  echo "warning: ${LNSYNC_IMAGE#docker.io/} is $(mb "$over_budget"), over its 250 MB budget (docs/kubernetes.md)" >&2
fi
echo
echo "built in $(($(date +%s) - start)) s; import into a node's containerd with:"
echo "  ctr -n k8s.io images import $lnsync_tar   # and the others"
