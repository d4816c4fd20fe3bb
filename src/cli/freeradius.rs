//! `shardius import freeradius`: NAS entries, subscribers, services and
//! reply attributes from a FreeRADIUS rlm_sql PostgreSQL database and/or a
//! `users` file (README "Moving from FreeRADIUS").
//!
//! Three steps: read the source into [`Source`] (IO), turn it into a
//! [`Plan`] that says what is imported and what cannot be and why (pure,
//! unit-tested), and write the plan in one transaction ([`Admin::import`]):
//! upserts by NAS address, service name and username, and each imported
//! user's radreply rows replaced, so running it again changes nothing and
//! an error leaves the database as it was.
//!
//! The `users` parser is written by hand: no crate reads FreeRADIUS's
//! format, and only its plain entries (check items on the name line, reply
//! items on indented lines) are needed.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use chrono::{Duration, NaiveDate, NaiveDateTime};

use super::admin::{check_password, check_username};
use crate::keyfile::PasswordKey;
use crate::model::{
    Burst, ImportBatch, NasRecord, NasType, PasswordKind, RadreplyRecord, ServiceRecord,
    SubscriberRecord,
};
use crate::policy::mac;
use crate::proto::dictionary::Dictionary;
use crate::store::Store;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Reads FreeRADIUS's nas, radcheck, radreply, radusergroup, radgroupreply \
    and radgroupcheck tables (--from-sql) and/or a users file (--users). Imported: NAS rows; \
    users with Cleartext-Password (or User-Password) and with NT-Password (MS-CHAPv2 and PAP \
    work, CHAP cannot without the password); Expiration, Simultaneous-Use (the \
    subscriber's own session limit; a group's is its service's, over the limit: reject), Calling-Station-Id (MAC binding) and Auth-Type := Reject (disabled); each user's \
    first group (by priority) as a service of the same name, its Mikrotik-Rate-Limit as the \
    service's speeds and its other reply attributes as the service's; radreply rows. Anything \
    else is listed with the reason. Running it again changes nothing; an error changes nothing."
)]
pub struct ImportFreeradius {
    /// FreeRADIUS's rlm_sql PostgreSQL database, e.g. postgres://radius@db/radius
    #[arg(long, value_name = "URL")]
    from_sql: Option<String>,
    /// A FreeRADIUS users file (mods-config/files/authorize)
    #[arg(long, value_name = "FILE")]
    users: Option<PathBuf>,
    /// Print what would be imported and what cannot be, with counts; change nothing
    #[arg(long)]
    dry_run: bool,
}

/// One check or reply item, with where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// The user or group it belongs to.
    pub owner: String,
    pub attribute: String,
    pub op: String,
    pub value: String,
    /// e.g. `radcheck id 7`, `users:12`.
    pub origin: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrNas {
    pub nasname: String,
    pub shortname: Option<String>,
    pub nastype: Option<String>,
    pub secret: String,
    pub origin: String,
}

/// What was read from FreeRADIUS.
#[derive(Clone, Debug, Default)]
pub struct Source {
    pub nas: Vec<FrNas>,
    pub check: Vec<Item>,
    pub reply: Vec<Item>,
    /// (user, group, priority)
    pub groups: Vec<(String, String, i32)>,
    pub group_check: Vec<Item>,
    pub group_reply: Vec<Item>,
    /// What the reader could not take (a DEFAULT entry, a bad line).
    pub unreadable: Vec<String>,
}

/// What the import will write, and what it cannot.
#[derive(Debug, Default)]
pub struct Plan {
    pub batch: ImportBatch,
    /// What is not imported, and why.
    pub skipped: Vec<String>,
    /// Imported, with something to know.
    pub notes: Vec<String>,
}

pub fn run(
    store: &mut dyn Store,
    key: &PasswordKey,
    dictionary: &Dictionary,
    args: ImportFreeradius,
) -> anyhow::Result<()> {
    if args.from_sql.is_none() && args.users.is_none() {
        bail!("give --from-sql URL and/or --users FILE");
    }
    let mut source = Source::default();
    if let Some(url) = &args.from_sql {
        read_sql(url, &mut source)?;
    }
    if let Some(path) = &args.users {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        parse_users(&text, &path.display().to_string(), &mut source);
    }
    let plan = plan(&source, key, dictionary);
    report(&plan, args.dry_run);
    if args.dry_run {
        return Ok(());
    }
    store
        .import(&plan.batch)
        .context("importing (nothing was written)")?;
    println!(
        "imported: {} NAS entries, {} services, {} subscribers, {} radreply rows",
        plan.batch.nas.len(),
        plan.batch.services.len(),
        plan.batch.subscribers.len(),
        plan.batch.radreply.len()
    );
    Ok(())
}

