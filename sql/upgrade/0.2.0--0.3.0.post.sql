-- After the SQL surface is rebuilt.

-- The quota trigger on every table of the custom schemas made under 0.2.0
-- (src/guard/quota.rs).
SELECT bi_access_internal.add_quota_triggers();

-- 0.2.0's credential roles load bi_access alone; from 0.3.0 each loads the
-- login gate beside it (src/guard/gate.rs): every current credential role
-- of this database (custody: not a copy's) gets the new
-- session_preload_libraries now, not at the next sync.
SELECT bi_access_internal.sync_session_libraries();

