/*
 * bi_access_gate: the login gate of bi_access's credential sessions.
 *
 * Every credential role has session_preload_libraries = 'bi_access,
 * bi_access_gate'. PostgreSQL loads this library at the start of each of
 * its sessions, after authentication and before the session can send a
 * statement, whether bi_access itself is in shared_preload_libraries (then
 * bi_access's own _PG_init ran once, in the postmaster) or loaded for the
 * session just before. Its _PG_init hands over to bi_access, which runs
 * every check that must hold at login (src/guard/gate.rs).
 *
 * It fails closed: an error here (bi_access missing, its gate missing, a
 * check refusing) is raised before the session's error handling exists,
 * and PostgreSQL turns it into a FATAL that ends the login. A missing file
 * of this library does the same, since the role names it.
 */
#include "postgres.h"

#include "fmgr.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

typedef void (*bi_access_gate_fn) (void);

void
_PG_init(void)
{
	bi_access_gate_fn gate;

	gate = (bi_access_gate_fn) load_external_function("$libdir/bi_access",
													  "bi_access_login_gate",
													  true, NULL);
	gate();
}
