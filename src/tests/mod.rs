//! `#[pg_test]`s, one module per DESIGN.md property or feature. Each test
//! runs inside a transaction that the framework rolls back, as the
//! superuser; `as_role` switches to a credential (SET ROLE) for what a BI
//! session would do. What needs a COMMIT or a real login (ending sessions,
//! the replica) is in pg_test/. Tests run concurrently in one database:
//! each works in a schema and with roles of its own where it can.

mod helpers;

mod application;
mod audit;
mod check;
mod citus;
mod exposure;
mod fail_closed;
mod generate;
mod inputs;
mod isolation;
mod lifecycle;
mod management;
mod networks;
mod quota;
mod read_only;
mod read_write;
mod resources;
mod rotation;
mod scales;
mod secrets;
mod surface;
mod tables;
mod usage;
