//! `shardius accounting replay FILE`: writes the events of a `.rejected`
//! file (events the database refused for their data, set aside by the
//! writer) into radacct once the cause is fixed.

use std::path::Path;

use anyhow::{bail, Context};
use clap::Subcommand;

use crate::store::{write_splitting, Store};

#[derive(Subcommand, Debug)]
pub enum AccountingCommand {
    /// Write the events of a .rejected file (next to the spool) into radacct
    #[command(
        after_help = "Events the database still refuses are printed on stdout as \
        JSON lines in the same format, so `shardius accounting replay F > G` keeps them; \
        the file itself is not changed. Exit status 0 when every event was written."
    )]
    Replay {
        /// e.g. /var/lib/shardius/shardius-acct.spool.rejected
        file: std::path::PathBuf,
    },
}

pub fn run(store: &mut dyn Store, cmd: AccountingCommand) -> anyhow::Result<()> {
    match cmd {
        AccountingCommand::Replay { file } => replay(store, &file),
    }
}

fn replay(store: &mut dyn Store, file: &Path) -> anyhow::Result<()> {
    let (events, unparsed) = crate::server::accounting::rejected::read(file)
        .with_context(|| format!("reading {}", file.display()))?;
    for line in &unparsed {
        eprintln!("{}: line {line} is not an event (skipped)", file.display());
    }
    let rows: Vec<_> = events.iter().map(|r| r.event.clone()).collect();
    let mut refused = 0usize;
    let outcome = write_splitting(
        &mut |rows| store.write_accounting(rows),
        &rows,
        &mut |row, e| {
            refused += 1;
            let again = crate::server::accounting::rejected::RejectedEvent {
                rejected_at: chrono::Utc::now(),
                error: e.to_string(),
                event: row.clone(),
            };
            println!(
                "{}",
                serde_json::to_string(&again).map_err(std::io::Error::other)?
            );
            Ok(())
        },
    );
    if let Err(stopped) = outcome {
        bail!(
            "{} of {} events handled, then: {}",
            stopped.handled,
            rows.len(),
            stopped.cause
        );
    }
    eprintln!(
        "{} of {} events written to radacct, {refused} still refused",
        rows.len() - refused,
        rows.len()
    );
    if refused > 0 || !unparsed.is_empty() {
        bail!(
            "{refused} event(s) still refused, {} line(s) unreadable",
            unparsed.len()
        );
    }
    Ok(())
}
