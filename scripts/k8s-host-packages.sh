#!/usr/bin/env bash
# Install the Debian packages the cluster tier and `make image` need, when any is missing (root, apt).
# containerd 1.6 speaks CRI v1alpha2, the API kubelet 1.20 uses; the CNI plugins land in /usr/lib/cni.
set -euo pipefail
PKGS=(containerd runc containernetworking-plugins iptables conntrack socat iproute2 util-linux
  debootstrap buildah umoci skopeo openssl)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep "install ok installed" >/dev/null || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing Debian packages: ${missing[*]} (install them as root: apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
