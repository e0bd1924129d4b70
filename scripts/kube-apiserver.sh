#!/usr/bin/env bash
# Start or stop etcd + kube-apiserver on loopback for tests (binaries from build-kube-apiserver.sh).
#
# usage: scripts/kube-apiserver.sh start RUN_DIR    -> RUN_DIR/kubeconfig (admin), prints readiness time
#        scripts/kube-apiserver.sh stop RUN_DIR     -> stops both and removes RUN_DIR
#
# Environment: LNSYNC_K8S_BIN (default ~/.cache/lnsync/k8s), KAPI_PORT (16443), ETCD_PORT (12379),
# ETCD_PEER_PORT (12380), KAPI_TOKEN (admin bearer token). Extra users: lines of
# RUN_DIR/extra-tokens.csv ("token,user,uid,\"group1,group2\"") are added to the token file, so a
# test can act as a ServiceAccount and exercise the chart's RBAC for real.
#
# There is no scheduler, kubelet or controller-manager: objects are stored and validated, pods never
# run. The ServiceAccount admission plugin is off because no controller creates "default" accounts.
set -euo pipefail

cmd=${1:?usage: kube-apiserver.sh start|stop RUN_DIR}
R=$(realpath -m "${2:?usage: kube-apiserver.sh start|stop RUN_DIR}")

stop() {
  # The apiserver first: stopped after etcd it hangs ~15 s retrying its storage.
  for p in apiserver etcd; do
    f="$R/$p.pid"
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
  done
  rm -rf "$R"
}

start() {
  local bin=${LNSYNC_K8S_BIN:-$HOME/.cache/lnsync/k8s}
  local port=${KAPI_PORT:-16443} etcd_port=${ETCD_PORT:-12379} peer_port=${ETCD_PEER_PORT:-12380}
  local token=${KAPI_TOKEN:-lnsync-test-admin}
  local t0
  t0=$(date +%s%N)
  for b in etcd kube-apiserver; do
    [ -x "$bin/$b" ] || { echo "no $bin/$b: run scripts/build-kube.sh" >&2; exit 1; }
  done
  mkdir -p "$R"
  [ -f "$R/sa.key" ] || openssl genrsa -out "$R/sa.key" 2048 2>/dev/null
  echo "$token,admin,admin,system:masters" > "$R/tokens.csv"
  [ -f "$R/extra-tokens.csv" ] && cat "$R/extra-tokens.csv" >> "$R/tokens.csv"

  "$bin/etcd" --data-dir "$R/etcd" --name default \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "default=http://127.0.0.1:$peer_port" --unsafe-no-fsync >"$R/etcd.log" 2>&1 &
  echo $! >"$R/etcd.pid"

  "$bin/kube-apiserver" --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --secure-port="$port" --insecure-port=0 --cert-dir="$R/certs" \
    --token-auth-file="$R/tokens.csv" --authorization-mode=RBAC --anonymous-auth=false \
    --service-cluster-ip-range=10.96.0.0/16 \
    --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$R/sa.key" \
    --service-account-signing-key-file="$R/sa.key" \
    --disable-admission-plugins=ServiceAccount >"$R/apiserver.log" 2>&1 &
  echo $! >"$R/apiserver.pid"

  cat >"$R/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "https://127.0.0.1:$port", certificate-authority: "$R/certs/apiserver.crt"}}]
users: [{name: admin, user: {token: "$token"}}]
contexts: [{name: local, context: {cluster: local, user: admin, namespace: default}}]
current-context: local
EOF
  for _ in $(seq 1 240); do
    if [ "$(curl -sk -H "Authorization: Bearer $token" "https://127.0.0.1:$port/readyz" 2>/dev/null)" = ok ]; then
      echo "kube-apiserver ready in $((($(date +%s%N) - t0) / 1000000)) ms; KUBECONFIG=$R/kubeconfig"
      return 0
    fi
    kill -0 "$(cat "$R/apiserver.pid")" 2>/dev/null || break
    sleep 0.25
  done
  echo "kube-apiserver did not become ready; last lines of $R/apiserver.log:" >&2
  tail -20 "$R/apiserver.log" >&2
  stop
  exit 1
}

case $cmd in
  start) start ;;
  stop) stop ;;
  *) echo "usage: kube-apiserver.sh start|stop RUN_DIR" >&2; exit 2 ;;
esac
