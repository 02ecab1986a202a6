# bi_access: every entry point a developer, CI or a demo needs.
SHELL := /bin/bash
PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
PGRX_TEST_PGDATA ?= /var/lib/postgresql/pgrx
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: setup build install demo demo-stop test lint pgrx-test pg-test bench clean

setup:
	@bash scripts/setup.sh

build: setup
	cargo build

# Installs the extension into the Debian PostgreSQL 15 that the demo and
# pg_test/ clusters run.
install: setup
	cargo pgrx install --pg-config $(PG_CONFIG)

demo: install
	@bash scripts/demo.sh start

demo-stop:
	@bash scripts/demo.sh stop

lint: setup
	cargo fmt --check
	cargo clippy --all-targets --features pg_test -- -D warnings

pgrx-test: setup
	cargo pgrx test pg15 --runas postgres --pgdata $(PGRX_TEST_PGDATA)

pg-test: install
	bash pg_test/run.sh
	bash pg_test/upgrade/run.sh

test: lint pgrx-test pg-test
	@echo "make test: all suites passed"

bench: setup
	@bash bench/run.sh

clean:
	cargo clean
