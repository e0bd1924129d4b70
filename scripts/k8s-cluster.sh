#!/usr/bin/env bash
# A real single-node Kubernetes v1.20 cluster, offline, inside a network namespace of its own.
#
# usage: scripts/k8s-cluster.sh up        start it (idempotent); prints the KUBECONFIG to use
#        scripts/k8s-cluster.sh down      stop everything it started and remove its state
#        scripts/k8s-cluster.sh exec CMD  run CMD inside the cluster's network (KUBECONFIG set)
#        scripts/k8s-cluster.sh status    say whether it runs
#
# What runs: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, a kubelet on containerd +
# runc + the CNI bridge plugin, kube-proxy (iptables) and scripts/k8s_node_agent.py (cluster DNS for
# Service names, and hostPath volumes for PersistentVolumeClaims: the two things a bare cluster
# lacks). Binaries from scripts/build-kube.sh (LNSYNC_K8S_BIN), images from scripts/build-image.sh
# (LNSYNC_IMAGE_CACHE), imported into containerd at start: no registry is ever asked.
#
# Everything lives in the network namespace $NETNS: its bridge, routes and iptables rules die with
# it, and it has no route out (the default route ends in a bridge with no ports), so no pod traffic can leave.
# The daemons share the host's mount namespace (entered with nsenter --net, not `ip netns exec`),
# because the kubelet's volume mounts must be seen by containerd. Node address 10.213.0.1, pods
# 10.214.0.0/24, Services 10.96.0.0/16. One cluster per machine (flock): the kubelet and containerd
# use a few fixed host paths (/run/containerd/s, the kubepods cgroups, /var/run/netns/cni-*).
#
# For a person: `up` also forwards 127.0.0.1:$K8S_API_PORT on the host to the API server (socat), so
# kubectl/helm work from a normal shell with $RUN/kubeconfig; `kubectl port-forward` reaches pods.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(realpath -m "${LNSYNC_K8S_BIN:-$HOME/.cache/lnsync/k8s}")
IMAGES=$(realpath -m "${LNSYNC_IMAGE_CACHE:-$HOME/.cache/lnsync/images}")
RUN=$(realpath -m "${LNSYNC_K8S_RUN:-/tmp/lnsync-k8s}")
NETNS=${LNSYNC_K8S_NETNS:-lnsync-k8s}
API_PORT=${K8S_API_PORT:-16443}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
NODE_IP=10.213.0.1
POD_CIDR=10.214.0.0/24
SERVICE_CIDR=10.96.0.0/16
NODE_NAME=lnsync-node
TOKEN=lnsync-k8s-admin
LOCK=/run/lnsync-k8s.lock
NSX=(nsenter "--net=/run/netns/$NETNS")

log() { echo "[k8s $(date +%H:%M:%S)] $*" >&2; }
die() { log "error: $*"; exit 1; }

in_ns() { "${NSX[@]}" "$@"; }

# Start a daemon inside the namespace, in its own process group; its pid goes to $RUN/pids/NAME.
spawn() {
  local name=$1; shift
  setsid "${NSX[@]}" "$@" >"$RUN/logs/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$RUN/pids/$name"
}

alive() { [ -f "$RUN/pids/$1" ] && kill -0 "$(cat "$RUN/pids/$1")" 2>/dev/null; }

wait_for() { # wait_for SECONDS WHAT CMD...
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $end ]; then
      log "timed out after ${secs}s waiting for $what"
      return 1
    fi
    sleep 0.5
  done
}

kubectl_() { in_ns "$BIN/kubectl" --kubeconfig "$RUN/kubeconfig" "$@"; }

network() {
  if ! ip netns list | grep -w "$NETNS" >/dev/null; then ip netns add "$NETNS"; fi
  in_ns ip link set lo up
  if ! in_ns ip link show lnsync0 >/dev/null 2>&1; then
    in_ns ip link add lnsync0 type bridge  # a bridge with no ports: no dummy module on these VMs
    in_ns ip addr add "$NODE_IP/32" dev lnsync0
    in_ns ip link set lnsync0 up
    # Unknown destinations (and Service IPs before kube-proxy rewrites them) go into that bridge and
    # are dropped (the bridge has no ports): nothing can leave the namespace.
    in_ns ip route add default dev lnsync0
  fi
  in_ns sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
  in_ns sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1
  in_ns sysctl -qw net.ipv4.conf.all.route_localnet=1
}

