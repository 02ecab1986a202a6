//! Property 11, scales: fixed policies and grants, the org key planned as a constant on the org column's index.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::helpers::*;
    use pgrx::prelude::*;

    #[pg_test]
    fn policies_and_grants_stay_fixed_whatever_the_number_of_credentials() {
        saas();
        for org in 0..20 {
            // Keys an integer column prints (saas() exposes bigint and uuid).
            generate(&(900_100 + org).to_string());
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
        assert!(!policy_text.contains("9001"), "{policy_text}");
    }

    #[pg_test]
    fn org_lookup_is_planned_as_the_org_key_and_uses_the_index() {
        saas();
        run("ANALYZE public.projects");
        let (acme, _) = generate(ACME);
        let plan: String = as_role(&acme, || {
            run("SET LOCAL enable_seqscan = off");
            explain("SELECT * FROM public.projects")
        });
        // The planner turned the lookup into the credential's own key (no
        // sub-plan runs it), and the pass-through's membership test was
        // decided before planning (src/guard/plans.rs): no sub-plan at all.
        assert!(
            plan.contains(&format!("Index Cond: (org_id = '{ACME}'::uuid)")),
            "{plan}"
        );
        assert!(plan.contains("projects_org_id_idx"), "{plan}");
        assert!(!plan.contains("InitPlan"), "{plan}");
        assert!(!plan.contains("current_org"), "{plan}");
    }
}
