//! The caches' callbacks: bi_access's caches keyed on relations share one
//! relcache callback, and catalog caches register their own. From _PG_init
//! only.

use pgrx::pg_sys;

/// A cache keyed on relations: told of every relcache invalidation.
type ForgetRelation = unsafe extern "C-unwind" fn(pg_sys::Datum, pg_sys::Oid);

/// Every bi_access cache keyed on relations, in registration order (set
/// from _PG_init only, in the backend's only thread).
static mut RELATION_CACHES: [Option<ForgetRelation>; 8] = [None; 8];

/// Registers `forget` for every relcache invalidation, for the life of the
/// backend, through one callback of bi_access's own: PostgreSQL has room for
/// ten relcache callbacks in a backend (MAX_RELCACHE_CALLBACKS), and Citus
/// takes most of them (with one each, CREATE EXTENSION bi_access failed
/// there: "out of relcache_callback_list slots"). Called from _PG_init only.
pub(crate) fn on_relation_change(forget: ForgetRelation) {
    // SAFETY: _PG_init runs once per backend, in its only thread; nothing
    // reads the array until the callback is registered below.
    unsafe {
        let caches = &mut *std::ptr::addr_of_mut!(RELATION_CACHES);
        let first = caches.iter().all(Option::is_none);
        let Some(free) = caches.iter_mut().find(|slot| slot.is_none()) else {
            panic!("bi_access registers more relation caches than it has slots for");
        };
        *free = Some(forget);
        if first {
            pg_sys::CacheRegisterRelcacheCallback(Some(forget_relations), pg_sys::Datum::from(0));
        }
    }
}

/// Runs during invalidation processing: each cache forgets, nothing raises.
unsafe extern "C-unwind" fn forget_relations(arg: pg_sys::Datum, relid: pg_sys::Oid) {
    // SAFETY: the array is only written from _PG_init, before this runs.
    let caches = &*std::ptr::addr_of!(RELATION_CACHES);
    for forget in caches.iter().flatten() {
        forget(arg, relid);
    }
}

/// Registers `forget` for every change to the catalog entries of `caches`,
/// committed anywhere (replayed on a standby too), for the life of the
/// backend. Called from _PG_init only.
pub(crate) fn on_catalog_change(
    caches: &[pg_sys::SysCacheIdentifier::Type],
    forget: unsafe extern "C-unwind" fn(pg_sys::Datum, std::ffi::c_int, u32),
) {
    for cache in caches {
        // SAFETY: registers a callback for the life of the backend, in its
        // only thread; PostgreSQL keeps room for this many.
        unsafe {
            pg_sys::CacheRegisterSyscacheCallback(
                *cache as i32,
                Some(forget),
                pg_sys::Datum::from(0),
            );
        }
    }
}
