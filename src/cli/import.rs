//! `shardius subscriber import FILE.csv`: every line is validated before
//! anything is written, and the rows go in as one transaction, so a bad
//! line leaves the database as it was.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{bail, Context};

use super::admin::{check_password, check_username, parse_date, parse_mac};
use crate::keyfile::PasswordKey;
use crate::policy::mac;
use crate::store::{Store, StoreError, SubscriberRecord};

const REQUIRED: [&str; 3] = ["username", "password", "service"];
const OPTIONAL: [&str; 4] = ["expiry", "mac", "static_ip", "active"];

/// Imports the file; returns how many subscribers were added.
pub fn import_csv(store: &mut dyn Store, key: &PasswordKey, path: &Path) -> anyhow::Result<usize> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(file);
    let headers = reader.headers().context("reading the CSV header")?.clone();
    let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    for name in REQUIRED {
        if column(name).is_none() {
            bail!("line 1: the header has no {name:?} column (needed: username,password,service)");
        }
    }
    if let Some(unknown) = headers.iter().find(|h| {
        !REQUIRED
            .iter()
            .chain(OPTIONAL.iter())
            .any(|k| h.eq_ignore_ascii_case(k))
    }) {
        bail!("line 1: unknown column {unknown:?} (known: username,password,service,expiry,mac,static_ip,active)");
    }

    let mut services: HashMap<String, i64> = HashMap::new();
    let mut records = Vec::new();
    let mut lines: HashMap<String, u64> = HashMap::new();
    for result in reader.records() {
        let record = result.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            anyhow::anyhow!("line {line}: {e}")
        })?;
        let line = record.position().map_or(0, |p| p.line());
        let field = |name: &str| column(name).and_then(|i| record.get(i)).unwrap_or("");
        let parsed = (|| -> Result<SubscriberRecord, String> {
            let username = field("username").to_owned();
            check_username(&username)?;
            let password = field("password");
            check_password(password)?;
            let service = field("service");
            let service_id = match services.get(service) {
                Some(id) => *id,
                None => {
                    let id = store
                        .service_id(service)
                        .map_err(|e| e.to_string())?
                        .ok_or_else(|| format!("unknown service {service:?}"))?;
                    services.insert(service.to_owned(), id);
                    id
                }
            };
            let optional = |name: &str| Some(field(name)).filter(|v| !v.is_empty());
            let expiry_date = optional("expiry").map(parse_date).transpose()?;
            let mac_address = optional("mac")
                .map(parse_mac)
                .transpose()?
                .map(|m| mac::format(&m));
            let static_ip = optional("static_ip")
                .map(|v| {
                    v.parse::<Ipv4Addr>()
                        .map_err(|_| format!("static_ip {v:?} is not an IPv4 address"))
                })
                .transpose()?;
            let is_active = match optional("active").map(str::to_ascii_lowercase).as_deref() {
                None | Some("1" | "true" | "yes") => true,
                Some("0" | "false" | "no") => false,
                Some(other) => return Err(format!("active {other:?}: expected true or false")),
            };
            Ok(SubscriberRecord {
                id: 0,
                username,
                password_enc: key.encrypt(password.as_bytes()),
                service_id: Some(service_id),
                is_active,
                expiry_date,
                mac_address,
                static_ip,
                updated_at: 0,
                password_kind: Default::default(),
                max_sessions: None,
            })
        })()
        .map_err(|e| anyhow::anyhow!("line {line}: {e}"))?;
        if let Some(first) = lines.insert(parsed.username.clone(), line) {
            bail!(
                "line {line}: username {:?} already on line {first}",
                parsed.username
            );
        }
        records.push(parsed);
    }
    match store.add_subscribers(&records) {
        Ok(n) => Ok(n),
        Err(StoreError::Duplicate(what)) => {
            let line = records
                .iter()
                .find(|r| what.contains(&format!("{:?}", r.username)))
                .and_then(|r| lines.get(&r.username));
            match line {
                Some(line) => bail!(
                    "line {line}: {what} already exists in the database; nothing was imported"
                ),
                None => bail!("{what} already exists in the database; nothing was imported"),
            }
        }
        Err(e) => Err(e.into()),
    }
}
