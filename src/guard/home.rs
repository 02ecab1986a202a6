//! A credential logs in only to the database that manages it (DESIGN.md
//! property 1; issue 25). PostgreSQL lets a role with LOGIN into every
//! database PUBLIC may CONNECT to (template1 and postgres by default), where
//! no bi_access guards its session: the login gate refuses it there (FATAL
//! 28000), preloaded or not, since the credential roles name the gate in
//! their role-wide session_preload_libraries, which every database applies.
//!
//! "Manages" is read where the session is: bi_access installed in this
//! database with a record of the login. A Citus worker holds no records (the
//! coordinator does, src/citus.rs): there the database that has bi_access
//! is the coordinator's, and the login passes; its other databases refuse it
//! like any database without bi_access.

use crate::db;

/// Refuses the login where this database does not manage it; keeps the
/// login's record for the gate's later checks (gate.rs).
pub(super) fn check() {
    let managed: crate::error::Result<bool> =
        db::as_superuser(|| match crate::login_record::read()? {
            Some(record) => {
                super::login::remember_record(record);
                Ok(true)
            }
            None => crate::citus::is_worker(),
        });
    match managed {
        Ok(true) => {}
        Ok(false) => super::login::refuse(crate::error::BiError::NotItsDatabase(format!(
            "database {}",
            this_database()
        ))),
        Err(error) => super::login::refuse(error),
    }
}

fn this_database() -> String {
    // SAFETY: MyDatabaseId is set before the gate runs; the lookup raises
    // nothing for a missing database and returns a palloc'd copy or NULL.
    unsafe {
        let name = pgrx::pg_sys::get_database_name(pgrx::pg_sys::MyDatabaseId);
        if name.is_null() {
            return "this database".into();
        }
        pgrx::spi::quote_identifier(std::ffi::CStr::from_ptr(name).to_string_lossy())
    }
}
