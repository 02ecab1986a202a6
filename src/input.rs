//! Text a caller hands bi_access, bounded: how long it may be, which
//! characters it may hold, and how an error message shows it.
//!
//! Names (labels, target names) and hosts reach BI tools' forms, URLs and
//! logs: no control characters and no invisible formatting characters (the
//! zero-width ones, bidirectional overrides and isolates, which make a name
//! read as another). An org name is display text: any script, but no control
//! or bidirectional formatting characters. An error quotes at most
//! 40 characters of an input (`error::shown`), so a 10 MB argument never comes
//! back in a message (or in the server log with it).

use crate::error::{shown, BiError, Result};

/// Unicode's format characters (general category Cf), line and paragraph
/// separators: invisible, and able to reorder or hide what is displayed.
fn invisible(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x2028..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// Bidirectional formatting: marks, embeddings, overrides and isolates.
fn bidirectional(c: char) -> bool {
    matches!(c as u32, 0x061C | 0x200E | 0x200F | 0x202A..=0x202E | 0x2066..=0x2069)
}

fn bad(what: &str, rule: String) -> BiError {
    BiError::InvalidParameter(format!("{what} {rule}"))
}

/// A name (a label, a target name): 1 to `max` bytes, not blank, without
/// surrounding spaces, control or invisible characters.
pub fn name(what: &str, value: &str, max: usize) -> Result<()> {
    if value.trim().is_empty() || value.len() > max || value.trim() != value {
        return Err(bad(
            what,
            format!("must be 1 to {max} bytes, not blank and without surrounding spaces"),
        ));
    }
    if value.chars().any(|c| c.is_control() || invisible(c)) {
        return Err(bad(
            what,
            format!(
                "{} holds a control or invisible formatting character (zero-width, bidirectional)",
                shown(value)
            ),
        ));
    }
    Ok(())
}

/// Display text (an org name): at most `max` bytes, without control or
/// bidirectional formatting characters.
pub fn display_text(what: &str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        return Err(bad(
            what,
            format!("must be at most {max} bytes, not {}", value.len()),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() || bidirectional(c) || matches!(c, '\u{2028}' | '\u{2029}'))
    {
        return Err(bad(
            what,
            format!(
                "{} holds a control or bidirectional formatting character",
                shown(value)
            ),
        ));
    }
    Ok(())
}

/// A host as libpq takes it alone: a name, an IPv4 or IPv6 address (bare or
/// in brackets), or a Unix socket directory; never a port (`h:5432`, which a
/// URL would carry as the host `[h:5432]`), a list or a URL's delimiters.
pub fn host(what: &str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() || value.len() > max {
        return Err(bad(what, format!("must be 1 to {max} bytes")));
    }
    if value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || invisible(c) || "@?#,".contains(c))
    {
        return Err(bad(
            what,
            format!(
                "{} holds a space, a control or invisible character, or one of @ ? # ,",
                shown(value)
            ),
        ));
    }
    if value.starts_with('/') {
        return Ok(());
    }
    let bare = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    // An IPv6 address may carry a zone (fe80::1%eth0).
    let address = bare.split('%').next().unwrap_or(bare);
    if (value.contains(':') || value.contains('[') || value.contains(']'))
        && address.parse::<std::net::Ipv6Addr>().is_err()
    {
        return Err(bad(
            what,
            format!(
                "{} is not a host name or an IP address: give the port as port, not in the host",
                shown(value)
            ),
        ));
    }
    if value.contains('/') {
        return Err(bad(
            what,
            format!("{} is not a host name or an IP address", shown(value)),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn errors_show_a_short_prefix() {
        assert_eq!(shown("acme"), "\"acme\"");
        let long = "x".repeat(10_000_000);
        let s = shown(&long);
        assert!(s.len() < 80, "{s}");
        assert!(s.ends_with("(10000000 bytes)"), "{s}");
        assert_eq!(shown("a\u{202E}b"), "\"a\\u{202e}b\"");
    }

    #[test]
    fn names_refuse_invisible_characters() {
        assert!(name("label", "eu-replica", 63).is_ok());
        assert!(name("label", "Zürich 東京", 63).is_ok());
        for bad in [
            "",
            " ",
            " a",
            "a ",
            "a\u{200B}b",
            "a\u{202E}b",
            "a\u{2066}b",
            "a\nb",
            "a\u{FEFF}",
        ] {
            assert!(name("label", bad, 63).is_err(), "{bad:?}");
        }
        assert!(name("label", &"x".repeat(64), 63).is_err());
    }

    #[test]
    fn display_text_takes_any_script_but_no_formatting() {
        assert!(display_text("org_name", "شركة {org_id} – Ünïcode", 256).is_ok());
        assert!(display_text("org_name", "evil\u{202E}cod.exe", 256).is_err());
        assert!(display_text("org_name", "a\tb", 256).is_err());
        assert!(display_text("org_name", &"x".repeat(257), 256).is_err());
    }

    #[test]
    fn hosts_carry_no_port() {
        for good in [
            "replica.example.com",
            "10.0.0.1",
            "::1",
            "[::1]",
            "fe80::1%eth0",
            "/var/run/postgresql",
            "bücher.example",
        ] {
            assert!(host("host", good, 255).is_ok(), "{good}");
        }
        for bad in [
            "h:5432",
            "[::1]:5432",
            "10.0.0.1:5432",
            "h1,h2",
            "user@h",
            "h?x",
            "a b",
            "h\u{200B}",
            "",
            "h/x",
            "[h]",
        ] {
            assert!(host("host", bad, 255).is_err(), "{bad}");
        }
    }
}
