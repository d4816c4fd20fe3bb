//! Attribute dictionaries in FreeRADIUS's format, and reply attributes
//! encoded by name through them: what radreply rows (and other configured
//! reply attributes) may name.
//!
//! Written by hand: the `radius` crate's dictionary parser reads one file
//! without `$INCLUDE`, knows no `has_tag` or `encrypt=` flags and encodes
//! no ipv6prefix or ifid; FreeRADIUS's own directory
//! (`/usr/share/freeradius`) needs all of those. Sans-IO: files are text
//! passed in, `$INCLUDE` asks the caller for the named file's text.
//!
//! The dictionaries shardius ships (RFC attributes, Microsoft, MikroTik,
//! Cisco, Juniper and ERX, Huawei, WISPr) are in `proto/dictionaries/`,
//! compiled in; `dictionary.directory` adds a FreeRADIUS directory over them.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// How a value is written on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttrType {
    String,
    Octets,
    Integer,
    Byte,
    Short,
    Integer64,
    Signed,
    Date,
    IpAddr,
    Ipv6Addr,
    Ipv6Prefix,
    Ipv4Prefix,
    Ifid,
    Ether,
    /// A type shardius cannot encode (tlv, abinary, extended, ...).
    Other(String),
}

impl AttrType {
    fn parse(ty: &str) -> AttrType {
        // `octets[24]`: a fixed size, which encoding checks no further.
        let base = ty.split('[').next().unwrap_or(ty);
        match base {
            "string" => AttrType::String,
            "octets" => AttrType::Octets,
            "integer" => AttrType::Integer,
            "byte" => AttrType::Byte,
            "short" => AttrType::Short,
            "integer64" => AttrType::Integer64,
            "signed" => AttrType::Signed,
            "date" => AttrType::Date,
            "ipaddr" => AttrType::IpAddr,
            "ipv6addr" => AttrType::Ipv6Addr,
            "ipv6prefix" => AttrType::Ipv6Prefix,
            "ipv4prefix" => AttrType::Ipv4Prefix,
            "ifid" => AttrType::Ifid,
            "ether" => AttrType::Ether,
            other => AttrType::Other(other.to_owned()),
        }
    }
}

/// One attribute of a dictionary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttrSpec {
    pub name: String,
    /// 0 for standard attributes.
    pub vendor: u32,
    /// The attribute number; above 255 (FreeRADIUS's internal attributes,
    /// e.g. Cleartext-Password) it is not a RADIUS attribute.
    pub number: u32,
    pub ty: AttrType,
    pub tagged: bool,
    /// FreeRADIUS's `encrypt=` (1 User-Password, 2 Tunnel-Password style).
    pub encrypt: u8,
    /// VALUE names (lower case) and their numbers.
    values: HashMap<String, u32>,
}

/// A reply attribute encoded once at load time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// 0 for standard attributes.
    pub vendor: u32,
    pub ty: u8,
    pub value: Box<[u8]>,
}

/// Attributes by name (case-insensitive, as FreeRADIUS looks them up).
#[derive(Clone, Debug, Default)]
pub struct Dictionary {
    attrs: HashMap<String, Arc<AttrSpec>>,
    vendors: HashMap<String, u32>,
}

/// Where a definition came from, for messages.
fn at(file: &str, line: usize) -> String {
    format!("{file}:{line}")
}

const BUILTIN: &[(&str, &str)] = &[
    ("rfc", include_str!("dictionaries/rfc")),
    ("microsoft", include_str!("dictionaries/microsoft")),
    ("mikrotik", include_str!("dictionaries/mikrotik")),
    ("cisco", include_str!("dictionaries/cisco")),
    ("juniper", include_str!("dictionaries/juniper")),
    ("huawei", include_str!("dictionaries/huawei")),
    ("wispr", include_str!("dictionaries/wispr")),
];

/// The built-in dictionaries, parsed once per process.
pub fn builtin() -> &'static Arc<Dictionary> {
    static BUILT: std::sync::OnceLock<Arc<Dictionary>> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| Arc::new(Dictionary::builtin()))
}