fn report(plan: &Plan, dry_run: bool) {
    let b = &plan.batch;
    let nt = b
        .subscribers
        .iter()
        .filter(|(s, _)| s.password_kind == PasswordKind::NtHash)
        .count();
    println!(
        "{}: {} NAS entries, {} services, {} subscribers ({nt} by NT hash), {} radreply rows",
        if dry_run { "would import" } else { "importing" },
        b.nas.len(),
        b.services.len(),
        b.subscribers.len(),
        b.radreply.len()
    );
    println!("cannot import ({}):", plan.skipped.len());
    for s in &plan.skipped {
        println!("  {}", crate::text::printable(s));
    }
    println!("notes ({}):", plan.notes.len());
    for n in &plan.notes {
        println!("  {}", crate::text::printable(n));
    }
}

/// Reads the rlm_sql tables; a table that does not exist reads as empty.
fn read_sql(url: &str, source: &mut Source) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .with_context(|| format!("connecting to {}", crate::store::redact_url(url)))?;
        tokio::spawn(connection);
        let exists = |table: &'static str| {
            let client = &client;
            async move {
                client
                    .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
                    .await
                    .map(|r| r.get::<_, bool>(0))
            }
        };
        if exists("nas").await? {
            for r in client
                .query(
                    "SELECT id::bigint, nasname, shortname, type, secret FROM nas ORDER BY id",
                    &[],
                )
                .await?
            {
                source.nas.push(FrNas {
                    origin: format!("nas id {}", r.get::<_, i64>(0)),
                    nasname: r.get(1),
                    shortname: r.get(2),
                    nastype: r.get(3),
                    secret: r.get(4),
                });
            }
        }
        // Per user (username) and per group (groupname): the same columns.
        for (table, owner, into) in [
            ("radcheck", "username", &mut source.check),
            ("radreply", "username", &mut source.reply),
            ("radgroupcheck", "groupname", &mut source.group_check),
            ("radgroupreply", "groupname", &mut source.group_reply),
        ] {
            if !exists(table).await? {
                continue;
            }
            let sql = format!(
                "SELECT id::bigint, {owner}, attribute, op, value FROM {table} ORDER BY id"
            );
            for r in client.query(&sql, &[]).await? {
                into.push(Item {
                    origin: format!("{table} id {}", r.get::<_, i64>(0)),
                    owner: r.get(1),
                    attribute: r.get(2),
                    op: r.get(3),
                    value: r.get(4),
                });
            }
        }
        if exists("radusergroup").await? {
            for r in client
                .query(
                    "SELECT username, groupname, priority::int FROM radusergroup ORDER BY username, priority",
                    &[],
                )
                .await?
            {
                source.groups.push((r.get(0), r.get(1), r.get(2)));
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}

/// Reads a FreeRADIUS `users` file: an entry is a name at the start of a
/// line with its check items, then indented reply items, each line but the
/// last ending in a comma. DEFAULT entries and `$INCLUDE` cannot be
/// imported (they are listed in `unreadable`). A line that is not UTF-8
/// is never guessed at (a password read as Latin-1 or with replacement
/// characters would import a different password): its whole entry is
/// left out and named.
pub fn parse_users(text: &[u8], file: &str, source: &mut Source) {
    let mut current: Option<String> = None;
    let mut expect_more = false;
    let mut broken: Vec<(String, String)> = Vec::new();
    for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
        let origin = format!("{file}:{}", i + 1);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let Ok(raw) = std::str::from_utf8(raw) else {
            let indented = raw.starts_with(b" ") || raw.starts_with(b"\t");
            match current.clone().filter(|_| indented && expect_more) {
                Some(owner) => broken.push((owner, origin)),
                None => {
                    source
                        .unreadable
                        .push(format!("{origin}: not UTF-8; that entry is not imported"));
                    current = None;
                    expect_more = false;
                }
            }
            continue;
        };
        let line = strip_comment(raw);
        if line.trim().is_empty() {
            continue;
        }
        let indented = line.starts_with([' ', '\t']);
        if !indented {
            let line = line.trim();
            if line.starts_with("$INCLUDE") {
                source.unreadable.push(format!(
                    "{origin}: $INCLUDE is not followed; import that file too"
                ));
                current = None;
                continue;
            }
            let (name, rest) = match take_value(line) {
                Some((name, rest)) => (name, rest),
                None => {
                    source.unreadable.push(format!("{origin}: not an entry"));
                    current = None;
                    continue;
                }
            };
            if name == "DEFAULT" {
                source.unreadable.push(format!(
                    "{origin}: a DEFAULT entry applies to every user; give shardius's services or radreply rows the attributes it sets"
                ));
                current = None;
                expect_more = false;
                continue;
            }
            match parse_items(rest) {
                Ok((items, _)) => {
                    for (attribute, op, value) in items {
                        source.check.push(Item {
                            owner: name.clone(),
                            attribute,
                            op,
                            value,
                            origin: origin.clone(),
                        });
                    }
                    current = Some(name);
                    expect_more = true;
                }
                Err(e) => {
                    source.unreadable.push(format!("{origin}: {e}"));
                    current = None;
                }
            }
            continue;
        }
        let Some(owner) = current.clone().filter(|_| expect_more) else {
            source
                .unreadable
                .push(format!("{origin}: a reply line outside an entry"));
            continue;
        };
        match parse_items(line.trim()) {
            Ok((items, more)) => {
                for (attribute, op, value) in items {
                    if attribute.eq_ignore_ascii_case("Fall-Through") {
                        continue;
                    }
                    source.reply.push(Item {
                        owner: owner.clone(),
                        attribute,
                        op,
                        value,
                        origin: origin.clone(),
                    });
                }
                expect_more = more;
            }
            Err(e) => source.unreadable.push(format!("{origin}: {e}")),
        }
    }
    for (owner, origin) in broken {
        if source.check.iter().any(|i| i.owner == owner) {
            source.unreadable.push(format!(
                "{origin}: not UTF-8; the entry of user {owner:?} is not imported"
            ));
        }
        source.check.retain(|i| i.owner != owner);
        source.reply.retain(|i| i.owner != owner);
    }
}

fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '#' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

/// A bare or double-quoted token (quotes and `\"`, `\\` undone) and the rest.
fn take_value(s: &str) -> Option<(String, &str)> {
    let s = s.trim_start();
    if let Some(body) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        out.push(n);
                    }
                }
                '"' => return Some((out, &body[i + 1..])),
                c => out.push(c),
            }
        }
        None
    } else {
        let end = s
            .find(|c: char| c.is_whitespace() || c == ',')
            .unwrap_or(s.len());
        (end > 0).then(|| (s[..end].to_owned(), &s[end..]))
    }
}

/// `Attr op value, Attr op value[,]`: the items, and whether a trailing
/// comma says more lines follow.
type Items = Vec<(String, String, String)>;

fn parse_items(mut s: &str) -> Result<(Items, bool), String> {
    const OPS: [&str; 13] = [
        ":=", "==", "+=", "-=", "!=", ">=", "<=", "=~", "!~", "=*", "!*", "=", ">",
    ];
    let mut items = Vec::new();
    loop {
        s = s.trim_start();
        if s.is_empty() {
            return Ok((items, false));
        }
        // Names hold letters, digits, '-', '_', '.', and ":N" for a tag.
        let bytes = s.as_bytes();
        let mut end = 0;
        while end < bytes.len() {
            let c = bytes[end];
            let tag = c == b':' && bytes.get(end + 1).is_some_and(u8::is_ascii_digit);
            if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.') || tag {
                end += 1;
            } else {
                break;
            }
        }
        let attribute = &s[..end];
        if attribute.is_empty() {
            return Err(format!("expected an attribute at {s:?}"));
        }
        let rest = s[end..].trim_start();
        let op = OPS
            .iter()
            .find(|op| rest.starts_with(**op))
            .ok_or_else(|| format!("{attribute}: expected an operator"))?;
        let (value, rest) = take_value(&rest[op.len()..])
            .ok_or_else(|| format!("{attribute}: expected a value"))?;
        items.push((attribute.to_owned(), (*op).to_owned(), value));
        let rest = rest.trim_start();
        match rest.strip_prefix(',') {
            Some(after) if after.trim().is_empty() => return Ok((items, true)),
            Some(after) => s = after,
            None if rest.is_empty() => return Ok((items, false)),
            None => return Err(format!("unexpected {rest:?} after {attribute}")),
        }
    }
}

/// A MikroTik rate: `123`(bit/s), `64k`, `10M`, `1G` in kbit/s.
fn mikrotik_rate(s: &str) -> Option<u32> {
    let s = s.trim();
    let (num, mult) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1.0),
        b'M' | b'm' => (&s[..s.len() - 1], 1_000.0),
        b'G' | b'g' => (&s[..s.len() - 1], 1_000_000.0),
        _ => (s, 0.001),
    };
    let v: f64 = num.parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| (v * mult).round().min(f64::from(u32::MAX)) as u32)
}

