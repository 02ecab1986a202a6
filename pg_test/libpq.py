"""libpq itself, through ctypes, for what psycopg2 cannot do: the SQLSTATE of
an error at login (libpq puts it in the message only at the verbose error
verbosity, which must be set on the connection before it is made) and the
protocol's Parse of a named statement (PQprepare; psycopg2 sends every
statement as a simple query)."""

from __future__ import annotations

import ctypes
import re
import select

_lib = ctypes.CDLL("libpq.so.5")
_lib.PQconnectStart.restype = ctypes.c_void_p
_lib.PQconnectStart.argtypes = [ctypes.c_char_p]
_lib.PQconnectPoll.argtypes = [ctypes.c_void_p]
_lib.PQsocket.argtypes = [ctypes.c_void_p]
_lib.PQstatus.argtypes = [ctypes.c_void_p]
_lib.PQsetErrorVerbosity.argtypes = [ctypes.c_void_p, ctypes.c_int]
_lib.PQerrorMessage.restype = ctypes.c_char_p
_lib.PQerrorMessage.argtypes = [ctypes.c_void_p]
_lib.PQfinish.argtypes = [ctypes.c_void_p]
_lib.PQbackendPID.argtypes = [ctypes.c_void_p]
_lib.PQexec.restype = ctypes.c_void_p
_lib.PQexec.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
_lib.PQprepare.restype = ctypes.c_void_p
_lib.PQprepare.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]
_lib.PQresultStatus.argtypes = [ctypes.c_void_p]
_lib.PQresultErrorField.restype = ctypes.c_char_p
_lib.PQresultErrorField.argtypes = [ctypes.c_void_p, ctypes.c_int]
_lib.PQresultErrorMessage.restype = ctypes.c_char_p
_lib.PQresultErrorMessage.argtypes = [ctypes.c_void_p]
_lib.PQntuples.argtypes = [ctypes.c_void_p]
_lib.PQgetvalue.restype = ctypes.c_char_p
_lib.PQgetvalue.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
_lib.PQclear.argtypes = [ctypes.c_void_p]

CONNECTION_OK = 0
POLLING_FAILED, POLLING_READING, POLLING_WRITING, POLLING_OK = 0, 1, 2, 3
ERRORS_VERBOSE = 2
COMMAND_OK, TUPLES_OK = 1, 2
DIAG_SQLSTATE = ord("C")
OK = "ok"


def conninfo(args: dict) -> bytes:
    """A libpq connection string from psycopg2-style arguments."""
    def quoted(value) -> str:
        return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"
    return " ".join(f"{key}={quoted(value)}" for key, value in args.items()).encode()


def sqlstate_of(message: str) -> str:
    """The SQLSTATE in a verbose error message, or '?'."""
    found = re.search(r"(?:FATAL|ERROR):  ([0-9A-Z]{5}): ", message)
    return found.group(1) if found else "?"


class LoginRefused(Exception):
    """A login the server refused: `state` is the SQLSTATE of its error."""

    def __init__(self, state: str, message: str):
        super().__init__(message)
        self.state = state
        self.message = message


class Connection:
    """One libpq connection; statements return (state, rows)."""

    def __init__(self, args: dict, timeout: float = 30):
        self._conn = _lib.PQconnectStart(conninfo(args))
        if not self._conn:
            raise MemoryError("PQconnectStart")
        _lib.PQsetErrorVerbosity(self._conn, ERRORS_VERBOSE)
        status = POLLING_WRITING
        while status not in (POLLING_OK, POLLING_FAILED):
            sock = _lib.PQsocket(self._conn)
            if status == POLLING_READING:
                ready = select.select([sock], [], [], timeout)[0]
            else:
                ready = select.select([], [sock], [], timeout)[1]
            if not ready:
                self.close()
                raise TimeoutError("login took too long")
            status = _lib.PQconnectPoll(self._conn)
        if _lib.PQstatus(self._conn) != CONNECTION_OK:
            message = _lib.PQerrorMessage(self._conn).decode(errors="replace")
            self.close()
            raise LoginRefused(sqlstate_of(message), message)

    def pid(self) -> int:
        return _lib.PQbackendPID(self._conn)

    def _outcome(self, result) -> tuple[str, list]:
        try:
            status = _lib.PQresultStatus(result)
            if status in (COMMAND_OK, TUPLES_OK):
                rows = [_lib.PQgetvalue(result, i, 0).decode() for i in range(_lib.PQntuples(result))]
                return OK, rows
            state = _lib.PQresultErrorField(result, DIAG_SQLSTATE) if result else None
            if state:
                return state.decode(), []
            # A FATAL that closed the connection may leave no result: its
            # SQLSTATE is in the connection's (verbose) error message.
            return sqlstate_of(_lib.PQerrorMessage(self._conn).decode(errors="replace")), []
        finally:
            if result:
                _lib.PQclear(result)

    def exec(self, sql: str) -> tuple[str, list]:
        """A simple query: its state and its first column's values."""
        return self._outcome(_lib.PQexec(self._conn, sql.encode()))

    def prepare(self, name: str, sql: str) -> str:
        """The protocol's Parse of a named statement (PQprepare): its state."""
        return self._outcome(_lib.PQprepare(self._conn, name.encode(), sql.encode(), 0, None))[0]

    def close(self) -> None:
        if self._conn:
            _lib.PQfinish(self._conn)
            self._conn = None


def login_state(args: dict) -> str:
    """'ok' if a login gets in and its first statement runs, else the
    SQLSTATE that refused it, at login or at that statement."""
    try:
        conn = Connection(args)
    except LoginRefused as refused:
        return refused.state
    try:
        return conn.exec("SELECT 'ok'")[0]
    finally:
        conn.close()
