//! Where a credential's status is decided: the `Status` type (the Rust
//! mirror of the SQL enum `bi_access.credential_status`), what "live" and
//! "current" mean, the one computation of the status a credential shows
//! (the credentials view calls it through `bi_access_internal.credential_state`,
//! the lifecycle through `records::Record::status`), and the table of what
//! each management call does in each status (DESIGN.md's SQL surface).

use crate::error::{BiError, Result};

/// `bi_access.credential_status`, in the SQL enum's order (sql/bootstrap.sql).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pending,
    Active,
    Syncing,
    Failed,
    Deleting,
    Deactivated,
    Deleted,
    Expired,
}

impl Status {
    pub const ALL: [Status; 8] = [
        Status::Pending,
        Status::Active,
        Status::Syncing,
        Status::Failed,
        Status::Deleting,
        Status::Deactivated,
        Status::Deleted,
        Status::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Active => "active",
            Status::Syncing => "syncing",
            Status::Failed => "failed",
            Status::Deleting => "deleting",
            Status::Deactivated => "deactivated",
            Status::Deleted => "deleted",
            Status::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Result<Status> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| BiError::Internal(format!("unknown credential status {text:?}")))
    }

    /// It can log in: pending, active or syncing (DESIGN.md, Words).
    pub fn is_live(self) -> bool {
        matches!(self, Status::Pending | Status::Active | Status::Syncing)
    }

    /// It occupies its (org_id, label) and blocks drop_target and DROP
    /// EXTENSION: anything but failed or deleted (deleting is deleted, not
    /// yet replayed). The partial unique index of sql/bootstrap.sql says the
    /// same of the stored status (`records::CURRENT`).
    pub fn is_current(self) -> bool {
        !matches!(self, Status::Failed | Status::Deleting | Status::Deleted)
    }

    /// The names of the statuses that satisfy `which`, for a bound
    /// `status::text = ANY ($n)` argument.
    pub fn names(which: fn(Status) -> bool) -> Vec<&'static str> {
        Status::ALL
            .into_iter()
            .filter(|status| which(*status))
            .map(Status::as_str)
            .collect()
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is known of a credential beside its stored status.
pub struct Facts {
    /// Its role exists (a record whose role is gone cannot work).
    pub role_exists: bool,
    /// Why another database manages its role (src/custody.rs), if one does.
    pub custody_problem: Option<String>,
    /// `valid_until` has passed.
    pub expired: bool,
    /// `CALL bi_access.sync()` runs now in this database.
    pub syncing: bool,
}

/// Why a credential whose role is gone shows `failed`.
pub const ROLE_MISSING: &str =
    "its role does not exist: dropped outside bi_access, or the database \
     was restored without its roles; regenerate recreates it";

/// The status a credential shows: the first that applies of deleted,
/// deleting, failed, deactivated, expired, pending, syncing, active
/// (DESIGN.md). `replayed` (whether the target's standby has replayed the
/// record's latest change) is asked only of a pending or deleted record.
/// Returns the status and, for a failed one, why (`last_error` when the
/// record has none of its own).
pub fn effective(
    stored: Status,
    facts: &Facts,
    replayed: impl Fn() -> Result<bool>,
) -> Result<(Status, Option<String>)> {
    Ok(match stored {
        Status::Deleted if !replayed()? => (Status::Deleting, None),
        Status::Deleted | Status::Deleting | Status::Failed => (stored, None),
        _ if !facts.role_exists => (Status::Failed, Some(ROLE_MISSING.into())),
        _ if facts.custody_problem.is_some() => (Status::Failed, facts.custody_problem.clone()),
        Status::Deactivated => (stored, None),
        _ if facts.expired => (Status::Expired, None),
        Status::Pending if !replayed()? => (stored, None),
        _ if facts.syncing => (Status::Syncing, None),
        _ => (Status::Active, None),
    })
}

/// The management calls whose effect depends on the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    ConnectionDetails,
    Regenerate,
    SetNetworks,
    Revoke,
    Activate,
    Delete,
    Purge,
}

/// What a call does in one status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    Allow,
    /// 55000.
    Refuse,
    /// Changes nothing and succeeds (a retried delete).
    NoOp,
    /// Only when the role is missing, which the call recreates (regenerate
    /// of a failed credential).
    RecreatesRole,
    /// Only with a new `valid_until` (regenerate of an expired credential).
    NeedsValidUntil,
}

use Rule::{Allow as Y, NeedsValidUntil, NoOp, RecreatesRole, Refuse as N};

/// The columns of `TRANSITIONS`, in DESIGN.md's order.
const COLUMNS: [Status; 8] = [
    Status::Pending,
    Status::Active,
    Status::Syncing,
    Status::Expired,
    Status::Deactivated,
    Status::Failed,
    Status::Deleting,
    Status::Deleted,
];

