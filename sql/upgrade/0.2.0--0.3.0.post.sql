-- After the SQL surface is rebuilt: the quota trigger on every table of
-- the custom schemas made under 0.2.0 (src/guard/quota.rs).
SELECT bi_access_internal.add_quota_triggers();
