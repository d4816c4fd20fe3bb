//! shardius: a thread-per-core RADIUS server for Internet service providers.
//!
//! Everything that decides is free of IO; a thin shell does the IO
//! (ARCHITECTURE.md is the map). The modules, in three groups:
//!
//! **Decides, no IO** (`tests/it/layering.rs` holds the line: no socket,
//! clock read, thread, file or database, nothing of `store` or `server`):
//! - [`proto`]: the RADIUS wire format: a bounds-checked borrowed
//!   [`proto::Packet`], a [`proto::PacketWriter`] into a caller buffer,
//!   every authenticator, User-Password hiding, MPPE key encryption.
//! - [`auth`]: PAP, CHAP, MS-CHAPv2 (RFC 2759) and MPPE keys (RFC 3079).
//! - [`model`]: the rows the store hands over, the FUP data the policy
//!   decides about, and the cluster's nodes, leases and fences; a leaf
//!   that imports nothing of the crate.
//! - [`policy`]: the snapshot shards answer from, the login decision and
//!   its reply, quota and FUP decisions.
//! - [`pool`]: address pools: definitions (IPv4 ranges, IPv6 prefixes)
//!   and the node's in-memory allocator, which answers returning
//!   subscribers from memory and plans database claims for the rest.
//! - [`engine`]: one shard's request engine: datagram, snapshot and time
//!   in; reply, event and counters out.
//! - [`accounting`]: Accounting-Requests as events, session keys, merge rules.
//! - [`coa`]: CoA/Disconnect packets and the client machine that keeps
//!   many requests in flight on a clock passed in.
//! - [`text`]: request bytes as storable text and as printable text.
//! - [`nas_client`]: the NAS side: requests as a MikroTik builds them and
//!   checks of the replies (for loadgen and the tests).
//!
//! **Does IO**:
//! - [`server`]: the shell: shards (glommio), the accounting pipeline, the
//!   control thread, the loader, the jobs thread, the cluster thread (heartbeat
//!   and job leases), the pools thread (address claims and sweeps), the
//!   radius_logs workers.
//! - [`store`]: the database, one trait per role, SQLite and PostgreSQL.
//! - [`keyfile`]: the master key file; AES-256-GCM passwords at rest.
//! - [`cli`]: the `shardius` command line (`cluster status` included).
//!
//! **Support**:
//! - [`config`]: the TOML file and `SHARDIUS_*` environment, checked.
//! - `fuzzing`: entry points shared by the fuzz targets and the property tests.

pub mod accounting;
pub mod auth;
pub mod cli;
pub mod coa;
pub mod config;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub mod keyfile;
pub mod model;
pub mod nas_client;
pub mod policy;
pub mod pool;
pub mod proto;
pub mod server;
pub mod store;
pub mod text;
