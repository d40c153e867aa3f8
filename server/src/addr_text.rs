//! Decimal text of IP addresses and ports without `core::fmt`.
//!
//! LIST_USERS writes an IP and a port for every connected user. Through
//! `to_string()` that was two heap strings and the formatting machinery per
//! entry, about a third of the server's CPU for a 10,000-user listing (see
//! docs/PERFORMANCE.md). These stack buffers produce the same text; the
//! protocol crate still frames it as fields.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};

/// Longest text of an IP address: a full IPv6 address with an embedded
/// IPv4 tail is 45 bytes.
const IP_TEXT_MAX: usize = 46;

/// The text of one IP address, on the stack.
pub struct IpText {
    /// The characters; only `len` of them are used.
    buf: [u8; IP_TEXT_MAX],
    /// How many bytes of `buf` hold the text.
    len: usize,
}

impl IpText {
    /// Formats `ip` exactly as `ip.to_string()` does.
    pub fn new(ip: IpAddr) -> IpText {
        let mut text = IpText {
            buf: [0; IP_TEXT_MAX],
            len: 0,
        };
        match ip {
            IpAddr::V4(v4) => text.push_v4(v4),
            IpAddr::V6(v6) => {
                // Rare in practice; `fmt` into the stack buffer keeps the
                // exact canonical form (zero compression) without a heap
                // string.
                let mut cursor = std::io::Cursor::new(&mut text.buf[..]);
                if write!(cursor, "{v6}").is_ok() {
                    // Bounded by IP_TEXT_MAX, which fits in usize.
                    text.len = usize::try_from(cursor.position()).unwrap_or(0);
                }
            }
        }
        text
    }

    fn push_v4(&mut self, ip: Ipv4Addr) {
        for (i, octet) in ip.octets().into_iter().enumerate() {
            if i > 0 {
                self.buf[self.len] = b'.';
                self.len += 1;
            }
            self.len += put_decimal(&mut self.buf[self.len..], u16::from(octet));
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits, dots, colons and hex letters are ever written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

/// The decimal text of a port, on the stack.
pub struct PortText {
    /// Up to five digits.
    buf: [u8; 5],
    /// How many bytes of `buf` hold the digits.
    len: usize,
}

impl PortText {
    /// Formats `port` exactly as `port.to_string()` does.
    pub fn new(port: u16) -> PortText {
        let mut buf = [0; 5];
        let len = put_decimal(&mut buf, port);
        PortText { buf, len }
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

/// Writes the decimal digits of `value` at the start of `out` (which has
/// room for five digits) and returns how many were written.
fn put_decimal(out: &mut [u8], value: u16) -> usize {
    let mut digits = [0u8; 5];
    let mut n = 0;
    let mut rest = value;
    loop {
        digits[n] = b'0' + (rest % 10) as u8;
        n += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for (slot, digit) in out.iter_mut().zip(digits[..n].iter().rev()) {
        *slot = *digit;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_as_to_string() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "255.255.255.255",
            "10.20.3.199",
            "::",
            "::1",
            "2001:db8::8a2e:370:7334",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:1.2.3.4",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(IpText::new(ip).as_str(), ip.to_string());
        }
        for port in [0u16, 1, 9, 10, 99, 100, 4000, 9999, 10000, 65535] {
            assert_eq!(PortText::new(port).as_str(), port.to_string());
        }
    }
}