/// DESIGN.md's "what each call does by status", row by row; `needs` words
/// the refusal ("… needs it <needs>").
#[rustfmt::skip]
const TRANSITIONS: [(Action, &str, [Rule; 8]); 7] = [
    //                                                  pending active syncing expired          deactivated failed         deleting deleted
    (Action::ConnectionDetails, "active",               [Y,      Y,     Y,      N,               N,          N,             N,       N]),
    (Action::Regenerate,        "active or deactivated",[Y,      Y,     Y,      NeedsValidUntil, Y,          RecreatesRole, N,       N]),
    (Action::SetNetworks,       "current",              [Y,      Y,     Y,      Y,               Y,          N,             N,       N]),
    (Action::Revoke,            "active or expired",    [Y,      Y,     Y,      Y,               N,          N,             N,       N]),
    (Action::Activate,          "deactivated",          [N,      N,     N,      N,               Y,          N,             N,       N]),
    (Action::Delete,            "not deleted",          [Y,      Y,     Y,      Y,               Y,          Y,             NoOp,    NoOp]),
    (Action::Purge,             "deleted",              [N,      N,     N,      N,               N,          N,             N,       Y]),
];

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ConnectionDetails => "connection_details",
            Action::Regenerate => "regenerate",
            Action::SetNetworks => "set_networks",
            Action::Revoke => "revoke",
            Action::Activate => "activate",
            Action::Delete => "delete",
            Action::Purge => "purge",
        }
    }

    fn row(self) -> &'static (Action, &'static str, [Rule; 8]) {
        TRANSITIONS
            .iter()
            .find(|(action, _, _)| *action == self)
            .expect("every action has a row")
    }

    /// What this call does to a credential in `status`.
    pub fn rule(self, status: Status) -> Rule {
        let column = COLUMNS
            .iter()
            .position(|column| *column == status)
            .expect("every status has a column");
        self.row().2[column]
    }

    /// Whether the call applies at all (allowed, possibly on a condition).
    pub fn applies(self, status: Status) -> bool {
        !matches!(self.rule(status), Rule::Refuse | Rule::NoOp)
    }

    /// 55000: the credential's status does not allow the call.
    pub fn refuse(self, role: &str, status: Status) -> BiError {
        self.refuse_needing(role, status, self.row().1)
    }

    pub fn refuse_needing(self, role: &str, status: Status, needs: &'static str) -> BiError {
        BiError::WrongStatus {
            role: role.into(),
            status: status.as_str(),
            action: self.as_str(),
            needs,
        }
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    fn facts() -> Facts {
        Facts {
            role_exists: true,
            custody_problem: None,
            expired: false,
            syncing: false,
        }
    }

    #[test]
    fn names_round_trip_and_follow_the_sql_enum() {
        let names: Vec<_> = Status::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "pending",
                "active",
                "syncing",
                "failed",
                "deleting",
                "deactivated",
                "deleted",
                "expired"
            ]
        );
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()).unwrap(), status);
        }
        assert!(Status::parse("gone").is_err());
    }

    #[test]
    fn live_is_current_and_pending_active_syncing() {
        assert_eq!(
            Status::names(Status::is_live),
            ["pending", "active", "syncing"]
        );
        assert_eq!(
            Status::names(|s| !s.is_current()),
            ["failed", "deleting", "deleted"]
        );
        for status in Status::ALL {
            assert!(!status.is_live() || status.is_current());
        }
    }

    #[test]
    fn precedence_is_designs() {
        use Status::*;
        // (stored, role exists, custody problem, expired, syncing, replayed) -> shown
        let cases = [
            (Deleted, true, false, false, false, false, Deleting),
            (Deleted, true, false, false, false, true, Deleted),
            (Deactivated, false, false, true, false, true, Failed),
            (Active, true, true, false, false, true, Failed),
            (Deactivated, true, false, true, false, true, Deactivated),
            (Pending, true, false, true, true, false, Expired),
            (Pending, true, false, false, true, false, Pending),
            (Pending, true, false, false, true, true, Syncing),
            (Pending, true, false, false, false, true, Active),
            (Active, true, false, false, false, false, Active),
        ];
        for (stored, role_exists, copy, expired, syncing, replayed, shown) in cases {
            let facts = Facts {
                role_exists,
                custody_problem: copy.then(|| "a copy".to_string()),
                expired,
                syncing,
            };
            let (status, why) = effective(stored, &facts, || Ok(replayed)).unwrap();
            assert_eq!(
                status, shown,
                "{stored} {role_exists} {copy} {expired} {syncing}"
            );
            assert_eq!(why.is_some(), shown == Failed);
        }
        let gone = Facts {
            role_exists: false,
            ..facts()
        };
        let (_, why) = effective(Active, &gone, || Ok(true)).unwrap();
        assert_eq!(why.as_deref(), Some(ROLE_MISSING));
    }

    #[test]
    fn transitions_are_designs_table() {
        use Action::*;
        let live = [Status::Pending, Status::Active, Status::Syncing];
        for status in live {
            for action in [ConnectionDetails, Regenerate, Revoke, Delete] {
                assert_eq!(action.rule(status), Rule::Allow, "{action:?} {status}");
            }
            assert_eq!(Activate.rule(status), Rule::Refuse);
            assert_eq!(Purge.rule(status), Rule::Refuse);
        }
        assert_eq!(Regenerate.rule(Status::Expired), Rule::NeedsValidUntil);
        for status in Status::ALL {
            assert_eq!(SetNetworks.applies(status), status.is_current());
        }
        assert_eq!(Regenerate.rule(Status::Failed), Rule::RecreatesRole);
        assert_eq!(Activate.rule(Status::Deactivated), Rule::Allow);
        assert_eq!(Delete.rule(Status::Deleting), Rule::NoOp);
        assert_eq!(Purge.rule(Status::Deleted), Rule::Allow);
        assert_eq!(Purge.rule(Status::Deleting), Rule::Refuse);
        for status in Status::ALL {
            assert_eq!(
                Revoke.applies(status),
                status.is_live() || status == Status::Expired
            );
        }
    }
}
