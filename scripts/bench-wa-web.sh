#!/usr/bin/env bash
# Benchmarks a real worker through the fake WhatsApp Web (examples/wa_web_bench.rs): messages
# per second and latency from an incoming message to the sent quoted reply, with release
# builds of flowhq and the benchmark and real headless Chromium. Prints a Markdown table for
# docs/benchmarks.md.
#
# Usage: scripts/bench-wa-web.sh [CHATS] [PER_CHAT] [PACED_RATE] [PACED_SECS]
# Needs: chromium (apt-get install -y chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin flowhq --example wa_web_bench >&2
exec target/release/examples/wa_web_bench "$@"
