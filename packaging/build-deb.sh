#!/usr/bin/env bash
# Builds the flowhq Debian package from an already compiled binary: stages the files, writes
# the control files and runs `dpkg-deb --build`. `make deb` calls it with the release binary and
# tests/system/package.rs with the test build, so both packages come from this one script.
#
# Usage: packaging/build-deb.sh BINARY OUTDIR [VERSION]
#   VERSION defaults to the crate version from Cargo.toml plus the Debian revision "-1".
# Prints the path of the .deb. Needs dpkg-deb, dpkg-shlibdeps (dpkg-dev), strip and gzip.
# FLOWHQ_DEB_FAST=1 compresses with gzip -1 instead of xz: the tests set it, because xz takes
# most of a minute on the large unoptimised test binary.
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
	echo "usage: $0 BINARY OUTDIR [VERSION]" >&2
	exit 64
fi
binary=$1
outdir=$2
src=$(cd "$(dirname "$0")/.." && pwd)
pkg=$src/packaging
[ -x "$binary" ] || { echo "build-deb: $binary is not an executable" >&2; exit 66; }

if [ $# -eq 3 ]; then
	version=$3
else
	upstream=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$src/Cargo.toml" | head -n1)
	version="$upstream-1"
fi
arch=$(dpkg --print-architecture)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
# dpkg-deb wants the staging root to be 0755 (mktemp made it 0700).
chmod 0755 "$stage"
umask 022

# The binary, without debug sections (as dh_strip does).
install -D -m 0755 "$binary" "$stage/usr/bin/flowhq"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$stage/usr/bin/flowhq"

install -D -m 0644 "$pkg/systemd/flowhq.service" "$stage/usr/lib/systemd/system/flowhq.service"
install -D -m 0644 "$pkg/etc/flowhq.toml" "$stage/etc/flowhq/flowhq.toml"
install -d -m 0755 "$stage/etc/flowhq/tenants.d"
install -D -m 0644 "$pkg/logrotate/flowhq" "$stage/etc/logrotate.d/flowhq"
install -D -m 0644 "$pkg/nginx/flowhq.conf" "$stage/etc/nginx/sites-available/flowhq"
# The Grafana dashboard and the Prometheus alert rules with their unit tests (docs/monitoring.md).
install -d -m 0755 "$stage/usr/share/flowhq/monitoring"
install -m 0644 "$pkg"/monitoring/flowhq-dashboard.json "$pkg"/monitoring/flowhq-rules.yml \
	"$pkg"/monitoring/flowhq-rules.test.yml "$stage/usr/share/flowhq/monitoring/"

# Manual pages, compressed reproducibly (no name or time stamp in the gzip header).
for page in "$src"/man/*.[1-8]; do
	section=${page##*.}
	install -d -m 0755 "$stage/usr/share/man/man$section"
	gzip -9nc "$page" >"$stage/usr/share/man/man$section/$(basename "$page").gz"
done

doc=$stage/usr/share/doc/flowhq
install -D -m 0644 "$pkg/debian/copyright" "$doc/copyright"
gzip -9nc "$pkg/debian/changelog" >"$doc/changelog.Debian.gz"
install -d -m 0755 "$doc/examples/tenants.d"
install -m 0644 "$src"/tenants.d/*.toml "$doc/examples/tenants.d/"
if [ -s "$pkg/debian/lintian-overrides" ]; then
	install -D -m 0644 "$pkg/debian/lintian-overrides" "$stage/usr/share/lintian/overrides/flowhq"
fi
chmod 0644 "$stage"/usr/share/man/man*/*.gz "$doc/changelog.Debian.gz"

# Control files. Library dependencies come from dpkg-shlibdeps, which insists on running in a
# source tree, so it gets a minimal one.
install -d -m 0755 "$stage/DEBIAN"
shl=$(mktemp -d)
mkdir "$shl/debian"
printf 'Source: flowhq\n\nPackage: flowhq\nArchitecture: any\n' >"$shl/debian/control"
shlibs=$(cd "$shl" && dpkg-shlibdeps -O "$stage/usr/bin/flowhq" | sed -n 's/^shlibs:Depends=//p')
rm -rf "$shl"
[ -n "$shlibs" ] || { echo "build-deb: dpkg-shlibdeps found no library dependencies" >&2; exit 1; }
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
	-e "s/@SHLIBS@/$shlibs/" "$pkg/debian/control" >"$stage/DEBIAN/control"
(cd "$stage" && find etc -type f | sort | sed 's|^|/|') >"$stage/DEBIAN/conffiles"
(cd "$stage" && find usr -type f -print0 | sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
install -m 0755 "$pkg/debian/postinst" "$pkg/debian/prerm" "$pkg/debian/postrm" "$stage/DEBIAN/"
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/conffiles" "$stage/DEBIAN/md5sums"

mkdir -p "$outdir"
deb="$outdir/flowhq_${version}_${arch}.deb"
compress=(-Zxz)
if [ "${FLOWHQ_DEB_FAST:-}" = 1 ]; then
	compress=(-Zgzip -z1)
fi
dpkg-deb --root-owner-group "${compress[@]}" --build "$stage" "$deb" >/dev/null
echo "$deb"