/// Mikrotik-Rate-Limit `rx/tx [rx-burst/tx-burst rx-thr/tx-thr
/// rx-time/tx-time ...]`: (download, upload, burst) in kbit/s; rx is the
/// subscriber's upload.
fn parse_rate_limit(value: &str) -> Option<(u32, u32, Option<Burst>)> {
    let pair = |s: &str| -> Option<(u32, u32)> {
        let (rx, tx) = s.split_once('/').unwrap_or((s, s));
        Some((mikrotik_rate(rx)?, mikrotik_rate(tx)?))
    };
    let mut parts = value.split_whitespace();
    let (up, down) = pair(parts.next()?)?;
    let burst = match (parts.next(), parts.next(), parts.next()) {
        (Some(b), Some(t), Some(time)) => {
            let (bu, bd) = pair(b)?;
            let (tu, td) = pair(t)?;
            let secs = time.split('/').next()?.trim_end_matches('s').parse().ok()?;
            Some(Burst {
                download_kbps: bd,
                upload_kbps: bu,
                threshold_download_kbps: td,
                threshold_upload_kbps: tu,
                time_secs: secs,
            })
        }
        _ => None,
    };
    Some((down, up, burst))
}

/// FreeRADIUS's Expiration: the moment the account stops working, in
/// local time. shardius keeps the last day that still works.
fn last_valid_day(value: &str) -> Option<NaiveDate> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<i64>() {
        let t = chrono::DateTime::from_timestamp(secs, 0)?.with_timezone(&chrono::Local);
        return Some((t.naive_local() - Duration::seconds(1)).date());
    }
    const WITH_TIME: [&str; 4] = [
        "%b %d %Y %H:%M:%S",
        "%d %b %Y %H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
    ];
    const DATE_ONLY: [&str; 3] = ["%b %d %Y", "%d %b %Y", "%Y-%m-%d"];
    let v = v.trim_end_matches(" UTC").trim();
    let at = WITH_TIME
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(v, f).ok())
        .or_else(|| {
            DATE_ONLY
                .iter()
                .find_map(|f| NaiveDate::parse_from_str(v, f).ok())
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })?;
    Some((at - Duration::seconds(1)).date())
}

fn nas_type(nastype: Option<&str>) -> (NasType, Option<String>) {
    match nastype.map(|t| t.trim().to_ascii_lowercase()).as_deref() {
        Some("mikrotik") => (NasType::Mikrotik, None),
        None | Some("" | "other") => (NasType::Generic, None),
        Some(t) if NasType::parse(t).is_some() => (NasType::parse(t).expect("checked"), None),
        Some(t) => (
            NasType::Generic,
            Some(format!(
                "type {t:?} registered as generic (Filter-Id speeds): shardius has no {t} type"
            )),
        ),
    }
}

