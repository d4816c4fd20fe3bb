//! Request bytes as text. A NAS may put any bytes in User-Name or
//! Acct-Session-Id: a NUL, bytes that are not UTF-8. PostgreSQL refuses
//! both in a `text` column (`invalid byte sequence for encoding "UTF8"`),
//! and a lossy conversion would make two sessions that differ in one
//! invalid byte the same row and lose the bytes a CoA must echo.
//!
//! So such values are stored in a reversible form, the same on both
//! backends:
//!
//! - a NUL byte and every byte that is not part of valid UTF-8 is written
//!   as `\xHH` (two lowercase hex digits);
//! - a backslash that is followed by `x` and two hex digits is written as
//!   `\x5c`, so it cannot be mistaken for an escape;
//! - everything else is unchanged, so `alice`, `81a00003` and even
//!   `DOMAIN\user` are stored exactly as sent.
//!
//! Reading it back, every `\xHH` is the byte `HH` and everything else is
//! itself ([`unstored`]). Sessions are keyed on the raw bytes
//! (`acctuniqueid`), never on this form.
//!
//! Written by hand: no crate does this particular escape (it must leave
//! every ordinary value untouched, which percent- or `Debug`-escaping
//! would not).

use std::borrow::Cow;

/// The text stored for `bytes` (see the module documentation).
pub fn stored(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(bytes) {
        if !s
            .bytes()
            .enumerate()
            .any(|(i, b)| needs_escape(s.as_bytes(), i, b))
        {
            return Cow::Borrowed(s);
        }
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid();
        let mut start = 0;
        for (i, b) in valid.bytes().enumerate() {
            if needs_escape(valid.as_bytes(), i, b) {
                out.push_str(&valid[start..i]);
                push_hex(&mut out, b);
                start = i + 1;
            }
        }
        out.push_str(&valid[start..]);
        for &b in chunk.invalid() {
            push_hex(&mut out, b);
        }
    }
    Cow::Owned(out)
}

/// The bytes a stored text stands for: the inverse of [`stored`].
pub fn unstored(text: &str) -> Cow<'_, [u8]> {
    let bytes = text.as_bytes();
    if !bytes.windows(4).any(|w| escape_at(w).is_some()) {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes.get(i..i + 4).and_then(escape_at) {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

/// `s` safe to print on a terminal or in a one-line-per-event log: every
/// control character (C0, DEL, C1: newline, carriage return, escape,
/// backspace, NUL, ...) and the bidirectional overrides that reorder what
/// a terminal shows are written as escapes (`\n`, `\r`, `\t`,
/// `\u{1b}`), so a User-Name can neither start a forged log line nor
/// drive the terminal. Everything else is unchanged.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_printing_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_printing_escape(c) => {
                out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_printing_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Whether byte `b` at `i` of valid UTF-8 `s` must be escaped.
fn needs_escape(s: &[u8], i: usize, b: u8) -> bool {
    b == 0 || (b == b'\\' && s.get(i..i + 4).is_some_and(|w| escape_at(w).is_some()))
}

/// `\xHH` at the start of `w` (4 bytes): the byte it stands for.
fn escape_at(w: &[u8]) -> Option<u8> {
    match w {
        [b'\\', b'x', h, l] => Some(hex_digit(*h)? << 4 | hex_digit(*l)?),
        _ => None,
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn push_hex(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('\\');
    out.push('x');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 15)]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_values_are_stored_as_they_are() {
        for v in [
            "alice",
            "81a00003",
            "DOMAIN\\user",
            "a\\x",
            "a\\x4",
            "ünï",
            "",
        ] {
            assert!(matches!(stored(v.as_bytes()), Cow::Borrowed(s) if s == v));
            assert!(matches!(unstored(v), Cow::Borrowed(b) if b == v.as_bytes()));
        }
    }

    #[test]
    fn nul_invalid_bytes_and_escape_lookalikes_are_escaped() {
        assert_eq!(stored(b"a\0b"), "a\\x00b");
        assert_eq!(stored(b"sess\xff"), "sess\\xff");
        assert_eq!(stored(b"sess\xfe"), "sess\\xfe");
        assert_eq!(stored(b"lit\\x41"), "lit\\x5cx41");
        assert_eq!(stored(b"\\\0"), "\\\\x00");
        // A truncated multi-byte sequence: each byte on its own.
        assert_eq!(stored(b"\xc3"), "\\xc3");
        assert_eq!(stored("é".as_bytes()), "é");
    }

    #[test]
    fn unstoring_inverts_storing() {
        let cases: [&[u8]; 8] = [
            b"a\0b",
            b"sess\xff",
            b"lit\\x41",
            b"\\\0",
            b"\\xa\xff",
            b"\\\\x41",
            b"\\x4",
            b"\xe2\x82",
        ];
        for raw in cases {
            assert_eq!(&*unstored(&stored(raw)), raw, "{raw:?}");
        }
        // Upper-case hex from elsewhere reads too.
        assert_eq!(&*unstored("\\xFF"), b"\xff");
    }

    #[test]
    fn printing_escapes_control_characters_and_bidi_overrides_only() {
        assert_eq!(printable("alice"), "alice");
        assert_eq!(
            printable("x\n2026-12-01T00:00:00Z INFO accept user=admin"),
            "x\\n2026-12-01T00:00:00Z INFO accept user=admin"
        );
        assert_eq!(
            printable("a\x1b[2Jb\r\x08\0\t"),
            "a\\u{1b}[2Jb\\r\\u{8}\\u{0}\\t"
        );
        assert_eq!(printable("ab\u{202e}cd"), "ab\\u{202e}cd");
        assert_eq!(printable("DOMAIN\\user ünï"), "DOMAIN\\user ünï");
    }

    #[test]
    fn two_ids_that_differ_in_an_invalid_byte_stay_different() {
        assert_ne!(stored(b"id\xff"), stored(b"id\xfe"));
    }
}
