"""Management calls fail with the SQLSTATE the contract promises."""

import pytest

from bi import PLAIN_PASSWORD, PLAIN_ROLE, login, raises_sqlstate, unique_label


def test_role_without_bi_access_admin_cannot_generate(pair, saas_db):
    conn = login(pair.primary.tcp_args(saas_db.dbname, PLAIN_ROLE, PLAIN_PASSWORD))
    try:
        with raises_sqlstate("42501"), conn.cursor() as cur:
            cur.execute("SELECT * FROM bi_access.generate('101', %s)", (unique_label(),))
    finally:
        conn.close()


def test_second_generate_for_same_org_and_label_is_a_unique_violation(bi):
    label = unique_label("dup")
    bi.generate("101", label)
    with raises_sqlstate("23505"):
        bi.generate("101", label)


@pytest.mark.parametrize("org_id", ["", "x" * 10_000], ids=["empty", "oversized"])
def test_bad_org_id_is_invalid_parameter(bi, org_id):
    with raises_sqlstate("22023"):
        bi.generate(org_id)


def test_past_valid_until_is_invalid_parameter(bi):
    with raises_sqlstate("22023"):
        bi.generate("101", valid_until="2000-01-01T00:00:00Z")


def test_role_not_made_by_bi_access_is_unknown(bi):
    with raises_sqlstate("42704"):
        bi.one("connection_details", "postgres")
