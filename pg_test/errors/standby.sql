-- A superuser on the streaming replica: calls that write.
SELECT * FROM bi_access.generate('42', 'on the standby');
SELECT bi_access.revoke(:'role');
SELECT bi_access.expose_table('others');
SELECT * FROM bi_access.sync_tables();
