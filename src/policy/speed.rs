//! Speeds as operators type them and as MikroTik wants them.
//!
//! Services store kbit/s. Input forms `2000`, `2000k`, `2M`, `1.5M`,
//! `0.5M`, `1G` all normalise (`2M` -> 2000 kbit/s); the wire form is
//! `2000k`. Invalid input is refused when written, never sent.

use std::fmt;

/// 100 Gbit/s: anything above is a typo, not a plan.
const MAX_KBPS: u64 = 100_000_000;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid speed {input:?}: {reason} (use e.g. 2000, 2000k, 1.5M, 1G)")]
pub struct SpeedError {
    input: String,
    reason: &'static str,
}

/// Parses a speed into kbit/s.
pub fn parse_kbps(input: &str) -> Result<u32, SpeedError> {
    let err = |reason| SpeedError {
        input: input.to_owned(),
        reason,
    };
    let s = input.trim();
    let (number, multiplier) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1u64),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1_000),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 1_000_000),
        Some(b'0'..=b'9') => (s, 1),
        Some(_) => return Err(err("unknown unit, expected k, M or G")),
        None => return Err(err("empty")),
    };
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(err("no number"));
    }
    if !int_part
        .bytes()
        .chain(frac_part.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return Err(err("not a number"));
    }
    if int_part.len() > 9 || frac_part.len() > 6 {
        return Err(err("too many digits"));
    }
    let int: u64 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().map_err(|_| err("not a number"))?
    };
    // Fractions are exact decimal: 1.5M = 1500k; a fraction of a kbit/s is refused.
    let frac_scale = 10u64.pow(frac_part.len() as u32);
    let frac: u64 = if frac_part.is_empty() {
        0
    } else {
        frac_part.parse().map_err(|_| err("not a number"))?
    };
    let whole = int * multiplier;
    let frac_kbps = frac * multiplier;
    if frac_kbps % frac_scale != 0 {
        return Err(err("finer than 1k"));
    }
    let kbps = whole + frac_kbps / frac_scale;
    if kbps > MAX_KBPS {
        return Err(err("above 100G"));
    }
    Ok(kbps as u32)
}

/// The MikroTik wire form of a speed: `2000k`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kbps(pub u32);

impl fmt::Display for Kbps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}k", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_forms_normalise_to_kbps() {
        for (input, kbps) in [
            ("2000", 2000),
            ("2000k", 2000),
            ("2M", 2000),
            ("1.5M", 1500),
            ("0.5M", 500),
            (".5M", 500),
            ("1G", 1_000_000),
            ("2.25G", 2_250_000),
            (" 10M ", 10_000),
            ("0", 0),
        ] {
            assert_eq!(parse_kbps(input), Ok(kbps), "{input}");
        }
    }

    #[test]
    fn nonsense_is_refused_with_the_input_named() {
        for input in [
            "",
            "M",
            "-1M",
            "1.5k",
            "10 M",
            "1e3",
            "abc",
            "1.2.3M",
            "101G",
            "1T",
            "1.0000005G",
        ] {
            let e = parse_kbps(input).unwrap_err();
            assert!(
                e.to_string().contains(&format!("{input:?}")),
                "{input}: {e}"
            );
        }
    }

    #[test]
    fn wire_form_is_k_units() {
        assert_eq!(Kbps(parse_kbps("1.5M").unwrap()).to_string(), "1500k");
    }
}