impl Dictionary {
    /// The dictionaries compiled into shardius.
    pub fn builtin() -> Dictionary {
        let mut d = Dictionary::default();
        for (name, text) in BUILTIN {
            let problems = d.parse(name, text, &mut |f| Err(format!("no file {f}")));
            // The built-in files are checked by a unit test; a problem
            // here is a build defect, never input.
            debug_assert!(problems.is_empty(), "{problems:?}");
        }
        d
    }

    /// Reads one dictionary file in FreeRADIUS's format over this one
    /// (a later definition of a name replaces the earlier). `include`
    /// returns the text of a file named by `$INCLUDE` (relative to the
    /// including file, as FreeRADIUS resolves it) and its name. Returns
    /// the lines that were not understood, by file and line; the rest of
    /// the file is still read.
    pub fn parse(
        &mut self,
        file: &str,
        text: &str,
        include: &mut dyn FnMut(&str) -> Result<String, String>,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        self.parse_into(file, text, include, &mut problems, 0);
        problems
    }

    fn parse_into(
        &mut self,
        file: &str,
        text: &str,
        include: &mut dyn FnMut(&str) -> Result<String, String>,
        problems: &mut Vec<String>,
        depth: usize,
    ) {
        let mut vendor: Option<u32> = None;
        let mut skipping_tlv = 0usize;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let here = at(file, i + 1);
            match words[0] {
                "$INCLUDE" | "$INCLUDE-" => {
                    let Some(name) = words.get(1) else {
                        problems.push(format!("{here}: $INCLUDE without a file"));
                        continue;
                    };
                    if depth > 16 {
                        problems.push(format!("{here}: $INCLUDE nested too deep"));
                        continue;
                    }
                    match include(name) {
                        Ok(inner) => self.parse_into(name, &inner, include, problems, depth + 1),
                        Err(_) if words[0] == "$INCLUDE-" => {}
                        Err(e) => problems.push(format!("{here}: {e}")),
                    }
                }
                "VENDOR" => match (words.get(1), words.get(2).and_then(|n| number(n))) {
                    (Some(name), Some(id)) => {
                        // `format=t,l` other than 1,1: types or lengths of
                        // other sizes, which shardius does not encode.
                        if let Some(f) = words.get(3).and_then(|f| f.strip_prefix("format=")) {
                            if f != "1,1" && f != "1,1,c" {
                                problems.push(format!(
                                    "{here}: vendor {name} uses format={f}; its attributes are not usable"
                                ));
                                self.vendors.insert(name.to_ascii_lowercase(), u32::MAX);
                                continue;
                            }
                        }
                        self.vendors.insert(name.to_ascii_lowercase(), id);
                    }
                    _ => problems.push(format!("{here}: VENDOR needs a name and a number")),
                },
                "BEGIN-VENDOR" => match words
                    .get(1)
                    .and_then(|v| self.vendors.get(&v.to_ascii_lowercase()))
                {
                    Some(id) => vendor = Some(*id),
                    None => {
                        problems.push(format!("{here}: BEGIN-VENDOR of an unknown vendor"));
                        // Its attributes must not land in the standard space.
                        vendor = Some(u32::MAX);
                    }
                },
                "END-VENDOR" => vendor = None,
                "BEGIN-TLV" => skipping_tlv += 1,
                "END-TLV" => skipping_tlv = skipping_tlv.saturating_sub(1),
                "ATTRIBUTE" if skipping_tlv == 0 => {
                    if let Err(e) = self.attribute(&words, vendor) {
                        problems.push(format!("{here}: {e}"));
                    }
                }
                "VALUE" => {
                    let (Some(attr), Some(name), Some(n)) = (
                        words.get(1),
                        words.get(2),
                        words.get(3).and_then(|n| number(n)),
                    ) else {
                        problems.push(format!(
                            "{here}: VALUE needs an attribute, a name and a number"
                        ));
                        continue;
                    };
                    // FreeRADIUS's own files give VALUEs of attributes
                    // defined in files it reads later, or never: skipped.
                    if let Some(spec) = self.attrs.get_mut(&attr.to_ascii_lowercase()) {
                        Arc::make_mut(spec)
                            .values
                            .entry(name.to_ascii_lowercase())
                            .or_insert(n);
                    }
                }
                // Keywords of other dictionary versions, and TLV members:
                // nothing shardius encodes.
                "ATTRIBUTE" | "PROTOCOL" | "BEGIN-PROTOCOL" | "END-PROTOCOL" | "FLAGS"
                | "ALIAS" | "MEMBER" | "STRUCT" | "ENUM" | "DEFINE" => {}
                other => problems.push(format!("{here}: unknown keyword {other}")),
            }
        }
    }

    fn attribute(&mut self, words: &[&str], vendor: Option<u32>) -> Result<(), String> {
        let (Some(name), Some(num), Some(ty)) = (words.get(1), words.get(2), words.get(3)) else {
            return Err("ATTRIBUTE needs a name, a number and a type".into());
        };
        let mut vendor = vendor.unwrap_or(0);
        let mut tagged = false;
        let mut encrypt = 0;
        if let Some(rest) = words.get(4) {
            for flag in rest.split(',') {
                match flag {
                    "has_tag" => tagged = true,
                    f if f.starts_with("encrypt=") => {
                        encrypt = f[8..].parse().unwrap_or(0);
                    }
                    // The old form: the vendor's name as the fourth word.
                    f if self.vendors.contains_key(&f.to_ascii_lowercase()) => {
                        vendor = self.vendors[&f.to_ascii_lowercase()];
                    }
                    _ => {}
                }
            }
        }
        // "241.1" (extended) and "1.2" (TLV member) numbers: not encodable.
        let (number, ty) = match number(num) {
            Some(n) => (n, AttrType::parse(ty)),
            None => (0, AttrType::Other(format!("number {num}"))),
        };
        let spec = AttrSpec {
            name: (*name).to_owned(),
            vendor,
            number,
            ty,
            tagged,
            encrypt,
            values: HashMap::new(),
        };
        self.attrs.insert(name.to_ascii_lowercase(), Arc::new(spec));
        Ok(())
    }

    /// The attribute called `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&AttrSpec> {
        self.attrs.get(&name.to_ascii_lowercase()).map(|a| &**a)
    }

    /// How many attributes it knows.
    pub fn len(&self) -> usize {
        self.attrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.attrs.is_empty()
    }

    /// Encodes `value` for the attribute `name`, which may carry a tag as
    /// FreeRADIUS writes it (`Tunnel-Type:1`). `Err` says what is wrong,
    /// naming the attribute.
    pub fn encode(&self, name: &str, value: &str) -> Result<Encoded, String> {
        let (base, tag) = match name.rsplit_once(':') {
            Some((b, t)) if t.chars().all(|c| c.is_ascii_digit()) && !t.is_empty() => {
                let tag: u8 = t
                    .parse()
                    .ok()
                    .filter(|t| (1..=31).contains(t))
                    .ok_or_else(|| format!("{name}: a tag is 1 to 31"))?;
                (b, Some(tag))
            }
            _ => (name, None),
        };
        let spec = self
            .get(base)
            .ok_or_else(|| format!("unknown attribute {base:?} (not in any dictionary)"))?;
        let n = &spec.name;
        if spec.vendor == u32::MAX {
            return Err(format!(
                "{n} belongs to a vendor whose dictionary shardius could not use (see the warnings at load)"
            ));
        }
        if spec.number > 255 {
            return Err(format!(
                "{n} is not a RADIUS attribute (FreeRADIUS's internal number {})",
                spec.number
            ));
        }
        if tag.is_some() && !spec.tagged {
            return Err(format!("{n} takes no tag"));
        }
        if spec.encrypt != 0 {
            return Err(format!(
                "{n} is sent encrypted (encrypt={}), which reply attributes from the database cannot be",
                spec.encrypt
            ));
        }
        let v = value.trim_matches('"');
        let bad = |what: &str| format!("{n}: {value:?} is not {what}");
        let integer = |v: &str| -> Result<u64, String> {
            v.trim()
                .parse::<u64>()
                .ok()
                .or_else(|| {
                    v.trim()
                        .strip_prefix("0x")
                        .and_then(|h| u64::from_str_radix(h, 16).ok())
                })
                .or_else(|| {
                    spec.values
                        .get(&v.trim().to_ascii_lowercase())
                        .map(|&x| u64::from(x))
                })
                .ok_or_else(|| bad("a number or one of its VALUE names"))
        };
        let mut out: Vec<u8> = match &spec.ty {
            AttrType::String => v.as_bytes().to_vec(),
            AttrType::Octets => match v.strip_prefix("0x") {
                Some(h) => hex::decode(h).map_err(|_| bad("0x and hex digits"))?,
                None => v.as_bytes().to_vec(),
            },
            AttrType::Integer => u32::try_from(integer(v)?)
                .map_err(|_| bad("a 32-bit number"))?
                .to_be_bytes()
                .to_vec(),
            AttrType::Byte => vec![u8::try_from(integer(v)?).map_err(|_| bad("0 to 255"))?],
            AttrType::Short => u16::try_from(integer(v)?)
                .map_err(|_| bad("0 to 65535"))?
                .to_be_bytes()
                .to_vec(),
            AttrType::Integer64 => integer(v)?.to_be_bytes().to_vec(),
            AttrType::Signed => v
                .trim()
                .parse::<i32>()
                .map_err(|_| bad("a signed 32-bit number"))?
                .to_be_bytes()
                .to_vec(),
            AttrType::Date => date(v.trim())
                .ok_or_else(|| bad("a date (seconds since 1970, or YYYY-MM-DD HH:MM:SS in UTC)"))?
                .to_be_bytes()
                .to_vec(),
            AttrType::IpAddr => v
                .trim()
                .parse::<Ipv4Addr>()
                .map_err(|_| bad("an IPv4 address"))?
                .octets()
                .to_vec(),
            AttrType::Ipv6Addr => v
                .trim()
                .parse::<Ipv6Addr>()
                .map_err(|_| bad("an IPv6 address"))?
                .octets()
                .to_vec(),
            AttrType::Ipv6Prefix => {
                let (addr, len) = prefix::<Ipv6Addr>(v.trim(), 128)
                    .ok_or_else(|| bad("an IPv6 prefix (2001:db8::/48)"))?;
                let bytes = usize::from(len).div_ceil(8);
                let mut out = vec![0, len];
                out.extend_from_slice(&addr.octets()[..bytes]);
                out
            }
            AttrType::Ipv4Prefix => {
                let (addr, len) = prefix::<Ipv4Addr>(v.trim(), 32)
                    .ok_or_else(|| bad("an IPv4 prefix (192.0.2.0/24)"))?;
                let mut out = vec![0, len];
                out.extend_from_slice(&addr.octets());
                out
            }
            AttrType::Ifid => {
                let groups: Vec<u16> = v
                    .trim()
                    .split(':')
                    .map(|g| u16::from_str_radix(g, 16))
                    .collect::<Result<_, _>>()
                    .map_err(|_| bad("an interface id (0:0:0:1)"))?;
                if groups.len() != 4 {
                    return Err(bad("an interface id (0:0:0:1)"));
                }
                groups.iter().flat_map(|g| g.to_be_bytes()).collect()
            }
            AttrType::Ether => crate::policy::mac::parse(v.trim().as_bytes())
                .ok_or_else(|| bad("a MAC address"))?
                .to_vec(),
            AttrType::Other(t) => {
                return Err(format!("{n} has type {t}, which shardius does not encode"))
            }
        };
        // RFC 2868 §3: a tagged integer carries the tag in its first
        // octet; a tagged string starts with it (tag 0 or none: no octet).
        if let Some(tag) = tag.filter(|_| spec.tagged) {
            match spec.ty {
                AttrType::Integer => out[0] = tag,
                _ => out.insert(0, tag),
            }
        } else if spec.tagged && spec.ty == AttrType::Integer {
            out[0] = 0;
        }
        let limit = if spec.vendor == 0 { 253 } else { 247 };
        if out.len() > limit {
            return Err(format!("{n}: value longer than {limit} bytes"));
        }
        Ok(Encoded {
            vendor: spec.vendor,
            ty: spec.number as u8,
            value: out.into(),
        })
    }
}