certs() {
  local c=$RUN/pki
  mkdir -p "$c"
  [ -f "$c/ca.crt" ] && return 0
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=lnsync-k8s-ca" \
    -keyout "$c/ca.key" -out "$c/ca.crt" 2>/dev/null
  cat >"$c/apiserver.ext" <<EOF
subjectAltName=DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:$NODE_IP,IP:10.96.0.1,IP:127.0.0.1
extendedKeyUsage=serverAuth
EOF
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout "$c/apiserver.key" \
    -out "$c/apiserver.csr" 2>/dev/null
  openssl x509 -req -in "$c/apiserver.csr" -CA "$c/ca.crt" -CAkey "$c/ca.key" -CAcreateserial \
    -days 30 -extfile "$c/apiserver.ext" -out "$c/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$c/sa.key" 2048 2>/dev/null
  echo "$TOKEN,admin,admin,system:masters" >"$c/tokens.csv"
}

kubeconfig() { # kubeconfig FILE SERVER
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: lnsync-k8s, cluster: {server: "$2", certificate-authority: "$RUN/pki/ca.crt"}}]
users: [{name: admin, user: {token: "$TOKEN"}}]
contexts: [{name: lnsync-k8s, context: {cluster: lnsync-k8s, user: admin, namespace: default}}]
current-context: lnsync-k8s
EOF
}

