//! Server-side address pools, without IO: what a pool is (ranges,
//! exclusions, IPv6 prefixes), and the node's in-memory view of every
//! address ([`Allocator`]) that answers a login from memory when it can
//! and otherwise says which database claim to make. The pools thread
//! (`server/pools.rs`) does the claims, the sweeps and the refreshes;
//! ARCHITECTURE.md "Address pools" has the rules that keep one address
//! off two open sessions.

mod alloc;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

pub use alloc::{
    AddrState, Allocator, Claim, ClaimKind, Offer, PoolCounts, Slot, SlotRow, Touch, FRESH_FOR,
    NODE_GONE_MS, REUSE_AFTER_TRANSFER_MS,
};

/// Where the engine gets an address for an accepted login: the node's
/// allocator behind a lock in the server, [`NoPools`] elsewhere.
pub trait AddressSource {
    /// The kind of the shardius pool `pool`; `None` when it is not one (its
    /// name goes to the router as Framed-Pool). Asked first, so a pool the
    /// login does not need (an IPv4 pool for a static IP) is never offered.
    fn kind(&self, pool: &str) -> Option<PoolKind>;
    /// An address of `pool` for `username` (see [`Allocator::offer`]).
    fn offer(&self, pool: &str, username: &str, now: std::time::Instant) -> Offer;
}

/// No server-side pools: every pool name is the router's.
pub struct NoPools;

impl AddressSource for NoPools {
    fn kind(&self, _: &str) -> Option<PoolKind> {
        None
    }
    fn offer(&self, _: &str, _: &str, _: std::time::Instant) -> Offer {
        Offer::NotAPool
    }
}

impl AddressSource for std::sync::Mutex<Allocator> {
    fn kind(&self, pool: &str) -> Option<PoolKind> {
        lock(self).kind(pool)
    }
    fn offer(&self, pool: &str, username: &str, now: std::time::Instant) -> Offer {
        lock(self).offer(pool, username, now)
    }
}

/// A panic while holding the lock leaves a consistent view (every change
/// is a few field writes): keep serving.
fn lock(a: &std::sync::Mutex<Allocator>) -> std::sync::MutexGuard<'_, Allocator> {
    a.lock().unwrap_or_else(|e| e.into_inner())
}

/// The pool names a service lists (`--pool a --pool b` is stored `a,b`).
pub fn pool_names(field: &str) -> impl Iterator<Item = &str> {
    field.split(',').map(str::trim).filter(|n| !n.is_empty())
}

/// The largest pool shardius materialises (one row per address or prefix).
pub const MAX_POOL_SIZE: u64 = 1 << 20;

/// What a pool hands out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PoolKind {
    /// IPv4 addresses, answered as Framed-IP-Address.
    Ipv4,
    /// IPv6 prefixes for the PPP link (usually /64), as Framed-IPv6-Prefix.
    Ipv6Framed,
    /// Delegated prefixes (e.g. /56), as Delegated-IPv6-Prefix (RFC 4818).
    Ipv6Delegated,
}

impl PoolKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolKind::Ipv4 => "ipv4",
            PoolKind::Ipv6Framed => "ipv6-framed",
            PoolKind::Ipv6Delegated => "ipv6-delegated",
        }
    }

    pub fn parse(s: &str) -> Option<PoolKind> {
        match s {
            "ipv4" => Some(PoolKind::Ipv4),
            "ipv6-framed" => Some(PoolKind::Ipv6Framed),
            "ipv6-delegated" => Some(PoolKind::Ipv6Delegated),
            _ => None,
        }
    }

    /// The radacct column a session reports this kind of address in.
    pub fn radacct_column(self) -> &'static str {
        match self {
            PoolKind::Ipv4 => "framedipaddress",
            PoolKind::Ipv6Framed => "framedipv6prefix",
            PoolKind::Ipv6Delegated => "delegatedipv6prefix",
        }
    }
}

/// One address or prefix of a pool. Stored as text: `10.0.0.5`,
/// `2001:db8:100::/56`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolAddr {
    pub ip: IpAddr,
    /// 32 for an IPv4 address; the prefix length of an IPv6 prefix.
    pub len: u8,
}

impl fmt::Display for PoolAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/{}", self.len),
        }
    }
}

impl FromStr for PoolAddr {
    type Err = PoolError;
    fn from_str(s: &str) -> Result<PoolAddr, PoolError> {
        let bad = || PoolError::BadAddress(s.to_owned());
        match s.split_once('/') {
            None => match s.parse::<IpAddr>().map_err(|_| bad())? {
                IpAddr::V4(v4) => Ok(PoolAddr {
                    ip: IpAddr::V4(v4),
                    len: 32,
                }),
                IpAddr::V6(v6) => Ok(PoolAddr {
                    ip: IpAddr::V6(v6),
                    len: 128,
                }),
            },
            Some((ip, len)) => {
                let ip: IpAddr = ip.parse().map_err(|_| bad())?;
                let len: u8 = len.parse().map_err(|_| bad())?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                if len > max {
                    return Err(bad());
                }
                Ok(PoolAddr { ip, len })
            }
        }
    }
}

