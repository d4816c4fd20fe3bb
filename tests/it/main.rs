//! The integration tests, as one binary (hickory-dns style): it links
//! once. Most start the real `shardius` binary on free ports of 127.0.0.1
//! (and throwaway PostgreSQL clusters); `on_both_backends!` runs a store
//! test on SQLite and on PostgreSQL. `tests/no_alloc.rs` stays a binary of
//! its own: it installs a counting global allocator.
#![allow(clippy::unwrap_used)]
// The harness calls libc (kill, geteuid, atexit, setrlimit before exec),
// each site with its SAFETY comment.
#![allow(unsafe_code)]

#[macro_use]
mod common;

mod accounting;
mod accounting_store;
mod acct_hardening;
mod bandwidth_rules;
mod cli;
mod cluster;
mod cluster_store;
mod coa;
mod codec_properties;
mod dictionary;
mod engine;
mod engine_properties;
mod freeradius;
mod freeradius_import;
mod hostile;
mod layering;
mod operations;
mod pools;
mod pools_serve;
mod postgres;
mod proxied;
mod quota;
mod quota_actions;
mod radius_crate_interop;
mod rfc_vectors;
mod server;
mod simultaneous_use;
mod systemd;
mod vendor_speeds;
mod walled_garden;
