"""A throwaway Citus cluster for pg_test/test_citus.py: a coordinator and two
workers of the major in PG_BIN, with Citus (scripts/citus.sh installs it from
a source tree) and bi_access installed in that major's server.

Ports come from CITUS_PORT_BASE (21400) up, below the ephemeral range, where
an outgoing connection's local port cannot take them; the first free ones are
used, so two runs on one machine do not collide.

How the nodes authenticate each other, and tenants:
- every node trusts the `postgres` superuser on its unix socket (the harness),
  and asks every other role for its SCRAM password over 127.0.0.1, as a BI
  tool logs in;
- Citus's own connections from one node to another go over the unix socket
  (the nodes are registered by their socket directory) and authenticate by
  `peer` with a user map that lets the `postgres` OS user log in as any role:
  Citus runs a credential's shard queries on a worker as that credential,
  and the coordinator has no password of it to give. A tenant has no OS
  account, so it can only reach a worker over TCP, where it meets SCRAM. On
  the worker, the two are told apart by how the session authenticated
  (`SYSTEM_USER`: `peer:postgres` for Citus, `scram-sha-256:<role>` for a
  tenant), which no client setting can change; application_name, which Citus
  sets to `citus_internal gpid=…`, any client can set too.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
from pathlib import Path

from cluster import (BASE_DIR, COMMON_SETTINGS, KEEP_DIRS, SUPERUSER, Server, chown_to_postgres, pg_tool,
                     run_as_postgres)

PORT_BASE = int(os.environ.get("CITUS_PORT_BASE", "21400"))
PORT_SPAN = 100

# Citus's connections between nodes: peer over the unix socket, mapped from
# the postgres OS user to any role (pg_ident's `all`, PostgreSQL 16 and later).
NODE_HBA = f"""\
local all         {SUPERUSER} trust
local replication {SUPERUSER} trust
local all         all         peer map=citus_nodes
host  all         all         127.0.0.1/32 scram-sha-256
"""
NODE_IDENT = "citus_nodes postgres all\n"

CITUS_SETTINGS = {
    **COMMON_SETTINGS,
    # Citus first: it must be the first library loaded.
    "shared_preload_libraries": "citus,pg_stat_statements",
    "max_connections": 120,
    "max_prepared_transactions": 100,
    # Every connection between nodes is a unix socket, where libpq ignores
    # sslmode; said anyway, as Citus would otherwise ask for SSL.
    "citus.node_conninfo": "sslmode=disable",
    # Each node's maintenance daemon: quiet logs, and no statistics sent home.
    "citus.enable_statistics_collection": "off",
}


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # As the server binds: a port whose last connection is in TIME_WAIT
        # is free to it.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """The first `count` free ports from PORT_BASE (each node also needs its
    unix socket name free, which the shared socket directory guarantees)."""
    ports = [p for p in range(PORT_BASE, PORT_BASE + PORT_SPAN) if _port_free(p)][:count]
    if len(ports) < count:
        raise RuntimeError(f"no {count} free ports in {PORT_BASE}..{PORT_BASE + PORT_SPAN - 1}")
    return ports


class CitusCluster:
    """A coordinator and `workers` workers, Citus created in `dbname`."""

    def __init__(self, workers: int = 2):
        BASE_DIR.mkdir(parents=True, exist_ok=True)
        BASE_DIR.chmod(0o755)
        self.root = Path(tempfile.mkdtemp(prefix="citus-", dir=BASE_DIR))
        chown_to_postgres(self.root)
        self.socket_dir = self.root
        names = ["coordinator", *(f"worker{i}" for i in range(1, workers + 1))]
        self.nodes = [Server(name, self.root, self.socket_dir) for name in names]
        for node, port in zip(self.nodes, free_ports(len(self.nodes))):
            node.port = port
        self.coordinator, self.workers = self.nodes[0], list(self.nodes[1:])
        self._destroyed = False
        atexit.register(self.destroy)

    def start(self, coordinator_settings: dict | None = None) -> None:
        for node in self.nodes:
            self._init(node, coordinator_settings if node is self.coordinator else {})

    def _init(self, node: Server, extra: dict) -> None:
        run_as_postgres([pg_tool("initdb"), "-D", str(node.datadir), "-U", SUPERUSER,
                         "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
        (node.datadir / "pg_hba.conf").write_text(NODE_HBA)
        (node.datadir / "pg_ident.conf").write_text(NODE_IDENT)
        node.append_conf({**CITUS_SETTINGS, "port": node.port,
                          "unix_socket_directories": str(self.socket_dir), **extra})
        node.start()

    def create_database(self, dbname: str) -> None:
        """A database with Citus on every node, the workers registered with
        the coordinator (which holds no shards of distributed tables but is in
        the metadata, so reference tables have a placement on it)."""
        for node in self.nodes:
            self._create_citus_database(node, dbname)
        self.coordinator.sql("SELECT citus_set_coordinator_host(%s, %s)",
                             (str(self.socket_dir), self.coordinator.port), dbname=dbname)
        for worker in self.workers:
            self._add_node(worker, dbname)

    def add_worker(self, dbname: str) -> Server:
        """Another worker, added to the cluster now (Citus copies the
        distributed roles and objects to it); it holds no shard until a
        rebalance moves some there."""
        worker = Server(f"worker{len(self.workers) + 1}", self.root, self.socket_dir)
        worker.port = free_ports(1)[0]
        self.nodes.append(worker)
        self.workers.append(worker)
        self._init(worker, {})
        self._create_citus_database(worker, dbname)
        self._add_node(worker, dbname)
        return worker

    @staticmethod
    def _create_citus_database(node: Server, dbname: str) -> None:
        node.sql(f"CREATE DATABASE {dbname}")
        node.sql("CREATE EXTENSION citus", dbname=dbname)

    def _add_node(self, worker: Server, dbname: str) -> None:
        self.coordinator.sql("SELECT citus_add_node(%s, %s)", (str(self.socket_dir), worker.port),
                             dbname=dbname)

    def destroy(self) -> None:
        if self._destroyed:
            return
        self._destroyed = True
        for node in reversed(self.nodes):
            node.stop()
        if not KEEP_DIRS:
            shutil.rmtree(self.root, ignore_errors=True)
