//! `shardius serve --demo`: a fresh machine to a working server in one
//! command. Creates what is missing (key, database, NAS, service,
//! subscribers) and leaves what exists alone.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::Context;

use crate::config::Config;
use crate::keyfile::{self, PasswordKey};
use crate::store::{NasRecord, NasType, ServiceRecord, SubscriberRecord};

pub const DEMO_SECRET: &str = "testing123";
const DEMO_SERVICE: &str = "demo-10M";
const DEMO_SUBSCRIBERS: u32 = 1000;

pub fn prepare(config: &Config) -> anyhow::Result<()> {
    let key_path = &config.security.key_file;
    if !key_path.exists() {
        keyfile::generate(key_path)?;
        tracing::info!("demo: created key file {}", key_path.display());
    }
    let key = PasswordKey::load(key_path)?;
    let mut store = super::open_store(config)?;
    store.migrate()?;
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    if !store
        .nas_devices()?
        .iter()
        .any(|n| n.ip_address == localhost)
    {
        store.add_nas(&NasRecord::new(
            "demo-nas",
            localhost,
            DEMO_SECRET,
            NasType::Mikrotik,
        ))?;
    }
    let service_id = match store.service_id(DEMO_SERVICE)? {
        Some(id) => id,
        None => store.add_service(&ServiceRecord {
            id: 0,
            name: DEMO_SERVICE.into(),
            download_kbps: 10_000,
            upload_kbps: 2_000,
            pool_name: Some("demo-pool".into()),
            ..ServiceRecord::with_speeds(0, "", 0, 0)
        })?,
    };
    if store.list_subscribers(1)?.is_empty() {
        let subscribers: Vec<SubscriberRecord> = (1..=DEMO_SUBSCRIBERS)
            .map(|n| SubscriberRecord {
                id: 0,
                username: format!("user{n}"),
                password_enc: key.encrypt(format!("pass{n}").as_bytes()),
                service_id: Some(service_id),
                is_active: true,
                expiry_date: None,
                mac_address: None,
                static_ip: None,
                updated_at: 0,
                password_kind: Default::default(),
                max_sessions: None,
            })
            .collect();
        store
            .add_subscribers(&subscribers)
            .context("adding demo subscribers")?;
        tracing::info!("demo: added subscribers user1..user{DEMO_SUBSCRIBERS} (passwords pass1..)");
    }
    Ok(())
}

pub fn print_instructions(config: &Config) {
    let port = config.server.listen_auth.first().map_or(1812, |a| a.port());
    let loadgen_port = if port == 1812 {
        String::new()
    } else {
        format!(" --auth-port {port}")
    };
    println!(
        "shardius demo: NAS 127.0.0.1 (secret {DEMO_SECRET}), subscribers user1..user{DEMO_SUBSCRIBERS} with passwords pass1..pass{DEMO_SUBSCRIBERS}, service {DEMO_SERVICE} (Mikrotik-Rate-Limit 2000k/10000k)\n\
         try it (radtest/radclient are in Debian's freeradius-utils):\n  \
           radtest user1 pass1 127.0.0.1:{port} 0 {DEMO_SECRET}\n  \
           echo 'User-Name=user2,CHAP-Password=pass2,Message-Authenticator=0x00' | radclient -x 127.0.0.1:{port} auth {DEMO_SECRET}\n  \
           cargo run --release -p loadgen --{loadgen_port} --auth mschapv2 --count 100"
    );
}
