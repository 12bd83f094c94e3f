#!/usr/bin/env bash
# make demo: a throwaway etcd with Kubernetes-like data and a kubeadm-like
# host tree, a local directory target, then the commands an operator runs.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
DEMO=$PWD/demo
rm -rf "$DEMO" && mkdir -p "$DEMO"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo $((20000 + RANDOM % 20000)); }
CLIENT=$(port); PEER=$(port)
"$BIN/etcd" --name demo --data-dir "$DEMO/etcd-data" \
  --listen-client-urls "http://127.0.0.1:$CLIENT" --advertise-client-urls "http://127.0.0.1:$CLIENT" \
  --listen-peer-urls "http://127.0.0.1:$PEER" --initial-advertise-peer-urls "http://127.0.0.1:$PEER" \
  --initial-cluster "demo=http://127.0.0.1:$PEER" --log-level warn >"$DEMO/etcd.log" 2>&1 &
ETCD_PID=$!
trap 'kill $ETCD_PID 2>/dev/null; wait $ETCD_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do "$BIN/etcdctl" --endpoints "http://127.0.0.1:$CLIENT" endpoint health >/dev/null 2>&1 && break; sleep 0.1; done

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
echo "== a throwaway etcd on 127.0.0.1:$CLIENT and a kubeadm-like host under demo/host"
go run ./hack/demofixture -endpoint "http://127.0.0.1:$CLIENT" -size-mib 16 -root "$DEMO/host"

printf '\n\033[1m$ %s\033[0m\n' "kdr keys generate --out demo/operator.key"
"$BIN/kdr" keys generate --out "$DEMO/operator.key" | tee "$DEMO/recipient.txt"
printf '\n\033[1m$ %s\033[0m\n' "kdr keys generate --signing --out demo/signing.key"
"$BIN/kdr" keys generate --signing --out "$DEMO/signing.key" | tee "$DEMO/signing.pub"
mkdir -p "$DEMO/usb"
cat > "$DEMO/kdr.yaml" <<YAML
# Demo config: plain http etcd on loopback (insecure: true says so out loud).
clusters:
  - name: demo
    etcd:
      endpoints: [http://127.0.0.1:$CLIENT]
      insecure: true
    # state: kubeadm's file sets by default: /etc/kubernetes/pki, the
    # kubeconfigs and manifests, haproxy and keepalived; the demo reads
    # them under demo/host (--root).
    inventory:
      apiEndpoint: https://10.0.0.10:6443
      hosts: [{name: cp1, ip: 10.0.0.11, roles: [control-plane, etcd]}]
encryption:
  recipients: [$(cat "$DEMO/recipient.txt")]
# Only sets signed by a trusted key are listed, verified, restored or pruned.
signing:
  keyFile: $DEMO/signing.key
  trustedKeys: ["$(cat "$DEMO/signing.pub")"]
targets:
  - name: usb
    local: {path: $DEMO/usb}
retention: {keepLast: 3}
YAML
echo "wrote demo/kdr.yaml"
step "$BIN/kdr" --config "$DEMO/kdr.yaml" backup --root "$DEMO/host"
step "$BIN/kdr" --config "$DEMO/kdr.yaml" backup --root "$DEMO/host"
step "$BIN/kdr" --config "$DEMO/kdr.yaml" list
step "$BIN/kdr" --config "$DEMO/kdr.yaml" verify latest
step "$BIN/kdr" --config "$DEMO/kdr.yaml" verify --identity "$DEMO/operator.key" latest
step "$BIN/kdr" --config "$DEMO/kdr.yaml" prune
step "$BIN/kdr" --config "$DEMO/kdr.yaml" drill --identity "$DEMO/operator.key"
step "$BIN/kdr" --config "$DEMO/kdr.yaml" restore plan --identity "$DEMO/operator.key" --topology systemd
step "$BIN/kdr" --config "$DEMO/kdr.yaml" runbook --format md --out "$DEMO/runbook.md" --identity "$DEMO/operator.key" --topology systemd
step "$BIN/kdr" --config "$DEMO/kdr.yaml" runbook --format pdf --out "$DEMO/runbook.pdf" --identity "$DEMO/operator.key" --topology systemd
if command -v pdftotext >/dev/null; then pdftotext "$DEMO/runbook.pdf" - | grep -c 'restore-etcd' | sed 's/^/restore-etcd appears on the printed runbook this many times: /'; fi

echo
echo "== done: the backups are in demo/usb, the identity that opens them is demo/operator.key,"
echo "   the printable runbook is demo/runbook.pdf (and demo/runbook.md),"
echo "   the drill's report is beside the backups in demo/usb/demo/drills,"
echo "   and demo/usb/kit is the offline recovery kit (kit/README.txt says how to use it)"
