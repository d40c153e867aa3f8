//! The `DATETIME` field: `DD/MM/YYYY HH:MM:SS`, what the RPC logger prints.

use chrono::{DateTime, NaiveDate, TimeZone};

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
    shape_ok && names_a_real_time(bytes)
}

/// Whether a field of the right shape names a real calendar time, checked
/// from its digits. Every request carries a DATETIME, and matching it
/// against [`FORMAT`] with chrono's parser is a measurable share of the
/// directory server's worker time; the property test below holds this to
/// exactly what that parser accepts.
fn names_a_real_time(bytes: &[u8]) -> bool {
    let number = |at: usize, len: usize| {
        bytes[at..at + len]
            .iter()
            .fold(0u32, |n, digit| n * 10 + u32::from(digit - b'0'))
    };
    let (day, month, year) = (number(0, 2), number(3, 2), number(6, 4));
    let (hour, minute, second) = (number(11, 2), number(14, 2), number(17, 2));
    // chrono reads second 60 as a leap second.
    hour < 24
        && minute < 60
        && second <= 60
        && NaiveDate::from_ymd_opt(year as i32, month, day).is_some()
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

    proptest::proptest! {
        /// The digit check accepts exactly what chrono's parser of
        /// [`FORMAT`] accepts.
        #[test]
        fn agrees_with_chrono(
            day in 0u32..40, month in 0u32..15, year in 0u32..10000,
            hour in 0u32..30, minute in 0u32..70, second in 0u32..70,
        ) {
            let field = format!("{day:02}/{month:02}/{year:04} {hour:02}:{minute:02}:{second:02}");
            let chrono = chrono::NaiveDateTime::parse_from_str(&field, FORMAT).is_ok();
            proptest::prop_assert_eq!(is_datetime(&field), chrono, "{}", field);
        }
    }

    #[test]
    fn formatted_now_is_recognised() {
        assert!(is_datetime(&now()));
    }
}
