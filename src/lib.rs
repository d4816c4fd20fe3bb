//! shardius: a thread-per-core RADIUS server for Internet service providers.
//!
//! The crate is split so that everything that decides is free of IO:
//!
//! - [`proto`]: the RADIUS wire format. Parse a datagram into a borrowed
//!   [`proto::Packet`], build packets with a [`proto::PacketWriter`] into a
//!   caller-owned buffer, compute and check Request/Response Authenticators,
//!   Message-Authenticator, User-Password hiding and MPPE key encryption.
//! - [`auth`]: PAP, CHAP and MS-CHAPv2 verification (RFC 2759) and MPPE key
//!   derivation (RFC 3079), as pure functions over bytes.
//! - [`nas`]: the client side: Access-Requests as a MikroTik BNG builds
//!   them, and full checks of the replies (used by loadgen and the tests).
//!
//! None of these modules opens a socket, spawns a thread, touches a
//! database or reads the clock: callers pass bytes, secrets and the time in.

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
pub mod proto;
pub mod server;
pub mod store;
pub mod text;
