//! `shardius pool add|list|show|rm`: server-side address pools.

use clap::Subcommand;

use crate::pool::{PoolKind, PoolSpec, DEFAULT_HOLD_SECS, DEFAULT_OFFER_TIMEOUT_SECS};
use crate::store::{RemovePool, Store};

#[derive(Subcommand, Debug)]
pub enum PoolCommand {
    /// Define a pool: IPv4 ranges, or an IPv6 prefix carved into delegated or framed prefixes
    #[command(after_help = "Examples:\n  \
        shardius pool add --name cgnat --range 100.64.0.0/22 --exclude 100.64.1.1\n  \
        shardius pool add --name pd --ipv6-prefix 2001:db8::/40 --prefix-len 56\n  \
        shardius pool add --name link6 --ipv6-prefix 2001:db8:ff00::/48 --prefix-len 64 --framed\n\
        A CIDR leaves out its network, broadcast and first host (the usual gateway); \
        FIRST-LAST ranges are taken whole. An address can be in one pool only. \
        A service names the pool with `service add --pool NAME`.")]
    Add {
        #[arg(long)]
        name: String,
        /// IPv4 CIDR (10.0.0.0/22) or range (10.0.0.10-10.0.0.200); repeatable
        #[arg(long, conflicts_with = "ipv6_prefix")]
        range: Vec<String>,
        /// IPv6 prefix to carve (2001:db8::/40); repeatable
        #[arg(long, requires = "prefix_len")]
        ipv6_prefix: Vec<String>,
        /// Length of each handed-out IPv6 prefix (56 for delegation, 64 for the link)
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=128))]
        prefix_len: Option<u8>,
        /// The IPv6 prefixes are Framed-IPv6-Prefix (the PPP link) instead of Delegated-IPv6-Prefix
        #[arg(long, requires = "ipv6_prefix")]
        framed: bool,
        /// An address or prefix never handed out; repeatable
        #[arg(long)]
        exclude: Vec<String>,
        /// How long an ended session's address stays reserved for its subscriber
        #[arg(long, default_value_t = DEFAULT_HOLD_SECS / 3600)]
        hold_hours: u32,
        /// An offered address not confirmed by an Accounting Start is free again after this
        #[arg(long, default_value_t = DEFAULT_OFFER_TIMEOUT_SECS)]
        offer_timeout_secs: u32,
    },
    /// Pools with their size and addresses in use, held, offered and free
    List,
    /// A pool's addresses that name a subscriber: address, state, subscriber, session, node
    Show { name: String },
    /// Remove a pool (refused while an address of it is offered or in use)
    Rm { name: String },
}

pub fn run(store: &mut dyn Store, cmd: PoolCommand) -> anyhow::Result<()> {
    match cmd {
        PoolCommand::Add {
            name,
            range,
            ipv6_prefix,
            prefix_len,
            framed,
            exclude,
            hold_hours,
            offer_timeout_secs,
        } => {
            let (kind, ranges, prefix_len) = if ipv6_prefix.is_empty() {
                if range.is_empty() {
                    anyhow::bail!("give --range (IPv4) or --ipv6-prefix with --prefix-len");
                }
                (PoolKind::Ipv4, range, 32)
            } else if framed {
                (PoolKind::Ipv6Framed, ipv6_prefix, prefix_len.unwrap_or(64))
            } else {
                (
                    PoolKind::Ipv6Delegated,
                    ipv6_prefix,
                    prefix_len.unwrap_or(56),
                )
            };
            let hold_secs = hold_hours
                .checked_mul(3600)
                .filter(|&s| s <= i32::MAX as u32)
                .ok_or_else(|| anyhow::anyhow!("--hold-hours {hold_hours}: too long"))?;
            if offer_timeout_secs == 0 || offer_timeout_secs > 86_400 {
                anyhow::bail!("--offer-timeout-secs {offer_timeout_secs}: 1 to 86400");
            }
            let spec = PoolSpec {
                name,
                kind,
                ranges: ranges.iter().map(|r| r.trim().to_owned()).collect(),
                excludes: exclude.iter().map(|e| e.trim().to_owned()).collect(),
                prefix_len,
                offer_timeout_secs,
                hold_secs,
            };
            let addresses = spec.expand()?;
            store.add_pool(&spec, &addresses)?;
            println!(
                "pool {} added: {} {} ({})",
                spec.name,
                addresses.len(),
                if kind == PoolKind::Ipv4 {
                    "addresses"
                } else {
                    "prefixes"
                },
                kind.as_str()
            );
            Ok(())
        }
        PoolCommand::List => {
            println!(
                "{:<24} {:<15} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "NAME", "KIND", "SIZE", "IN_USE", "HELD", "OFFERED", "FREE"
            );
            for c in store.pool_counts()? {
                println!(
                    "{:<24} {:<15} {:>9} {:>9} {:>9} {:>9} {:>9}",
                    c.name,
                    c.kind.map_or("?", PoolKind::as_str),
                    c.size,
                    c.in_use,
                    c.held,
                    c.offered,
                    c.free
                );
            }
            Ok(())
        }
        PoolCommand::Show { name } => {
            let Some(c) = store.pool_counts()?.into_iter().find(|c| c.name == name) else {
                anyhow::bail!("no pool named {:?}", crate::text::printable(&name));
            };
            println!(
                "pool {}: {} addresses, {} in use, {} held, {} offered, {} free",
                c.name, c.size, c.in_use, c.held, c.offered, c.free
            );
            println!(
                "{:<28} {:<8} {:<24} {:<34} NODE",
                "ADDRESS", "STATE", "SUBSCRIBER", "SESSION"
            );
            for r in store.pool_rows(&name)? {
                println!(
                    "{:<28} {:<8} {:<24} {:<34} {}",
                    r.addr.to_string(),
                    r.state.as_str(),
                    crate::text::printable(r.username.as_deref().unwrap_or("-")),
                    crate::text::printable(r.acctuniqueid.as_deref().unwrap_or("-")),
                    crate::text::printable(r.node.as_deref().unwrap_or("-")),
                );
            }
            Ok(())
        }
        PoolCommand::Rm { name } => match store.remove_pool(&name)? {
            RemovePool::Removed => {
                println!("pool {name} removed");
                Ok(())
            }
            RemovePool::NotFound => {
                anyhow::bail!("no pool named {:?}", crate::text::printable(&name))
            }
            RemovePool::InUse(n) => anyhow::bail!(
                "pool {name} has {n} addresses offered or in use; end those sessions first"
            ),
        },
    }
}