containerd_config() {
  mkdir -p "$RUN/cni/net.d" "$RUN/containerd"
  cat >"$RUN/cni/net.d/10-lnsync.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "lnsync", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$RUN/cni/ipam", "ranges": [[{"subnet": "$POD_CIDR"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
]}
EOF
  cat >"$RUN/containerd/config.toml" <<EOF
version = 2
root = "$RUN/containerd/root"
state = "$RUN/containerd/state"
[grpc]
  address = "$RUN/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/lnsync/pause:3.4"
  # This VM refuses negative oom_score_adj values, even for root (docs/kubernetes.md).
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$RUN/cni/net.d"
EOF
}

import_images() {
  local a n=0
  for a in "$IMAGES"/*.tar; do
    [ -f "$a" ] || continue
    in_ns ctr -a "$RUN/containerd.sock" -n k8s.io images import --all-platforms "$a" >/dev/null
    n=$((n + 1))
  done
  [ $n -gt 0 ] || die "no image archives in $IMAGES: run scripts/build-image.sh (make image)"
  # grep reads to the end (no -q): under pipefail, ctr killed by SIGPIPE after an early match fails the check.
  in_ns ctr -a "$RUN/containerd.sock" -n k8s.io images ls -q | grep 'lnsync/pause:3.4' >/dev/null ||
    die "no pause image (docker.io/lnsync/pause:3.4) among the imported images"
}

up() {
  local t0=$SECONDS c
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl pause; do
    [ -x "$BIN/$c" ] || die "no $BIN/$c: run scripts/build-kube.sh (make test-k8s builds it once)"
  done
  command -v containerd >/dev/null && command -v runc >/dev/null && [ -x /usr/lib/cni/bridge ] ||
    die "containerd, runc and containernetworking-plugins are needed (scripts/k8s-host-packages.sh)"
  if alive kubelet && alive kube-apiserver; then
    log "already up"
    usage_hint
    return 0
  fi
  down_quietly
  mkdir -p "$RUN/pids" "$RUN/logs" "$RUN/volumes"
  network
  certs
  kubeconfig "$RUN/kubeconfig.in-cluster-network" "https://$NODE_IP:6443"
  kubeconfig "$RUN/kubeconfig" "https://127.0.0.1:$API_PORT"
  containerd_config

  log "containerd"
  spawn containerd containerd --config "$RUN/containerd/config.toml" --log-level warn
  wait_for 30 containerd in_ns ctr -a "$RUN/containerd.sock" version
  import_images &
  local importer=$!

  log "etcd, kube-apiserver"
  spawn etcd "$BIN/etcd" --data-dir "$RUN/etcd" --name default --unsafe-no-fsync \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster default=http://127.0.0.1:2380
  spawn kube-apiserver "$BIN/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
    --bind-address=0.0.0.0 --advertise-address=$NODE_IP --secure-port=6443 --insecure-port=0 \
    --tls-cert-file="$RUN/pki/apiserver.crt" --tls-private-key-file="$RUN/pki/apiserver.key" \
    --client-ca-file="$RUN/pki/ca.crt" --token-auth-file="$RUN/pki/tokens.csv" \
    --authorization-mode=Node,RBAC --anonymous-auth=false --allow-privileged=true \
    --service-cluster-ip-range=$SERVICE_CIDR --service-node-port-range=30000-32767 \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$RUN/pki/sa.key" --service-account-signing-key-file="$RUN/pki/sa.key" \
    --kubelet-preferred-address-types=InternalIP --event-ttl=10m
  # The same address a person's kubeconfig names, inside the namespace...
  spawn api-local socat TCP-LISTEN:$API_PORT,bind=127.0.0.1,fork,reuseaddr TCP:$NODE_IP:6443
  # ...and on the host's loopback, for kubectl and helm in a normal shell.
  setsid socat TCP-LISTEN:$API_PORT,bind=127.0.0.1,fork,reuseaddr \
    EXEC:"nsenter --net=/run/netns/$NETNS socat STDIO TCP\:$NODE_IP\:6443" \
    >"$RUN/logs/api-forward.log" 2>&1 </dev/null 9>&- &
  echo $! >"$RUN/pids/api-forward"
  wait_for 90 kube-apiserver kubectl_ get --raw /readyz ||
    { tail -20 "$RUN/logs/kube-apiserver.log" >&2; die "kube-apiserver did not become ready"; }

  log "controller-manager, scheduler, node agent (DNS, volumes)"
  spawn kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$RUN/kubeconfig.in-cluster-network" \
    --leader-elect=false --use-service-account-credentials=false --allocate-node-cidrs=false \
    --service-account-private-key-file="$RUN/pki/sa.key" --root-ca-file="$RUN/pki/ca.crt" \
    --cluster-signing-cert-file="$RUN/pki/ca.crt" --cluster-signing-key-file="$RUN/pki/ca.key" \
    --bind-address=127.0.0.1 --secure-port=10257 --port=0 --controllers='*,-nodeipam,-cloud-node-lifecycle'
  spawn kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$RUN/kubeconfig.in-cluster-network" \
    --leader-elect=false --bind-address=127.0.0.1 --secure-port=10259 --port=0
  spawn node-agent "$PYTHON" "$ROOT/scripts/k8s_node_agent.py" --kubeconfig "$RUN/kubeconfig.in-cluster-network" \
    --dns-listen "$NODE_IP:53" --volumes "$RUN/volumes"

  wait $importer || die "importing the images failed"
  log "kubelet, kube-proxy"
  mkdir -p "$RUN/kubelet"
  mountpoint -q "$RUN/kubelet" || mount --bind "$RUN/kubelet" "$RUN/kubelet"
  mount --make-rshared "$RUN/kubelet"
  : >"$RUN/resolv.conf"
  spawn kubelet "$BIN/kubelet" --kubeconfig="$RUN/kubeconfig.in-cluster-network" \
    --container-runtime=remote --container-runtime-endpoint="unix://$RUN/containerd.sock" \
    --runtime-request-timeout=5m --cgroup-driver=cgroupfs --fail-swap-on=false --oom-score-adj=0 \
    --root-dir="$RUN/kubelet" --cert-dir="$RUN/kubelet-pki" --node-ip=$NODE_IP \
    --hostname-override=$NODE_NAME --cluster-dns=$NODE_IP --cluster-domain=cluster.local \
    --resolv-conf="$RUN/resolv.conf" --anonymous-auth=true --authorization-mode=AlwaysAllow \
    --read-only-port=0 --healthz-port=10248 --image-gc-high-threshold=100 --image-gc-low-threshold=99 \
    --eviction-hard='memory.available<100Mi' --volume-plugin-dir="$RUN/kubelet-plugins" \
    --pod-manifest-path="$RUN/manifests" --serialize-image-pulls=false --v=1
  mkdir -p "$RUN/manifests"
  spawn kube-proxy "$BIN/kube-proxy" --kubeconfig="$RUN/kubeconfig.in-cluster-network" \
    --hostname-override=$NODE_NAME --proxy-mode=iptables --cluster-cidr=$POD_CIDR \
    --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 \
    --conntrack-tcp-timeout-close-wait=0 --metrics-bind-address=127.0.0.1:10249 \
    --healthz-bind-address=127.0.0.1:10256

  wait_for 120 "node $NODE_NAME Ready" sh -c \
    "'$BIN/kubectl' --kubeconfig '$RUN/kubeconfig' get node $NODE_NAME -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True" ||
    { tail -30 "$RUN/logs/kubelet.log" >&2; die "the node did not become Ready"; }
  wait_for 60 "the default ServiceAccount" kubectl_ -n default get serviceaccount default
  kubectl_ apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: lnsync.dev/hostpath
reclaimPolicy: Delete
volumeBindingMode: Immediate
EOF
  log "cluster ready in $((SECONDS - t0)) s"
  usage_hint
}

usage_hint() {
  cat <<EOF
export KUBECONFIG=$RUN/kubeconfig
# kubectl is $BIN/kubectl (make k8s-up links it and helm into .venv/bin); reach a Service with
#   kubectl port-forward svc/NAME LOCAL_PORT:PORT
# or run a command inside the cluster's network (Service and pod IPs answer): scripts/k8s-cluster.sh exec CMD
EOF
}

# Remove everything a cluster left, running or crashed.
down_quietly() {
  local p name pids
  # Pods first: stop every container task, so that shims and pod processes exit.
  if [ -S "$RUN/containerd.sock" ] && alive containerd; then
    alive kubelet && kill "$(cat "$RUN/pids/kubelet")" 2>/dev/null || true
    for id in $(in_ns ctr -a "$RUN/containerd.sock" -n k8s.io tasks ls -q 2>/dev/null); do
      in_ns ctr -a "$RUN/containerd.sock" -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
  fi
  for name in kubelet kube-proxy node-agent kube-scheduler kube-controller-manager api-forward api-local \
    kube-apiserver etcd containerd; do
    p=$RUN/pids/$name
    [ -f "$p" ] || continue
    kill -- "-$(cat "$p")" 2>/dev/null || kill "$(cat "$p")" 2>/dev/null || true
  done
  sleep 1
  for name in "$RUN"/pids/*; do
    [ -f "$name" ] && { kill -9 -- "-$(cat "$name")" 2>/dev/null || true; rm -f "$name"; }
  done
  # Shims and whatever still runs in the pods' cgroups.
  pids=$(pgrep -f "containerd-shim-runc-v2 .*-address $RUN/containerd.sock" || true)
  [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
  for d in /sys/fs/cgroup/*/kubepods; do
    [ -d "$d" ] || continue
    find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  done
  sleep 0.5
  for d in /sys/fs/cgroup/*/kubepods; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  # Mounts under the run dir (overlay snapshots, pod volumes, the kubelet bind) and pod namespaces.
  if [ -d "$RUN" ]; then
    { grep -o " $RUN[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  fi
  # The pods' network namespaces (containerd's CNI netns files) and the cluster's own.
  for f in /run/netns/cni-*; do
    [ -e "$f" ] || continue
    umount -l "$f" 2>/dev/null || true
    rm -f "$f" 2>/dev/null || true
  done
  if [ -e "/run/netns/$NETNS" ]; then
    ip netns del "$NETNS" 2>/dev/null || { umount -l "/run/netns/$NETNS" 2>/dev/null; rm -f "/run/netns/$NETNS"; }
  fi
  rm -rf "$RUN"
}

cmd=${1:-}
case "$cmd" in
  up)
    exec 9>"$LOCK"
    flock -n 9 || die "another cluster is being started or stopped ($LOCK)"
    up
    ;;
  down)
    exec 9>"$LOCK"
    flock 9
    down_quietly
    # A full teardown leaves nothing behind: say what survived, and fail.
    left=$( { pgrep -af -- "$RUN/" || true; grep " $RUN" /proc/mounts || true;
      [ -e "/run/netns/$NETNS" ] && echo "network namespace $NETNS"; ls /run/netns 2>/dev/null | grep '^cni-' || true; } )
    if [ -n "$left" ]; then
      log "teardown left:"; echo "$left" >&2; exit 1
    fi
    log "down: nothing left"
    ;;
  exec)
    shift
    [ -e "/run/netns/$NETNS" ] || die "no cluster network: scripts/k8s-cluster.sh up"
    export KUBECONFIG=$RUN/kubeconfig LNSYNC_K8S_RUN=$RUN LNSYNC_K8S_NETNS=$NETNS
    exec "${NSX[@]}" "$@"
    ;;
  status)
    if alive kube-apiserver && alive kubelet; then echo "up: KUBECONFIG=$RUN/kubeconfig"; else echo down; exit 1; fi
    ;;
  *)
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