fn number(s: &str) -> Option<u32> {
    match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn prefix<A: std::str::FromStr + Into<std::net::IpAddr> + Copy>(
    s: &str,
    max: u8,
) -> Option<(A, u8)> {
    let (addr, len) = s.split_once('/')?;
    let len: u8 = len.parse().ok().filter(|l| *l <= max)?;
    Some((addr.parse().ok()?, len))
}

fn date(s: &str) -> Option<u32> {
    if let Ok(n) = s.parse::<u32>() {
        return Some(n);
    }
    let t = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").ok()?;
    u32::try_from(t.and_utc().timestamp()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_dictionaries_parse_cleanly() {
        let mut d = Dictionary::default();
        for (name, text) in BUILTIN {
            let problems = d.parse(name, text, &mut |f| Err(f.to_owned()));
            assert!(problems.is_empty(), "{name}: {problems:?}");
        }
        assert!(d.len() > 200, "{}", d.len());
        assert_eq!(d.get("mikrotik-rate-limit").unwrap().vendor, 14988);
    }

    fn enc(name: &str, value: &str) -> Result<(u32, u8, Vec<u8>), String> {
        Dictionary::builtin()
            .encode(name, value)
            .map(|e| (e.vendor, e.ty, e.value.to_vec()))
    }

    #[test]
    fn values_are_encoded_by_type() {
        assert_eq!(
            enc("Cisco-AVPair", "ip:addr-pool=pool1").unwrap(),
            (9, 1, b"ip:addr-pool=pool1".to_vec())
        );
        assert_eq!(
            enc("WISPr-Bandwidth-Max-Down", "10000000").unwrap(),
            (14122, 8, 10_000_000u32.to_be_bytes().to_vec())
        );
        assert_eq!(
            enc("Service-Type", "Framed-User").unwrap(),
            (0, 6, vec![0, 0, 0, 2])
        );
        assert_eq!(
            enc("Framed-IPv6-Prefix", "2001:db8:1::/48").unwrap(),
            (0, 97, vec![0, 48, 0x20, 0x01, 0x0d, 0xb8, 0, 1])
        );
        assert_eq!(
            enc("Delegated-IPv6-Prefix", "2001:db8:100::/56").unwrap().2,
            vec![0, 56, 0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00, 0]
        );
        assert_eq!(
            enc("MS-Primary-DNS-Server", "192.0.2.53").unwrap(),
            (311, 28, vec![192, 0, 2, 53])
        );
        assert_eq!(
            enc("Framed-Interface-Id", "0:0:0:1").unwrap().2,
            vec![0, 0, 0, 0, 0, 0, 0, 1]
        );
        assert_eq!(enc("Class", "0x0102").unwrap().2, vec![1, 2]);
        assert_eq!(
            enc("Framed-Route", "10.0.0.0/24 0.0.0.0 1").unwrap().2,
            b"10.0.0.0/24 0.0.0.0 1".to_vec()
        );
        assert_eq!(
            enc("Event-Timestamp", "2027-01-01 00:00:00").unwrap().2,
            1_798_761_600u32.to_be_bytes().to_vec()
        );
    }

    #[test]
    fn tags_go_where_rfc_2868_puts_them() {
        assert_eq!(enc("Tunnel-Type:1", "VLAN").unwrap().2, vec![1, 0, 0, 13]);
        assert_eq!(enc("Tunnel-Type", "VLAN").unwrap().2, vec![0, 0, 0, 13]);
        assert_eq!(
            enc("Tunnel-Private-Group-Id:2", "100").unwrap().2,
            vec![2, b'1', b'0', b'0']
        );
        assert!(enc("Tunnel-Type:32", "VLAN")
            .unwrap_err()
            .contains("1 to 31"));
        assert!(enc("Filter-Id:1", "x").unwrap_err().contains("no tag"));
    }

    #[test]
    fn bad_rows_say_what_is_wrong() {
        for (name, value, says) in [
            ("No-Such-Attribute", "1", "unknown attribute"),
            ("Session-Timeout", "soon", "not a number"),
            ("Session-Timeout", "4294967296", "32-bit"),
            ("Framed-IP-Address", "10.0.0.256", "IPv4"),
            ("Framed-IPv6-Prefix", "2001:db8::/129", "IPv6 prefix"),
            ("Tunnel-Password", "x", "encrypted"),
            ("Filter-Id", &"x".repeat(254), "longer than 253"),
            ("Mikrotik-Rate-Limit", &"x".repeat(248), "longer than 247"),
            ("Class", "0xZZ", "hex"),
        ] {
            let e = enc(name, value).unwrap_err();
            assert!(e.contains(says), "{name}={value:?}: {e}");
        }
    }

    #[test]
    fn a_freeradius_directory_is_read_with_includes_vendors_and_oddities() {
        let mut d = Dictionary::builtin();
        let files: HashMap<&str, &str> = [
            (
                "dictionary.acme",
                "VENDOR Acme 99999\nBEGIN-VENDOR Acme\nATTRIBUTE Acme-Speed 1 integer\n\
                 VALUE Acme-Speed Fast 100\nBEGIN-TLV Acme-Tlv\nATTRIBUTE Acme-Inner 1 string\nEND-TLV Acme-Tlv\n\
                 ATTRIBUTE Acme-Ext 241.1 string\nEND-VENDOR Acme\n",
            ),
            ("dictionary.wide", "VENDOR Wide 4242 format=2,1\n"),
        ]
        .into();
        let top = "# top\n$INCLUDE dictionary.acme\n$INCLUDE dictionary.wide\n$INCLUDE- dictionary.optional\n\
                   ATTRIBUTE Cleartext-Password 1100 string\nATTRIBUTE Old-Style 5 integer Acme\nBOGUS line\n\
                   $INCLUDE dictionary.missing\n";
        let problems = d.parse("dictionary", top, &mut |f| {
            files
                .get(f)
                .map(|t| (*t).to_owned())
                .ok_or_else(|| format!("cannot read {f}"))
        });
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("format=2,1"), "{problems:?}");
        assert!(problems[1].starts_with("dictionary:7: unknown keyword BOGUS"));
        assert!(problems[2].contains("cannot read dictionary.missing"));
        assert_eq!(
            d.encode("acme-speed", "fast").unwrap(),
            Encoded {
                vendor: 99999,
                ty: 1,
                value: 100u32.to_be_bytes().into()
            }
        );
        assert_eq!(d.get("Old-Style").unwrap().vendor, 99999);
        assert!(d.get("Acme-Inner").is_none());
        assert!(d
            .encode("Acme-Ext", "x")
            .unwrap_err()
            .contains("does not encode"));
        assert!(d
            .encode("Cleartext-Password", "x")
            .unwrap_err()
            .contains("not a RADIUS attribute"));
        // Built-in attributes are still there.
        assert!(d.get("Mikrotik-Rate-Limit").is_some());
    }

    #[test]
    fn hostile_dictionary_text_never_panics() {
        let mut d = Dictionary::builtin();
        for text in [
            "ATTRIBUTE",
            "ATTRIBUTE x",
            "ATTRIBUTE x 1",
            "VALUE a b",
            "VENDOR",
            "VENDOR x notanumber",
            "BEGIN-VENDOR nobody\nATTRIBUTE Ghost 1 string\nEND-VENDOR nobody",
            "ATTRIBUTE Weird 99999999999 string",
            "ATTRIBUTE T 1 integer has_tag,encrypt=x",
            "\0\u{fffd}",
            "$INCLUDE dictionary",
        ] {
            let _ = d.parse("hostile", text, &mut |_| Ok("$INCLUDE dictionary".into()));
        }
        // A vendor that was never declared does not land in the standard space.
        assert!(d.encode("Ghost", "x").is_err());
        assert!(d.encode("T:1", "5").is_ok());
    }
}
