//! MAC addresses as NASes send them in Calling-Station-Id: compared case-
//! and separator-insensitively ("aa-bb-cc-dd-ee-ff" = "AABB.CCDD.EEFF").

/// Parses 12 hex digits with any of `:`, `-`, `.` or no separators.
pub fn parse(text: &[u8]) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut nibbles = 0usize;
    for &c in text {
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            b':' | b'-' | b'.' => continue,
            _ => return None,
        };
        if nibbles == 12 {
            return None;
        }
        out[nibbles / 2] |= if nibbles % 2 == 0 { v << 4 } else { v };
        nibbles += 1;
    }
    (nibbles == 12).then_some(out)
}

/// The canonical stored form, "AA:BB:CC:DD:EE:FF".
pub fn format(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_and_case_do_not_matter() {
        let want = [0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF];
        for s in [
            "AA:BB:CC:DD:EE:FF",
            "aa-bb-cc-dd-ee-ff",
            "AABB.CCDD.EEFF",
            "aabbccddeeff",
        ] {
            assert_eq!(parse(s.as_bytes()), Some(want), "{s}");
        }
        assert_eq!(format(&want), "AA:BB:CC:DD:EE:FF");
    }

    #[test]
    fn wrong_lengths_and_characters_are_refused() {
        for s in [
            "",
            "AA:BB:CC:DD:EE",
            "AA:BB:CC:DD:EE:FF:00",
            "GG:BB:CC:DD:EE:FF",
            "AA BB CC DD EE FF",
        ] {
            assert_eq!(parse(s.as_bytes()), None, "{s}");
        }
    }
}
