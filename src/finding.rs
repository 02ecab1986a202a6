//! One row of `bi_access.check()`: what `health` and `capacity` find.

pub struct Finding {
    /// "error", "warning" or "info".
    pub severity: &'static str,
    pub object: String,
    pub finding: String,
    pub fix: String,
}
