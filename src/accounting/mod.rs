//! Accounting-Requests as events, without IO: [`event`] turns a packet into
//! an [`AcctEvent`] with its session key and merge rules. The pipeline that
//! makes them durable (writer, spool, set-aside file) is the shell's:
//! `server::accounting`.

pub mod event;

pub use event::{freeradius_unique_id, legacy_unique_id, AcctEvent, AcctKind, AcctParseError};
