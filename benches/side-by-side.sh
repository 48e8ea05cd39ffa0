#!/usr/bin/env bash
# The side-by-side benchmark is `barsync bench` now (issue 6); this wrapper passes its flags on,
# e.g. benches/side-by-side.sh --workloads W1,W2 --runs 3. BARSYNC_BIN picks the binary; without
# it, target/release/barsync is built first with the `bench` feature (the harness is not in
# default builds).
set -euo pipefail
if [ -z "${BARSYNC_BIN:-}" ]; then
    root=$(cd "$(dirname "$0")/.." && pwd)
    (cd "$root" && cargo build --release --quiet -p barsync --features bench)
    BARSYNC_BIN=$root/target/release/barsync
fi
exec "$BARSYNC_BIN" bench "$@"
