# vws — two commands do all set-up on a fresh Debian machine:
#   make run    install what is needed, build, start vwsd (SQLite store in ./var)
#   make test   install what is needed, build, run every test (and each fuzz target for 5 s)
#   make fuzz   run each cargo-fuzz target (fuzz/) for FUZZ_SECS seconds (nightly + cargo-fuzz)
SHELL := /bin/bash
APT_PACKAGES := pkg-config libclang-dev libxml2-dev libxmlsec1-dev libssl-dev apache2-utils curl python3 libxenmisc4.17 \
	busybox-static cpio e2fsprogs xz-utils
CARGO ?= cargo
CONFIG ?= conf/vwsd.toml
# The shared peers and recordings: ../shared beside the clone, else /work/shared.
SHARED ?= $(shell [ -d ../shared/peers ] && echo ../shared || echo /work/shared)
# GridFTP test servers started by the tests (every target/*kit*/ with a pid file) are stopped
# after the run, pass or fail.

FUZZ_SECS ?= 60

.PHONY: run test deps build bench clean fuzz fuzz-smoke guest
# The demo guest vws boots (kernel + busybox initramfs from Debian packages, guest/build.sh).
GUEST_DIR ?= var/images/demo

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@./guest/install-qemu.sh
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)"; exit 1; }

guest: deps
	./guest/build.sh $(GUEST_DIR)

build: deps
	$(CARGO) build --release --locked

run: build guest
	mkdir -p var
	./target/release/vwsd --config $(CONFIG)

test: build guest
	@rc=0; VWS_SHARED=$(SHARED) $(CARGO) test --release --locked -- --test-threads=2 || rc=$$?; \
	for k in target/*kit*/; do [ -f $$k/gridftp.pid ] && $(SHARED)/peers/gsi-gridftp-down.sh $$k || true; done; \
	$(MAKE) --no-print-directory fuzz-smoke || echo "make test: WARNING: the 5 s fuzz smoke run found a crash or failed to build (fuzz/logs/, fuzz/artifacts/); make fuzz fails on it"; \
	exit $$rc

# Each fuzz target for FUZZ_SECS seconds; summary in fuzz/logs/summary.txt, findings in fuzz/artifacts/.
fuzz: deps
	SHARED=$(SHARED) ./fuzz/run.sh $(FUZZ_SECS)

# The short run of `make test`: builds the targets once, runs each for 5 s (skipped with a
# message without the nightly toolchain; installs cargo-fuzz when missing).
fuzz-smoke: deps
	SHARED=$(SHARED) FUZZ_INSTALL=1 ./fuzz/run.sh 5

bench: build guest
	$(CARGO) bench --locked --bench wsrf
	$(CARGO) bench --locked --bench repository
	VWS_SHARED=$(SHARED) $(CARGO) bench --locked --bench security
	VWS_SHARED=$(SHARED) ./benches/getrp.sh
	VWS_SHARED=$(SHARED) ./benches/gridftp.sh
	VWS_GUEST_DIR=$(CURDIR)/$(GUEST_DIR) $(CARGO) bench --locked --bench vm

clean:
	$(CARGO) clean
	rm -rf var
