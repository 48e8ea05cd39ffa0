#!/usr/bin/env bash
# Side-by-side: barsync copy vs rsync through the same sshd on 127.0.0.1, alternating runs,
# medians of N (default 3). Prints a table with same-run ratios and bytes on the wire.
#   benches/side-by-side.sh [N]
# Workloads (issue 6): W1 one new 1 GiB incompressible file; W2 the same file after 100 scattered
# 100 KiB rewrites (also with --inplace on both sides, as Barman runs rsync for sync-backup);
# W5 10,000 files of 2 KiB, initial copy and resync with nothing changed.
# Needs: openssh-server, rsync, and barsync built with `cargo build --release -p barsync`.
set -euo pipefail
runs=${1:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
barsync=${BARSYNC_BIN:-$here/target/release/barsync}
[ -x "$barsync" ] || { echo "build barsync first: cargo build --release -p barsync" >&2; exit 2; }
work=$(mktemp -d /tmp/barsync-bench.XXXXXX)
trap 'kill $(cat "$work/sshd.pid" 2>/dev/null) 2>/dev/null; rm -rf "$work"' EXIT

# --- a private sshd on a free port ---
ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$work/client_key"
cp "$work/client_key.pub" "$work/authorized_keys"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/sshd_config" <<CFG
Port $port
ListenAddress 127.0.0.1
HostKey $work/host_key
AuthorizedKeysFile $work/authorized_keys
PidFile $work/sshd.pid
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
PasswordAuthentication no
Subsystem sftp internal-sftp
CFG
/usr/sbin/sshd -f "$work/sshd_config"
echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$work/host_key.pub")" > "$work/known_hosts"
ssh_cmd="ssh -F none -p $port -i $work/client_key -o UserKnownHostsFile=$work/known_hosts -o StrictHostKeyChecking=yes"
for _ in $(seq 50); do $ssh_cmd -o BatchMode=yes "$(whoami)@127.0.0.1" true 2>/dev/null && break; sleep 0.1; done
host="$(whoami)@127.0.0.1"

# --- data ---
mkdir -p "$work/src" "$work/small"
python3 - "$work" <<'PY'
import os, random, sys
work = sys.argv[1]
random.seed(1)
with open(f"{work}/src/big", "wb") as f:
    for _ in range(1024):
        f.write(random.randbytes(1 << 20))
for i in range(10000):
    with open(f"{work}/small/f{i:05d}", "wb") as f:
        f.write(random.randbytes(2048))
PY
cp "$work/src/big" "$work/big.v1"
python3 - "$work" <<'PY'
import random, sys
work = sys.argv[1]
random.seed(2)
size = 1 << 30
with open(f"{work}/big.v2", "wb") as out, open(f"{work}/big.v1", "rb") as src:
    data = bytearray(src.read())
for region in range(100):
    start = region * (size // 100) + random.randrange(size // 100 - 102400)
    data[start:start + 102400] = random.randbytes(102400)
open(f"{work}/big.v2", "wb").write(data)
PY

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
wire_rsync() { awk '/^sent /{s=$2; gsub(",","",s)} /^sent /{r=$5; gsub(",","",r)} END {print s+r}'; }
wire_barsync() { awk '{for(i=1;i<=NF;i++){if($(i+1)=="MiB" && $(i+2)=="received,"){r=$i} if($(i+1)=="MiB" && $(i+2)=="sent,"){s=$i}}} END {printf "%d\n", (r+s)*1048576}'; }

# Each workload: a setup that resets the destination, then the two commands.
run_workload() {
    local name=$1 setup=$2 bcmd=$3 rcmd=$4
    local bt=() rt=() bw=0 rw=0
    for i in $(seq "$runs"); do
        eval "$setup"; sync
        t0=$(now); out=$(eval "$bcmd" 2>&1); t1=$(now)
        bt+=("$(echo "$t1 - $t0" | bc)"); bw=$(echo "$out" | wire_barsync)
        eval "$setup"; sync
        t0=$(now); out=$(eval "$rcmd" 2>&1); t1=$(now)
        rt+=("$(echo "$t1 - $t0" | bc)"); rw=$(echo "$out" | wire_rsync)
    done
    local bm rm
    bm=$(printf '%s\n' "${bt[@]}" | median); rm=$(printf '%s\n' "${rt[@]}" | median)
    printf '| %-28s | %8.2f s | %8.2f s | %6.2fx | %12s | %12s |\n' "$name" "$bm" "$rm" "$(echo "$rm / $bm" | bc -l)" "$bw" "$rw"
}

B="$barsync copy --transport ${BARSYNC_TRANSPORT:-auto} --remote-barsync $barsync -e '$ssh_cmd'"
R="rsync -e '$ssh_cmd' --stats"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $("$barsync" --version); $(rsync --version | head -1 | cut -c1-30); $(ssh -V 2>&1)"
echo "medians of $runs alternating runs; ratio = rsync time / barsync time; wire = bytes sent + received"
echo "| workload                     |  barsync |    rsync |  ratio | barsync wire |   rsync wire |"
echo "|------------------------------|----------|----------|--------|--------------|--------------|"
run_workload "W1 new 1 GiB file" "rm -rf $work/dst; mkdir -p $work/dst" \
    "$B $host:$work/src/big $work/dst/big" "$R $host:$work/src/big $work/dst/big"
run_workload "W2 1 GiB, 1% scattered" "rm -rf $work/dst; mkdir -p $work/dst; cp $work/big.v1 $work/dst/big; touch -d 2020-01-01 $work/dst/big; cp $work/big.v2 $work/src/big" \
    "$B $host:$work/src/big $work/dst/big" "$R -t $host:$work/src/big $work/dst/big"
run_workload "W2 same, both --inplace" "rm -rf $work/dst; mkdir -p $work/dst; cp $work/big.v1 $work/dst/big; touch -d 2020-01-01 $work/dst/big; cp $work/big.v2 $work/src/big" \
    "$B --inplace $host:$work/src/big $work/dst/big" "$R -t --inplace $host:$work/src/big $work/dst/big"
run_workload "W5 10,000 x 2 KiB initial" "rm -rf $work/dst; mkdir -p $work/dst" \
    "$B -r $host:$work/small/ $work/dst/" "$R -rt $host:$work/small/ $work/dst/"
run_workload "W5 10,000 x 2 KiB resync" "rm -rf $work/dst; cp -a $work/small $work/dst" \
    "$B -r $host:$work/small/ $work/dst/" "$R -rt $host:$work/small/ $work/dst/"
