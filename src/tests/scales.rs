//! Property 11, scales: fixed policies and grants, one InitPlan per query on the org column's index.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::helpers::*;
    use pgrx::prelude::*;

    #[pg_test]
    fn policies_and_grants_stay_fixed_whatever_the_number_of_credentials() {
        saas();
        for org in 0..20 {
            generate(&format!("org-{org}"));
        }
        let policies: i64 =
            one("SELECT count(*) FROM pg_policy WHERE polrelid = 'public.projects'::regclass");
        assert_eq!(policies, 3, "read, guard and pass-through");
        let bi_grantees: i64 = one("SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a \
             JOIN pg_roles r ON r.oid = a.grantee \
             WHERE c.oid = 'public.projects'::regclass AND r.rolname LIKE 'bi\\_%'");
        assert_eq!(bi_grantees, 1, "only the reader group");
        let policy_text: String = one(
            "SELECT string_agg(coalesce(qual, '') || roles::text, ' ') FROM pg_policies WHERE tablename = 'projects'",
        );
        assert!(!policy_text.contains("org-"), "{policy_text}");
    }

    #[pg_test]
    fn org_lookup_is_an_initplan_and_uses_the_index() {
        saas();
        run("ANALYZE public.projects");
        let (acme, _) = generate(ACME);
        let plan: String = as_role(&acme, || {
            run("SET LOCAL enable_seqscan = off");
            explain("SELECT * FROM public.projects")
        });
        assert!(plan.contains("InitPlan"), "{plan}");
        assert!(plan.contains("projects_org_id_idx"), "{plan}");
        assert!(!plan.contains("00000000"), "no org key in a plan: {plan}");
    }
}
