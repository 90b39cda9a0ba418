# Entry points for people and CI. CI runs `make test` (through .ci/run).
.PHONY: run test lint build bench fmt deb

# Run the daemon on the embedded defaults: SQLite in ./.flowhq, tenant files in ./tenants.d,
# status on 127.0.0.1:9780 (installs what is missing first; Ctrl-C stops it and its workers).
run:
	scripts/deps.sh run
	cargo build --release --locked
	./target/release/flowhq check tenants.d
	./target/release/flowhq daemon

# Everything CI checks: lints, man pages, unit and integration tests on real PostgreSQL,
# SQLite and Chromium (the tests marked `#[ignore = "needs ..."]` included). Installs missing
# Debian packages and starts a throwaway PostgreSQL.
test:
	scripts/test.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets --locked -- -D warnings

fmt:
	cargo fmt --all

build:
	cargo build --release --locked

# The Debian package, target/debian/flowhq_VERSION_ARCH.deb, from the release binary (the same
# script packages the test build in tests/system/package.rs). Install it with `dpkg -i` or `apt install ./...deb`.
deb:
	scripts/deps.sh deb
	cargo build --release --locked
	packaging/build-deb.sh target/release/flowhq target/debian

# The quick benchmarks, a few minutes each: loading tenant files, the state store, the status
# endpoint beside nginx. The long ones (the daemon beside PM2 and supervisord, GitOps, the bot
# through Chromium, the endpoint under load) are scripts/bench-*.sh of their own;
# docs/benchmarks.md names the command behind every figure.
bench:
	scripts/bench-config.sh
	scripts/bench-store.sh
	scripts/bench-status.sh
