#!/usr/bin/env bash
# The side-by-side benchmark is `barsync bench` now (issue 6); this wrapper passes its flags on,
# e.g. benches/side-by-side.sh --workloads W1,W2 --runs 3. BARSYNC_BIN picks the binary.
exec "${BARSYNC_BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/barsync}" bench "$@"
