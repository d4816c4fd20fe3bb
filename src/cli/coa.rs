//! `shardius disconnect` and `shardius coa`: through the running server's
//! admin API when a token is configured (so the results are counted in its
//! metrics), else by sending the requests from this process.

use anyhow::{bail, Context};

use crate::store::Store;

/// `shardius disconnect` / `shardius coa`: one line per session; fails
/// unless every session answered ACK. With `http.admin_token` configured
/// and the server answering on `http.listen`, the request goes through the
/// server's admin API, so its results are counted in the server's metrics;
/// otherwise (or when the server is down) this process sends it itself.
pub fn change_sessions(
    open_store: impl FnOnce() -> anyhow::Result<Box<dyn Store>>,
    config: &crate::config::Config,
    user: &str,
    session: Option<&str>,
    change: crate::coa::Change,
) -> anyhow::Result<()> {
    if let Some(results) = through_server(config, user, session, &change)? {
        return report(user, session, &results);
    }
    let mut store = open_store()?;
    let reports = send_from_here(store.as_mut(), config, user, session, &change)?;
    let results: Vec<(String, bool)> = reports
        .iter()
        .map(|r| (r.line(), r.result() == crate::coa::CoaResult::Ack))
        .collect();
    report(user, session, &results)
}

/// Sends `change` to each open session of `user` (or `session`) from this
/// process, driving the same CoA machine as the server's jobs thread with
/// a blocking loop, and writes every result to radius_logs.
fn send_from_here(
    store: &mut dyn Store,
    config: &crate::config::Config,
    user: &str,
    session: Option<&str>,
    change: &crate::coa::Change,
) -> anyhow::Result<Vec<crate::coa::Report>> {
    use crate::coa::{Ended, Report};
    let sessions: Vec<_> = store
        .open_sessions_of(user)?
        .into_iter()
        .filter(|s| session.is_none_or(|id| s.session_id == id))
        .collect();
    let nas = store.nas_devices()?;
    let mut driver = crate::server::jobs::coa::Driver::new(crate::coa::Retry {
        tries: config.coa.tries,
        timeout: std::time::Duration::from_millis(config.coa.timeout_ms),
    });
    let mut reports = Vec::new();
    let mut sent = std::collections::HashMap::new();
    let event_timestamp = chrono::Utc::now().timestamp().max(0) as u32;
    for s in sessions {
        let prepared = match crate::coa::prepare(
            &s,
            |ip| crate::server::jobs::nas_target_in(&nas, ip),
            change,
            &config.speeds,
            // Without the server, no snapshot to name the service from.
            |_| None,
        ) {
            Ok(p) => p,
            Err(report) => {
                reports.push(report);
                continue;
            }
        };
        match driver.send(
            prepared.to,
            &prepared.secret,
            &prepared.target(),
            &prepared.action,
            event_timestamp,
        ) {
            Ok(id) => {
                sent.insert(id, (s, prepared.to));
            }
            Err(e) => reports.push(Report::new(
                change.kind(),
                &s,
                Some(prepared.to),
                Ended::NotSent(format!("cannot build the request: {e}")),
            )),
        }
    }
    for (id, outcome) in driver.finish_all()? {
        if let Some((s, to)) = sent.remove(&id) {
            reports.push(Report::new(
                change.kind(),
                &s,
                Some(to),
                Ended::Done(outcome),
            ));
        }
    }
    let now = chrono::Utc::now();
    let entries: Vec<_> = reports.iter().map(|r| r.log_entry(now)).collect();
    if let Err(e) = store.write_logs(&entries) {
        tracing::warn!("cannot write CoA results to radius_logs: {e}");
    }
    Ok(reports)
}

/// Prints (line, acknowledged) per session; fails unless all were ACKed.
fn report(user: &str, session: Option<&str>, results: &[(String, bool)]) -> anyhow::Result<()> {
    if results.is_empty() {
        match session {
            Some(id) => bail!("{user} has no open session {id}"),
            None => bail!("{user} has no open session"),
        }
    }
    for (line, _) in results {
        println!("{line}");
    }
    let failed = results.iter().filter(|(_, ack)| !ack).count();
    if failed > 0 {
        bail!("{failed} of {} session(s) not acknowledged", results.len());
    }
    Ok(())
}

/// Asks the running server to do it. `None` when there is no admin token
/// or nothing listens on `http.listen` (then the CLI sends itself).
fn through_server(
    config: &crate::config::Config,
    user: &str,
    session: Option<&str>,
    change: &crate::coa::Change,
) -> anyhow::Result<Option<Vec<(String, bool)>>> {
    let (Some(token), true) = (&config.http.admin_token, config.http.enabled) else {
        return Ok(None);
    };
    let mut addr = config.http.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let (path, body) = match change {
        crate::coa::Change::Disconnect => (
            "disconnect",
            serde_json::json!({ "user": user, "session": session }),
        ),
        crate::coa::Change::Speed {
            rate_limit,
            filter_id,
            ..
        } => (
            "coa",
            serde_json::json!({ "user": user, "session": session, "rate_limit": rate_limit, "filter_id": filter_id }),
        ),
        // Only the expiry job moves sessions into the walled garden.
        crate::coa::Change::Portal { .. } => return Ok(None),
    };
    // Every try of every session may time out; leave room for all of them.
    let patience = std::time::Duration::from_millis(
        config.coa.timeout_ms * u64::from(config.coa.tries) * 8 + 5_000,
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(patience))
        .build()
        .into();
    let response = agent
        .post(format!("http://{addr}/api/{path}"))
        .header("Authorization", format!("Bearer {}", token.expose()))
        .send_json(&body);
    let mut response = match response {
        Ok(r) => r,
        Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Ok(None)
        }
        Err(ureq::Error::ConnectionFailed) => return Ok(None),
        Err(e) => bail!("the server at {addr} did not answer: {e}"),
    };
    let status = response.status().as_u16();
    let json: serde_json::Value = response
        .body_mut()
        .read_json()
        .with_context(|| format!("the server at {addr} answered {status} without JSON"))?;
    match status {
        200 => Ok(Some(
            json["results"]
                .as_array()
                .map(|results| {
                    results
                        .iter()
                        .map(|r| {
                            (
                                r["line"].as_str().unwrap_or_default().to_owned(),
                                r["result"] == "ack",
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        )),
        404 => Ok(Some(Vec::new())),
        _ => bail!(
            "the server at {addr} refused ({status}): {}",
            json["error"].as_str().unwrap_or_default()
        ),
    }
}
