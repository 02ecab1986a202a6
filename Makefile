# bi_access: every entry point a developer, CI or a demo needs.
#
# PG picks the PostgreSQL major(s), 14 to 18:
#   make test              the whole matrix, every major      make test PG=17   one major
#   make package           a .deb per major                   make package PG=16
#   make install / demo    Debian's 15                        make demo PG=17
# scripts/with-pg.sh sets each major's pg_config, cargo features and target dir.
SHELL := /bin/bash
MAJORS := 14 15 16 17 18
PG ?=
PGRX_TEST_PGDATA ?= /var/lib/postgresql/pgrx
export PGRX_TEST_PGDATA
export PATH := $(HOME)/.cargo/bin:$(PATH)

# One major (install, demo, build: Debian's 15 unless PG says) or several
# (test, lint, package: all unless PG says).
ONE := $(or $(PG),15)
SOME := $(or $(PG),$(MAJORS))
WITH_PG := bash scripts/with-pg.sh

.PHONY: setup build install demo demo-stop test lint pgrx-test pg-test pg-upgrade-test package package-test bench clean

setup:
	@bash scripts/setup.sh

build: setup
	$(WITH_PG) $(ONE) bash -c 'cargo build $$PG_FEATURES'

# A release build (optimised, no debug info): the debug one is 66 MB and
# about 20x slower per generate(). The login gate (scripts/gate.sh) beside it.
install: setup
	$(WITH_PG) $(ONE) bash -c 'cargo pgrx install --release --pg-config "$$PG_CONFIG" && bash scripts/gate.sh install'

demo: install
	@$(WITH_PG) $(ONE) bash scripts/demo.sh start

demo-stop:
	@$(WITH_PG) $(ONE) bash scripts/demo.sh stop

# The stages of `make test`, one at a time, for the majors in PG.
lint: setup
	cargo fmt --check
	@for m in $(SOME); do \
	  $(WITH_PG) $$m bash -c 'cargo clippy --all-targets $$PG_FEATURES --features pg_test -- -D warnings' || exit 1; \
	done

pgrx-test: setup
	@for m in $(SOME); do \
	  $(WITH_PG) $$m cargo pgrx test pg$$m --runas postgres --pgdata $(PGRX_TEST_PGDATA) || exit 1; \
	done

pg-test: setup
	@for m in $(SOME); do \
	  $(MAKE) --no-print-directory install PG=$$m && $(WITH_PG) $$m bash pg_test/run.sh || exit 1; \
	  if [[ $$m == 15 ]]; then $(WITH_PG) $$m bash pg_test/upgrade/run.sh || exit 1; fi; \
	  if [[ $$m == 17 ]]; then bash pg_test/upgrade/pg_upgrade.sh || exit 1; fi; \
	done

# pg_upgrade from 15 to 17 with bi_access in use, on private copies of both
# servers with this tree's release build packaged for each (installs nothing).
pg-upgrade-test: setup
	bash pg_test/upgrade/pg_upgrade.sh

package: setup
	@for m in $(SOME); do $(WITH_PG) $$m bash scripts/package.sh || exit 1; done

# Installs the 15 package with dpkg -i into Debian's server (replacing what
# `make install` put there) and runs the smoke test against it.
package-test: setup
	$(WITH_PG) 15 bash scripts/package.sh
	$(WITH_PG) 15 bash scripts/package-test.sh

# fmt, then per major: clippy, #[pg_test]s, release install, pg_test/ on a
# primary + streaming replica (and on 15, the only major 0.1.0 was released
# for, the upgrade test; on 17 the pg_upgrade 15 -> 17 test), .deb; then the
# 15 package's smoke test. Times per stage and major go to target/test-times.txt.
test: setup
	@bash scripts/test-matrix.sh $(SOME)

bench: setup
	@bash bench/run.sh

clean:
	cargo clean
