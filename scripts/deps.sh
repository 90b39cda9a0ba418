#!/usr/bin/env bash
# Installs what flowhq's build and tests need on a Debian machine, skipping what is present.
# Usage: scripts/deps.sh [run|test|deb]
#   run: what the daemon needs; test: also the test tools; deb: what `make deb` needs
set -euo pipefail

mode=${1:-test}
need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# chromium-headless-shell: the smaller browser `[worker] browser = "auto"` prefers; the tests
# run the worker tests on both.
pkgs=(git ca-certificates chromium chromium-headless-shell)
if [ "$mode" = deb ]; then
  pkgs=(dpkg-dev binutils)
fi
if [ "$mode" = test ]; then
  pkgs+=(postgresql mandoc groff nginx procps psmisc util-linux mount)
  # scripts/pg.sh makes the test cluster's throwaway CA and TLS certificate with openssl.
  pkgs+=(openssl)
  # The resource fault tests (tests/daemon/resource_faults.rs): an ext4 image (mkfs.ext4, e2fsck).
  pkgs+=(e2fsprogs)
  # The package test (tests/system/package.rs): build, lint, install and check the .deb and its unit.
  pkgs+=(dpkg-dev binutils lintian adduser systemd man-db logrotate)
  # The monitoring test (tests/daemon/monitoring.rs): promtool checks the alert rules and a
  # live /metrics scrape.
  pkgs+=(prometheus)
fi
for p in "${pkgs[@]}"; do have "$p" || need+=("$p"); done

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing packages: ${need[*]} (run as root, or install them with apt-get)" >&2
    exit 1
  fi
  echo "deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "deps: cargo is not installed (rustup.rs)" >&2; exit 1; }
