# Steward: `make run` (install what is missing, build, run the demo in the foreground)
# and `make test` (install what is missing, then every check and test).

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo
RELEASE := target/release

.PHONY: setup build run test lint unit e2e systemd-test bench faults fuzz mutants man install install-files deb clean

setup:
	@scripts/setup

build: setup
	$(CARGO) build --release --workspace --all-targets --locked

# steward supervising steward-proxy on 127.0.0.1:6188 (health on :6190, demo origin on
# :6189), with the shipped configuration. Ctrl-C stops it gracefully; twice, at once.
run: build
	PATH="$(CURDIR)/$(RELEASE):$$PATH" $(RELEASE)/steward run --config etc/steward/steward.toml

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# Unit tests and end-to-end tests against the release binaries built above.
unit e2e: build
	$(CARGO) test --release --workspace --locked -- --test-threads=4

# The shipped unit under a real systemd 252 in a throw-away container; then the Debian
# package installed, upgraded and removed on a fresh one.
systemd-test: build deb
	bash tests/systemd/run.sh
	bash tests/systemd/package.sh

test: lint e2e systemd-test

# The fuzz_* property tests at length (make test runs a few hundred cases of each):
# `make fuzz`, or `make fuzz FUZZ_CASES=1000000`.
FUZZ_CASES ?= 100000
fuzz: setup
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test -p steward --release --locked --test 'fuzz_*'

bench: build
	bash bench/stop.sh

# The fault report table in README.md (bench/faults.rs, then the real-systemd suite).
faults: build
	bash bench/faults.sh

# Mutation testing of the supervisor's modules with no I/O (.cargo/mutants.toml lists them):
# every mutant must make a unit test fail. Hours for all of them on 2 cores; one file with
# `make mutants MUTANTS_ARGS="--no-config --file supervisor/src/deadline.rs -- --lib"`.
MUTANTS_ARGS ?=
mutants: setup
	@command -v cargo-mutants >/dev/null 2>&1 || $(CARGO) install --locked cargo-mutants
	$(CARGO) mutants --package steward -j 2 $(MUTANTS_ARGS)

# docs/steward.1, generated from steward's command-line definition (`steward man`); the
# supervisor's tests fail when the committed page is stale.
man: setup
	$(CARGO) run -q -p steward --locked -- man > docs/steward.1.tmp
	mv docs/steward.1.tmp docs/steward.1

# Installs the release binaries, the man page, the unit, the service user's sysusers.d
# entry and the shipped configuration: `make install` (PREFIX=/usr/local), or for a package
# or an image `make install DESTDIR=/tmp/root PREFIX=/usr`. The unit's paths follow PREFIX.
# Configuration files that already exist are left as they are (an operator's edits win;
# the shipped version goes beside them as FILE.dist). Afterwards: `systemd-sysusers`,
# `systemctl daemon-reload`, `systemctl enable --now steward-proxy`.
PREFIX ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= /etc
# A package (PREFIX=/usr) ships systemd's files in its vendor directories; a local
# install puts them where the administrator's own go.
ifeq ($(PREFIX),/usr)
UNITDIR ?= /usr/lib/systemd/system
SYSUSERSDIR ?= /usr/lib/sysusers.d
else
UNITDIR ?= $(SYSCONFDIR)/systemd/system
SYSUSERSDIR ?= $(SYSCONFDIR)/sysusers.d
endif
install: build install-files

install-files:
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 \
		$(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(SYSCONFDIR)/steward \
		$(DESTDIR)$(PREFIX)/share/doc/steward \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions \
		$(DESTDIR)$(PREFIX)/share/zsh/vendor-completions \
		$(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
	install -m 0755 $(RELEASE)/steward $(RELEASE)/steward-proxy $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 docs/steward.1 $(DESTDIR)$(PREFIX)/share/man/man1/steward.1
	install -m 0644 README.md SECURITY.md docs/operators-guide.md $(DESTDIR)$(PREFIX)/share/doc/steward/
	$(RELEASE)/steward completions bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/steward
	$(RELEASE)/steward completions zsh > $(DESTDIR)$(PREFIX)/share/zsh/vendor-completions/_steward
	$(RELEASE)/steward completions fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/steward.fish
	chmod 0644 $(DESTDIR)$(PREFIX)/share/bash-completion/completions/steward \
		$(DESTDIR)$(PREFIX)/share/zsh/vendor-completions/_steward \
		$(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/steward.fish
	sed -e 's|/usr/local/|$(PREFIX)/|g' -e 's|/etc/steward/|$(SYSCONFDIR)/steward/|g' \
		etc/systemd/steward-proxy.service > $(DESTDIR)$(UNITDIR)/steward-proxy.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/steward-proxy.service
	install -m 0644 etc/systemd/steward.sysusers $(DESTDIR)$(SYSUSERSDIR)/steward.conf
	@for f in etc/steward/*; do \
		t=$(DESTDIR)$(SYSCONFDIR)/steward/$$(basename $$f); \
		if [ -e "$$t" ]; then \
			if ! cmp -s "$$f" "$$t"; then install -m 0644 "$$f" "$$t.dist"; echo "kept $$t (the shipped one is $$t.dist)"; fi; \
		else install -m 0644 "$$f" "$$t"; fi; \
	done

# target/debian/steward_<version>-1_<arch>.deb: what `make install-files PREFIX=/usr`
# installs (the unit in /lib/systemd/system, as Debian 12's own packages), staged in
# $(RELEASE)/deb-root and packed by cargo-deb (supervisor/Cargo.toml [package.metadata.deb])
# with the maintainer scripts in etc/debian. Installed: `dpkg -i target/debian/steward_*.deb`,
# then `systemctl enable --now steward-proxy` (the package enables the unit, it does not
# start it). tests/systemd/package.sh installs, upgrades and removes it under systemd.
DEB_ROOT := $(RELEASE)/deb-root
deb: build
	@command -v cargo-deb >/dev/null 2>&1 || $(CARGO) install --locked cargo-deb
	rm -rf $(DEB_ROOT)
	$(MAKE) -s install-files DESTDIR=$(CURDIR)/$(DEB_ROOT) PREFIX=/usr UNITDIR=/lib/systemd/system
	gzip -9n $(DEB_ROOT)/usr/share/man/man1/steward.1
	$(CARGO) deb -p steward --no-build --locked $(DEB_ARGS)

clean:
	$(CARGO) clean
