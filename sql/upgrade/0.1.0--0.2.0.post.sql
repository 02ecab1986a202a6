-- After the SQL surface is rebuilt.

-- 0.1.0's key file moves into bi_access.sealing_key if it opens the secrets
-- it sealed (src/key.rs); otherwise a WARNING, and check() says what to do.
SELECT bi_access_internal.adopt_key_file();

-- 0.1.0 left its roles unmarked: each current credential role of this
-- database is marked as managed here (src/custody.rs). A 0.1.0 database
-- copied before its update marks them too; update the original first.
SELECT bi_access_internal.mark_credentials();

-- 0.1.0's pass-through policy (USING (true) TO PUBLIC) admitted credentials
-- once the reader policies were gone: every exposed table gets the current
-- form now, not at the next sync. A table that cannot be synced as it stands
-- is named and left for check() and the next sync.
DO $upgrade$
DECLARE
    t regclass;
BEGIN
    FOR t IN SELECT tbl FROM bi_access.exposed_table WHERE NOT hidden AND rls_enabled_by_bi_access LOOP
        BEGIN
            PERFORM bi_access_internal.sync_table(t::oid);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'bi_access 0.2.0: % was not synced (%); bi_access.check() reports it', t, SQLERRM;
        END;
    END LOOP;
END
$upgrade$;