/// Turns what FreeRADIUS holds into what shardius stores.
pub fn plan(source: &Source, key: &PasswordKey, dictionary: &Dictionary) -> Plan {
    let mut p = Plan::default();
    p.skipped.extend(source.unreadable.iter().cloned());

    for n in &source.nas {
        let who = format!("NAS {:?} ({})", n.nasname, n.origin);
        let ip = match n.nasname.trim().parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) if n.nasname.contains('/') => {
                p.skipped.push(format!(
                    "{who}: a network; shardius registers each NAS by its address"
                ));
                continue;
            }
            Err(_) => {
                p.skipped
                    .push(format!("{who}: not an IP address; register it by address"));
                continue;
            }
        };
        let len = n.secret.chars().count();
        if !(1..=100).contains(&len) {
            p.skipped
                .push(format!("{who}: its secret is not 1 to 100 characters"));
            continue;
        }
        let (ty, note) = nas_type(n.nastype.as_deref());
        if let Some(note) = note {
            p.notes.push(format!("{who}: {note}"));
        }
        let short = n
            .shortname
            .clone()
            .filter(|s| !s.trim().is_empty() && !s.chars().any(char::is_control));
        let mut record = NasRecord::new(
            short.as_deref().unwrap_or(n.nasname.trim()),
            ip,
            &n.secret,
            ty,
        );
        record.short_name = short;
        p.batch.nas.push(record);
    }

    // Groups: every group a user is in, and every group with replies.
    let mut group_names: Vec<&str> = source
        .groups
        .iter()
        .map(|(_, g, _)| g.as_str())
        .chain(source.group_reply.iter().map(|i| i.owner.as_str()))
        .collect();
    group_names.sort_unstable();
    group_names.dedup();
    for group in group_names {
        let mut service = ServiceRecord {
            id: 0,
            name: group.to_owned(),
            download_kbps: 0,
            upload_kbps: 0,
            ..ServiceRecord::with_speeds(0, "", 0, 0)
        };
        let mut lines = Vec::new();
        for item in source.group_reply.iter().filter(|i| i.owner == group) {
            let what = format!("group {group:?} {} ({})", item.attribute, item.origin);
            if item.attribute.eq_ignore_ascii_case("Mikrotik-Rate-Limit") {
                match parse_rate_limit(&item.value) {
                    Some((down, up, burst)) => {
                        service.download_kbps = down;
                        service.upload_kbps = up;
                        service.burst = burst;
                        // Parts shardius's services do not hold (burst
                        // rates without threshold and time, two burst
                        // times, priority, minimum rates): the exact
                        // string is kept as the service's reply.
                        let fields: Vec<&str> = item.value.split_whitespace().collect();
                        let lossy = match fields.len() {
                            1 => false,
                            4 => fields[3].split_once('/').is_some_and(|(a, b)| a != b),
                            _ => true,
                        };
                        if lossy {
                            lines.push(format!("Mikrotik-Rate-Limit := \"{}\"", item.value));
                        }
                    }
                    None => p.skipped.push(format!(
                        "{what}: {:?} is not a MikroTik rate limit",
                        item.value
                    )),
                }
                continue;
            }
            if item.value.contains(['\n', '\r']) {
                p.skipped.push(format!("{what}: a value with a line break"));
                continue;
            }
            match dictionary.encode(&item.attribute, &item.value) {
                Ok(_) if matches!(item.op.as_str(), "=" | ":=" | "+=") => lines.push(format!(
                    "{} {} \"{}\"",
                    item.attribute,
                    item.op,
                    item.value.replace('"', "")
                )),
                Ok(_) => p
                    .skipped
                    .push(format!("{what}: op {:?} is not a reply operator", item.op)),
                Err(e) => p.skipped.push(format!("{what}: {e}")),
            }
        }
        for item in source.group_check.iter().filter(|i| i.owner == group) {
            // FreeRADIUS refuses a login over Simultaneous-Use: the
            // service's limit with `reject`, its default.
            if item.attribute.eq_ignore_ascii_case("Simultaneous-Use")
                && matches!(item.op.as_str(), ":=" | "=" | "==")
            {
                match item.value.trim().parse::<u32>() {
                    Ok(n) => service.max_sessions = n,
                    Err(_) => p.skipped.push(format!(
                        "group {group:?} Simultaneous-Use ({}): {:?} is not a number",
                        item.origin, item.value
                    )),
                }
                continue;
            }
            p.skipped.push(format!(
                "group {group:?} check item {} {} {:?} ({}): group checks are not imported",
                item.attribute, item.op, item.value, item.origin
            ));
        }
        service.reply_attributes = lines.join("\n");
        p.batch.services.push(service);
    }

    // Each user's groups by priority (lower first): the first is its service.
    let mut user_groups: HashMap<&str, Vec<(&str, i32)>> = HashMap::new();
    for (user, group, priority) in &source.groups {
        user_groups
            .entry(user)
            .or_default()
            .push((group, *priority));
    }
    for groups in user_groups.values_mut() {
        groups.sort_by_key(|(_, p)| *p);
    }

    let mut checks: BTreeMap<&str, Vec<&Item>> = BTreeMap::new();
    for item in &source.check {
        checks.entry(&item.owner).or_default().push(item);
    }
    let mut imported = std::collections::HashSet::new();
    for (user, items) in &checks {
        let who = format!("user {user:?}");
        if let Err(e) = check_username(user) {
            p.skipped.push(format!("{who}: {e}"));
            continue;
        }
        let mut password: Option<(PasswordKind, Vec<u8>)> = None;
        let mut record = SubscriberRecord {
            id: 0,
            username: (*user).to_owned(),
            password_enc: Vec::new(),
            service_id: None,
            is_active: true,
            expiry_date: None,
            mac_address: None,
            static_ip: None,
            updated_at: 0,
            password_kind: PasswordKind::Cleartext,
            max_sessions: None,
        };
        let mut refuse: Option<String> = None;
        for item in items {
            let what = format!("{who} {} ({})", item.attribute, item.origin);
            match item.attribute.to_ascii_lowercase().as_str() {
                "cleartext-password" | "user-password" => match check_password(&item.value) {
                    Ok(()) => {
                        password = Some((PasswordKind::Cleartext, item.value.as_bytes().to_vec()))
                    }
                    Err(e) => refuse = Some(format!("{what}: {e}")),
                },
                "nt-password" => {
                    let hex = item.value.trim().trim_start_matches("0x");
                    match hex::decode(hex).ok().filter(|h| h.len() == 16) {
                        Some(hash) => {
                            if password.is_none() {
                                password = Some((PasswordKind::NtHash, hash));
                            }
                        }
                        None => refuse = Some(format!("{what}: not 32 hex digits")),
                    }
                }
                "expiration" => match last_valid_day(&item.value) {
                    Some(d) => record.expiry_date = Some(d),
                    None => refuse = Some(format!("{what}: {:?} is not a date", item.value)),
                },
                "simultaneous-use" => match item.value.trim().parse::<u32>() {
                    Ok(n) => record.max_sessions = Some(n),
                    Err(_) => p
                        .skipped
                        .push(format!("{what}: {:?} is not a number", item.value)),
                },
                "calling-station-id" => match mac::parse(item.value.trim().as_bytes()) {
                    Some(m) => record.mac_address = Some(mac::format(&m)),
                    None => p.skipped.push(format!(
                        "{what}: {:?} is not a MAC address; no binding imported",
                        item.value
                    )),
                },
                "auth-type" if item.value.eq_ignore_ascii_case("reject") => {
                    record.is_active = false
                }
                "auth-type" if item.value.eq_ignore_ascii_case("accept") => {
                    refuse = Some(format!("{what}: accepts any password; not imported"))
                }
                _ => p.skipped.push(format!(
                    "{what}: check item {} {:?} is not imported",
                    item.op, item.value
                )),
            }
        }
        if let Some(reason) = refuse {
            p.skipped.push(reason);
            continue;
        }
        let Some((kind, secret)) = password else {
            let hashes: Vec<&str> = items
                .iter()
                .map(|i| i.attribute.as_str())
                .filter(|a| a.to_ascii_lowercase().ends_with("-password"))
                .collect();
            p.skipped.push(if hashes.is_empty() {
                format!("{who}: no Cleartext-Password or NT-Password")
            } else {
                format!(
                    "{who}: {} is a hash shardius cannot check; set a new password",
                    hashes.join(", ")
                )
            });
            continue;
        };
        if kind == PasswordKind::NtHash {
            p.notes.push(format!(
                "{who}: known only by its NT hash: MS-CHAPv2 and PAP work, CHAP logins will be rejected (chap needs the cleartext password)"
            ));
        }
        record.password_kind = kind;
        record.password_enc = key.encrypt(&secret);
        let groups = user_groups.get(user).cloned().unwrap_or_default();
        for (group, priority) in groups.iter().skip(1) {
            p.notes.push(format!(
                "{who}: also in group {group:?} (priority {priority}): shardius gives one service, {:?}",
                groups[0].0
            ));
        }
        imported.insert(*user);
        p.batch
            .subscribers
            .push((record, groups.first().map(|(g, _)| (*g).to_owned())));
    }
    for (user, group, _) in &source.groups {
        if !checks.contains_key(user.as_str()) {
            p.skipped.push(format!(
                "user {user:?} (in group {group:?}): no check items, so no password"
            ));
        }
    }

    for item in &source.reply {
        let what = format!("user {:?} {} ({})", item.owner, item.attribute, item.origin);
        if !imported.contains(item.owner.as_str()) {
            p.skipped.push(format!("{what}: the user is not imported"));
            continue;
        }
        if !matches!(item.op.as_str(), "=" | ":=" | "+=") {
            p.skipped
                .push(format!("{what}: op {:?} is not a reply operator", item.op));
            continue;
        }
        match dictionary.encode(&item.attribute, &item.value) {
            Ok(_) => p.batch.radreply.push(RadreplyRecord {
                username: item.owner.clone(),
                attribute: item.attribute.clone(),
                op: item.op.clone(),
                value: item.value.clone(),
            }),
            Err(e) => p.skipped.push(format!("{what}: {e}")),
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PasswordKey {
        PasswordKey::from_master(&[7; 32])
    }

    #[test]
    fn a_users_file_is_read_entry_by_entry_and_defaults_are_refused() {
        let text = "# FreeRADIUS users\n\
            alice Cleartext-Password := \"pw, with \\\"quote\\\"\", Simultaneous-Use := 1\n\
            \tMikrotik-Rate-Limit = \"2M/10M\",\n\
            \tFramed-IP-Address = 100.64.0.7, # comment\n\
            \tFall-Through = No\n\
            \n\
            DEFAULT Auth-Type := Reject\n\
            \tReply-Message = \"no\"\n\
            bob NT-Password := 0x8846F7EAEE8FB117AD06BDD830B7586C\n\
            $INCLUDE other\n\
            carol Cleartext-Password\n";
        let mut s = Source::default();
        parse_users(text.as_bytes(), "users", &mut s);
        let check: Vec<(&str, &str, &str)> = s
            .check
            .iter()
            .map(|i| (i.owner.as_str(), i.attribute.as_str(), i.value.as_str()))
            .collect();
        assert_eq!(
            check,
            [
                ("alice", "Cleartext-Password", "pw, with \"quote\""),
                ("alice", "Simultaneous-Use", "1"),
                ("bob", "NT-Password", "0x8846F7EAEE8FB117AD06BDD830B7586C"),
            ]
        );
        let reply: Vec<(&str, &str)> = s
            .reply
            .iter()
            .map(|i| (i.attribute.as_str(), i.value.as_str()))
            .collect();
        assert_eq!(
            reply,
            [
                ("Mikrotik-Rate-Limit", "2M/10M"),
                ("Framed-IP-Address", "100.64.0.7")
            ]
        );
        assert_eq!(s.reply[1].origin, "users:4");
        assert_eq!(s.unreadable.len(), 4, "{:?}", s.unreadable);
        assert!(s.unreadable[0].contains("DEFAULT"));
        assert!(s.unreadable[1].contains("outside an entry"));
        assert!(s.unreadable[2].contains("$INCLUDE"));
        assert!(s.unreadable[3].starts_with("users:11"));
    }

    #[test]
    fn rates_expirations_and_types_translate() {
        assert_eq!(parse_rate_limit("2M/10M"), Some((10_000, 2_000, None)));
        assert_eq!(parse_rate_limit("512k"), Some((512, 512, None)));
        assert_eq!(parse_rate_limit("64000/128000"), Some((128, 64, None)));
        let (d, u, b) = parse_rate_limit("1M/4M 2M/8M 768k/3M 10/10 8").unwrap();
        assert_eq!((d, u), (4_000, 1_000));
        let b = b.unwrap();
        assert_eq!(
            (
                b.download_kbps,
                b.upload_kbps,
                b.threshold_download_kbps,
                b.time_secs
            ),
            (8_000, 2_000, 3_000, 10)
        );
        assert_eq!(parse_rate_limit("fast"), None);
        assert_eq!(parse_rate_limit(""), None);
        let day = |s: &str| last_valid_day(s).map(|d| d.to_string());
        assert_eq!(day("Jan 01 2027").as_deref(), Some("2026-12-31"));
        assert_eq!(day("01 Jan 2027 12:00:00").as_deref(), Some("2027-01-01"));
        assert_eq!(day("2027-03-01").as_deref(), Some("2027-02-28"));
        assert_eq!(day("soon"), None);
        assert_eq!(nas_type(Some("MikroTik")).0, NasType::Mikrotik);
        assert_eq!(nas_type(Some("cisco")), (NasType::Cisco, None));
        assert!(nas_type(Some("ascend")).1.is_some());
        assert!(nas_type(Some("other")).1.is_none());
    }

    fn item(owner: &str, attribute: &str, op: &str, value: &str) -> Item {
        Item {
            owner: owner.into(),
            attribute: attribute.into(),
            op: op.into(),
            value: value.into(),
            origin: "test".into(),
        }
    }

    #[test]
    fn a_plan_imports_what_it_can_and_says_why_not_for_the_rest() {
        let source = Source {
            nas: vec![
                FrNas {
                    nasname: "10.0.0.1".into(),
                    shortname: Some("bng1".into()),
                    nastype: Some("mikrotik".into()),
                    secret: "s".into(),
                    origin: "nas id 1".into(),
                },
                FrNas {
                    nasname: "10.0.0.0/24".into(),
                    shortname: None,
                    nastype: None,
                    secret: "s".into(),
                    origin: "nas id 2".into(),
                },
            ],
            check: vec![
                item("alice", "Cleartext-Password", ":=", "pw"),
                item("alice", "Expiration", ":=", "Jan 01 2030"),
                item("alice", "Calling-Station-Id", "==", "aa-bb-cc-dd-ee-ff"),
                item(
                    "nt",
                    "NT-Password",
                    ":=",
                    "8846F7EAEE8FB117AD06BDD830B7586C",
                ),
                item("hashed", "Crypt-Password", ":=", "$1$xyz"),
                item("off", "Cleartext-Password", ":=", "pw"),
                item("off", "Auth-Type", ":=", "Reject"),
                item("evil\u{7}", "Cleartext-Password", ":=", "pw"),
            ],
            reply: vec![
                item("alice", "Cisco-AVPair", "+=", "ip:addr-pool=a"),
                item("alice", "No-Such-Attr", ":=", "1"),
                item("ghost", "Reply-Message", ":=", "x"),
            ],
            groups: vec![
                ("alice".into(), "gold".into(), 1),
                ("alice".into(), "silver".into(), 2),
                ("nt".into(), "silver".into(), 1),
            ],
            group_check: vec![
                item("gold", "Simultaneous-Use", ":=", "1"),
                item("silver", "Simultaneous-Use", ":=", "many"),
                item("silver", "Framed-Protocol", "==", "PPP"),
            ],
            group_reply: vec![
                item("gold", "Mikrotik-Rate-Limit", ":=", "2M/10M"),
                item("gold", "Acct-Interim-Interval", ":=", "300"),
                item("silver", "Mikrotik-Rate-Limit", ":=", "1M/5M 0/0 0/0 0/0 8"),
            ],
            unreadable: vec![],
        };
        let p = plan(&source, &key(), crate::proto::dictionary::builtin());
        assert_eq!(p.batch.nas.len(), 1);
        assert_eq!(p.batch.nas[0].name, "bng1");
        let users: Vec<&str> = p
            .batch
            .subscribers
            .iter()
            .map(|(s, _)| s.username.as_str())
            .collect();
        assert_eq!(users, ["alice", "nt", "off"]);
        let (alice, service) = &p.batch.subscribers[0];
        assert_eq!(service.as_deref(), Some("gold"));
        assert_eq!(alice.expiry_date.unwrap().to_string(), "2029-12-31");
        assert_eq!(alice.mac_address.as_deref(), Some("AA:BB:CC:DD:EE:FF"));
        let mut plain = [0u8; 256];
        assert_eq!(
            key().decrypt(&alice.password_enc, &mut plain).unwrap(),
            b"pw"
        );
        let (nt, _) = &p.batch.subscribers[1];
        assert_eq!(nt.password_kind, PasswordKind::NtHash);
        assert_eq!(
            key().decrypt(&nt.password_enc, &mut plain).unwrap().len(),
            16
        );
        assert!(!p.batch.subscribers[2].0.is_active);
        let gold = p.batch.services.iter().find(|s| s.name == "gold").unwrap();
        assert_eq!((gold.download_kbps, gold.upload_kbps), (10_000, 2_000));
        assert_eq!(gold.reply_attributes, "Acct-Interim-Interval := \"300\"");
        assert_eq!(gold.max_sessions, 1);
        assert_eq!(gold.over_limit, crate::model::OverLimit::Reject);
        let silver = p
            .batch
            .services
            .iter()
            .find(|s| s.name == "silver")
            .unwrap();
        assert!(
            silver
                .reply_attributes
                .contains("Mikrotik-Rate-Limit := \"1M/5M 0/0 0/0 0/0 8\""),
            "{}",
            silver.reply_attributes
        );
        assert_eq!(p.batch.radreply.len(), 1);
        let all = p.skipped.join("\n");
        for want in [
            "a network",
            "Crypt-Password is a hash",
            "No-Such-Attr",
            "\"ghost\"",
            "control characters",
            "\"silver\" Simultaneous-Use (test)",
            "check item Framed-Protocol",
        ] {
            assert!(all.contains(want), "{want}: {all}");
        }
        let notes = p.notes.join("\n");
        assert!(
            notes.contains("\"nt\": known only by its NT hash"),
            "{notes}"
        );
        assert!(notes.contains("also in group \"silver\""), "{notes}");
    }

    #[test]
    fn a_users_line_that_is_not_utf8_leaves_its_whole_entry_out() {
        let text: &[u8] = b"ok Cleartext-Password := \"pw\"\r\n\
            latin Cleartext-Password := \"p\xe4ss\"\n\
            \tReply-Message = \"after\"\n\
            mixed Cleartext-Password := \"pw\"\n\
            \tReply-Message = \"r\xe9ply\"\n\
            \tFilter-Id = \"f\"\n";
        let mut s = Source::default();
        parse_users(text, "users", &mut s);
        let owners: Vec<&str> = s.check.iter().map(|i| i.owner.as_str()).collect();
        assert_eq!(owners, ["ok"]);
        assert!(s.reply.is_empty(), "{:?}", s.reply);
        let all = s.unreadable.join("\n");
        assert!(all.contains("users:2: not UTF-8"), "{all}");
        assert!(
            all.contains("users:3: a reply line outside an entry"),
            "{all}"
        );
        assert!(
            all.contains("users:5: not UTF-8; the entry of user \"mixed\""),
            "{all}"
        );
    }
}
