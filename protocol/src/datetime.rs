//! The `DATETIME` field: `DD/MM/YYYY HH:MM:SS`, what the RPC logger prints.

use chrono::{DateTime, NaiveDateTime, TimeZone};

/// chrono format string of the DATETIME field.
pub const FORMAT: &str = "%d/%m/%Y %H:%M:%S";

/// Formats a time as a DATETIME field.
pub fn format<Tz: TimeZone>(time: &DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    time.format(FORMAT).to_string()
}

/// The local clock as a DATETIME field.
pub fn now() -> String {
    format(&chrono::Local::now())
}

/// True when `field` is a DATETIME in exactly the protocol's format (zero
/// padded, 19 bytes) and names a real calendar time. Servers use this to tell
/// a DATETIME field from a USER field sent by older clients.
pub fn is_datetime(field: &str) -> bool {
    let bytes = field.as_bytes();
    if bytes.len() != 19 {
        return false;
    }
    let shape_ok = bytes.iter().enumerate().all(|(i, &b)| match i {
        2 | 5 => b == b'/',
        10 => b == b' ',
        13 | 16 => b == b':',
        _ => b.is_ascii_digit(),
    });
    shape_ok && NaiveDateTime::parse_from_str(field, FORMAT).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_exact_format() {
        assert!(is_datetime("21/11/2026 09:05:07"));
        assert!(is_datetime("29/02/2024 23:59:59"));
    }

    #[test]
    fn rejects_near_misses() {
        for bad in [
            "21/11/2026 9:05:07",
            "2026-11-21 09:05:07",
            "31/02/2026 09:05:07",
            "21/11/2026 09:05:07 ",
            "alice",
            "",
            "21/13/2026 09:05:07",
            "21/11/2026 24:00:00",
        ] {
            assert!(!is_datetime(bad), "{bad:?} must not be a DATETIME");
        }
    }

    #[test]
    fn formatted_now_is_recognised() {
        assert!(is_datetime(&now()));
    }
}