impl PoolAddr {
    /// The RFC 3162 §2.3 / RFC 4818 value: reserved octet, prefix length,
    /// the prefix's significant octets.
    pub fn ipv6_prefix_value(&self) -> Option<Vec<u8>> {
        let IpAddr::V6(v6) = self.ip else { return None };
        let octets = usize::from(self.len).div_ceil(8);
        let mut v = vec![0, self.len];
        v.extend_from_slice(&v6.octets()[..octets]);
        Some(v)
    }
}

/// A pool as the operator defines it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSpec {
    pub name: String,
    pub kind: PoolKind,
    /// IPv4: CIDRs (`10.0.0.0/22`) or ranges (`10.0.0.10-10.0.0.200`);
    /// IPv6: the prefixes the pool carves (`2001:db8::/40`).
    pub ranges: Vec<String>,
    /// Addresses (or prefixes) never handed out.
    pub excludes: Vec<String>,
    /// IPv6: the length of each handed-out prefix (56 delegated, 64 framed).
    pub prefix_len: u8,
    /// An offered address not confirmed by an Accounting Start is free again after this.
    pub offer_timeout_secs: u32,
    /// An ended session's address stays reserved for its subscriber this long.
    pub hold_secs: u32,
}

/// The defaults of `pool add`.
pub const DEFAULT_OFFER_TIMEOUT_SECS: u32 = 60;
pub const DEFAULT_HOLD_SECS: u32 = 24 * 3600;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolError {
    BadName(String),
    BadAddress(String),
    BadRange(String),
    TooLarge(u64),
    Empty,
    WrongFamily(String),
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::BadName(n) => write!(
                f,
                "pool name {:?}: 1 to 64 letters, digits, '-', '_' or '.'",
                crate::text::printable(n)
            ),
            PoolError::BadAddress(a) => write!(f, "not an address or prefix: {:?}", crate::text::printable(a)),
            PoolError::BadRange(r) => write!(
                f,
                "not a range (CIDR like 10.0.0.0/22 or FIRST-LAST): {:?}",
                crate::text::printable(r)
            ),
            PoolError::TooLarge(n) => {
                write!(f, "the pool would have {n} addresses; at most {MAX_POOL_SIZE}")
            }
            PoolError::Empty => write!(f, "the pool has no usable address"),
            PoolError::WrongFamily(r) => write!(
                f,
                "{:?} is not of the pool's family (IPv4 ranges with --range, IPv6 with --ipv6-prefix)",
                crate::text::printable(r)
            ),
        }
    }
}

impl std::error::Error for PoolError {}

/// A pool name: what a service's `--pool` names and metrics label.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl PoolSpec {
    /// Every address (or prefix) the pool hands out, in order: the ranges
    /// minus the exclusions (and, for an IPv4 CIDR of /30 or wider, its
    /// network, broadcast and first host, the usual gateway).
    pub fn expand(&self) -> Result<Vec<PoolAddr>, PoolError> {
        if !valid_name(&self.name) {
            return Err(PoolError::BadName(self.name.clone()));
        }
        let excludes = self
            .excludes
            .iter()
            .map(|e| e.parse::<PoolAddr>())
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::new();
        let mut total: u64 = 0;
        for r in &self.ranges {
            match self.kind {
                PoolKind::Ipv4 => {
                    let (first, last, cidr) = ipv4_range(r)?;
                    let (mut lo, mut hi) = (u32::from(first), u32::from(last));
                    if cidr && hi - lo >= 3 {
                        lo += 2; // network and gateway
                        hi -= 1; // broadcast
                    }
                    total += u64::from(hi - lo) + 1;
                    if total > MAX_POOL_SIZE {
                        return Err(PoolError::TooLarge(total));
                    }
                    out.extend((lo..=hi).map(|a| PoolAddr {
                        ip: IpAddr::V4(Ipv4Addr::from(a)),
                        len: 32,
                    }));
                }
                PoolKind::Ipv6Framed | PoolKind::Ipv6Delegated => {
                    let base: PoolAddr = r.parse().map_err(|_| PoolError::BadRange(r.clone()))?;
                    let IpAddr::V6(v6) = base.ip else {
                        return Err(PoolError::WrongFamily(r.clone()));
                    };
                    if self.prefix_len < base.len || self.prefix_len > 128 {
                        return Err(PoolError::BadRange(format!(
                            "{r} carved into /{}",
                            self.prefix_len
                        )));
                    }
                    let bits = u32::from(self.prefix_len - base.len);
                    let count: u64 = if bits >= 21 { u64::MAX } else { 1 << bits };
                    total = total.saturating_add(count);
                    if total > MAX_POOL_SIZE {
                        return Err(PoolError::TooLarge(total));
                    }
                    let net = u128::from(v6) & mask128(base.len);
                    let step_shift = 128 - u32::from(self.prefix_len);
                    out.extend((0..count).map(|i| PoolAddr {
                        ip: IpAddr::V6(Ipv6Addr::from(net | ((i as u128) << step_shift))),
                        len: self.prefix_len,
                    }));
                }
            }
        }
        out.retain(|a| {
            !excludes.contains(a) && !excludes.iter().any(|e| e.ip == a.ip && e.len == 128)
        });
        out.sort();
        out.dedup();
        if out.is_empty() {
            return Err(PoolError::Empty);
        }
        Ok(out)
    }
}

fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

/// `10.0.0.0/22` (true: a CIDR) or `10.0.0.10-10.0.0.200` or one address.
fn ipv4_range(r: &str) -> Result<(Ipv4Addr, Ipv4Addr, bool), PoolError> {
    let bad = || PoolError::BadRange(r.to_owned());
    if let Some((net, len)) = r.split_once('/') {
        let net: Ipv4Addr = net.trim().parse().map_err(|_| {
            if net.parse::<Ipv6Addr>().is_ok() {
                PoolError::WrongFamily(r.to_owned())
            } else {
                bad()
            }
        })?;
        let len: u32 = len.trim().parse().map_err(|_| bad())?;
        if len > 32 {
            return Err(bad());
        }
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        let lo = u32::from(net) & mask;
        return Ok((Ipv4Addr::from(lo), Ipv4Addr::from(lo | !mask), true));
    }
    let (a, b) = r.split_once('-').unwrap_or((r, r));
    let a: Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
    let b: Ipv4Addr = b.trim().parse().map_err(|_| bad())?;
    if a > b {
        return Err(bad());
    }
    Ok((a, b, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: PoolKind, ranges: &[&str], prefix_len: u8) -> PoolSpec {
        PoolSpec {
            name: "p".into(),
            kind,
            ranges: ranges.iter().map(|s| s.to_string()).collect(),
            excludes: vec![],
            prefix_len,
            offer_timeout_secs: 60,
            hold_secs: 3600,
        }
    }

    #[test]
    fn cidr_leaves_out_network_gateway_and_broadcast() {
        let a = spec(PoolKind::Ipv4, &["10.0.0.0/29"], 0).expand().unwrap();
        let s: Vec<String> = a.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            s,
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
        assert_eq!(
            spec(PoolKind::Ipv4, &["10.0.0.0/22"], 0)
                .expand()
                .unwrap()
                .len(),
            1021
        );
    }

    #[test]
    fn ranges_exclusions_and_errors() {
        let mut s = spec(PoolKind::Ipv4, &["10.0.0.10-10.0.0.14", "10.0.0.12"], 0);
        s.excludes = vec!["10.0.0.11".into()];
        assert_eq!(s.expand().unwrap().len(), 4);
        for bad in [
            "10.0.0.9-10.0.0.1",
            "10.0.0.0/33",
            "x",
            "10.0.0.1-",
            "10.0.0.0/8\0",
        ] {
            assert!(spec(PoolKind::Ipv4, &[bad], 0).expand().is_err(), "{bad}");
        }
        assert!(matches!(
            spec(PoolKind::Ipv4, &["0.0.0.0/0"], 0).expand(),
            Err(PoolError::TooLarge(_))
        ));
        assert!(matches!(
            spec(PoolKind::Ipv4, &["2001:db8::/64"], 0).expand(),
            Err(PoolError::WrongFamily(_))
        ));
        let mut s = spec(PoolKind::Ipv4, &["10.0.0.1"], 0);
        s.excludes = vec!["10.0.0.1".into()];
        assert_eq!(s.expand(), Err(PoolError::Empty));
        let mut s = spec(PoolKind::Ipv4, &["10.0.0.1"], 0);
        s.name = "a b".into();
        assert!(matches!(s.expand(), Err(PoolError::BadName(_))));
    }

    #[test]
    fn ipv6_prefixes_are_carved() {
        let a = spec(PoolKind::Ipv6Delegated, &["2001:db8::/40"], 56)
            .expand()
            .unwrap();
        assert_eq!(a.len(), 65536);
        assert_eq!(a[1].to_string(), "2001:db8:0:100::/56");
        assert_eq!(
            a[1].ipv6_prefix_value().unwrap(),
            vec![0, 56, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 1]
        );
        assert!(matches!(
            spec(PoolKind::Ipv6Delegated, &["2001:db8::/16"], 64).expand(),
            Err(PoolError::TooLarge(_))
        ));
        assert!(spec(PoolKind::Ipv6Framed, &["2001:db8::/64"], 56)
            .expand()
            .is_err());
        let back: PoolAddr = "2001:db8:0:100::/56".parse().unwrap();
        assert_eq!(back, a[1]);
    }
}
