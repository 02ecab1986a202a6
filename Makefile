# bi_access: every entry point a developer, CI or a demo needs.
#
# PG picks the PostgreSQL major(s), 14 to 18:
#   make test              the whole matrix, every major      make test PG=17   one major
#   make package           a .deb per major                   make package PG=16
#   make install / demo    Debian's 15                        make demo PG=17
# scripts/with-pg.sh sets each major's pg_config, cargo features and target dir.
SHELL := /bin/bash
# The supported majors: scripts/pg_majors.sh holds the one list.
MAJORS := $(shell bash -c 'source scripts/pg_majors.sh && echo $${PG_MAJORS[*]}')
PG ?=
PGRX_TEST_PGDATA ?= /var/lib/postgresql/pgrx
export PGRX_TEST_PGDATA
export PATH := $(HOME)/.cargo/bin:$(PATH)
# Logs written to files carry no colour codes (cargo, cargo-pgrx): colour only
# when make's stderr is a terminal.
ifneq ($(shell [ -t 2 ] && echo tty),tty)
export NO_COLOR := 1
export CARGO_TERM_COLOR := never
endif

# One major (install, demo, build: Debian's 15 unless PG says) or several
# (test, lint, package: all unless PG says).
ONE := $(or $(PG),15)
SOME := $(or $(PG),$(MAJORS))
WITH_PG := bash scripts/with-pg.sh

.PHONY: setup setup-build build install demo demo-stop test errors lint pgrx-test pg-test pg-upgrade-test citus-test package package-test bench clean

setup:
	@bash scripts/setup.sh

# Only what building, installing and running one major needs (no cargo-pgrx,
# no other major, no test clients): what install and demo need.
setup-build:
	@bash scripts/setup.sh build $(ONE)

build: setup
	$(WITH_PG) $(ONE) bash -c 'cargo build $$PG_FEATURES'

# A release build (optimised, no debug info): the debug one is 66 MB and
# about 20x slower per generate(). Plain cargo, no cargo-pgrx: see
# scripts/install.sh.
install: setup-build
	$(WITH_PG) $(ONE) bash scripts/install.sh

demo: install
	@$(WITH_PG) $(ONE) bash scripts/demo.sh start

demo-stop:
	@$(WITH_PG) $(ONE) bash scripts/demo.sh stop

# Rewrites pg_test/errors/expected/ from a run of pg_test/errors/*.sql on 15
# (every error's SQLSTATE, message and HINT; `make test` compares them).
errors: setup
	$(MAKE) --no-print-directory install PG=15
	$(WITH_PG) 15 python3 scripts/errors.py

# The stages of `make test`, one at a time, for the majors in PG.
lint: setup
	cargo fmt --check
	bash scripts/check-generated.sh
	python3 scripts/check-lock.py
	@! git ls-files -s | grep '^120000'
	python3 scripts/check-layers.py
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

# bi_access on a Citus cluster (README "Citus"): a release install into
# CITUS_PG's server (16 by default; Citus supports 16 to 18), Citus built
# from the source tree CITUS_SRC (a checkout of github.com/citusdata/citus;
# scripts/citus.sh, which rebuilds nothing the second time), then
# pg_test/test_citus.py on a coordinator and two workers.
CITUS_PG ?= 16
citus-test: setup
	@[[ -n "$(CITUS_SRC)" ]] || { echo "make citus-test: set CITUS_SRC to a source tree of github.com/citusdata/citus" >&2; exit 2; }
	$(MAKE) --no-print-directory install PG=$(CITUS_PG)
	CITUS_SRC="$(CITUS_SRC)" $(WITH_PG) $(CITUS_PG) bash scripts/citus.sh test

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
# 15 package's smoke test; then, with CITUS_SRC set, the Citus test on
# CITUS_PG (one line saying it was skipped otherwise). Times per stage and
# major go to target/test-times.txt.
test: setup
	@bash scripts/test-matrix.sh $(PG)

bench: setup
	@bash bench/run.sh

clean:
	cargo clean
