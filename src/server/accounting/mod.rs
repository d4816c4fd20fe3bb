//! The accounting pipeline: shards hand events to the [`writer`] thread,
//! which makes each batch durable (in the database, in the [`spool`] while
//! the database is away, or, for an event the database refuses for its
//! data, in the [`rejected`] file) and only then sends the
//! Accounting-Responses; [`quota`] counts the committed traffic for FUP
//! tiers on the writer's side and in the usage thread.

pub mod lanes;
pub mod legacy;
pub mod quota;
pub mod rejected;
pub mod spool;
pub mod writer;

pub use writer::{AcctMessage, Writer, WriterStats};

use tracing::{info, warn};

/// Opens the spool at `accounting.spool_path`, saying what a previous run
/// left in it: records to replay, or a tail that holds no intact record.
pub fn open_spool(
    config: &crate::config::AccountingConfig,
) -> Result<spool::Spool, spool::SpoolError> {
    let (spool, opened) = spool::Spool::open(&config.spool_path, config.spool_max_bytes)?;
    if opened.tail > 0 {
        let what = if opened.tail_torn {
            "a record cut short by a crash (never acknowledged)"
        } else {
            "damaged bytes (acknowledged accounting may have been in them)"
        };
        warn!(
            "accounting spool {}: its last {} bytes hold no intact record, {what}; kept in {}",
            spool.path().display(),
            opened.tail,
            spool.unreadable_path().display()
        );
    }
    if opened.pending > 0 {
        info!(
            bytes = opened.pending,
            "accounting spool left from a previous run: replaying it"
        );
    }
    Ok(spool)
}
