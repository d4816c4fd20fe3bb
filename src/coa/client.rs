//! Sending one CoA or Disconnect request over UDP and waiting for its
//! answer: the same bytes retransmitted on timeout (RFC 5176 §2.3 via RFC
//! 5080), answers from elsewhere or to other identifiers ignored.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use super::packet::{build_request, check_answer, Action, Answer, AnswerError, Target};
use crate::proto::{Secret, MAX_PACKET_LEN};

/// How patiently to ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Transmissions in all (the first plus retransmissions).
    pub tries: u32,
    /// Wait for an answer after each transmission.
    pub timeout: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            tries: 3,
            timeout: Duration::from_secs(2),
        }
    }
}

/// How an exchange ended, when it did not end with an answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("timeout: no answer to {tries} tries")]
    Timeout { tries: u32 },
    #[error("{0}")]
    BadAnswer(AnswerError),
    #[error("cannot build the request: {0}")]
    Encode(crate::proto::EncodeError),
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

/// Sends `action` for `target` to the NAS at `to` and waits for its answer.
pub fn send(
    to: SocketAddr,
    secret: &Secret,
    target: &Target<'_>,
    action: &Action,
    event_timestamp: u32,
    retry: Retry,
) -> Result<Answer, SendError> {
    let bind: SocketAddr = if to.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind)?;
    let mut buf = [0u8; MAX_PACKET_LEN];
    let identifier: u8 = rand::random();
    let request = build_request(
        &mut buf,
        identifier,
        secret,
        target,
        action,
        event_timestamp,
    )
    .map_err(SendError::Encode)?
    .to_vec();
    let mut answer = [0u8; MAX_PACKET_LEN];
    for _ in 0..retry.tries.max(1) {
        socket.send_to(&request, to)?;
        let deadline = Instant::now() + retry.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            socket.set_read_timeout(Some(left))?;
            let (n, from) = match socket.recv_from(&mut answer) {
                Ok(r) => r,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e.into()),
            };
            if from != to {
                continue;
            }
            match check_answer(&answer[..n], &request, secret) {
                Ok(a) => return Ok(a),
                // A stray answer to an earlier request: keep waiting.
                Err(AnswerError::WrongIdentifier) => continue,
                Err(e) => return Err(SendError::BadAnswer(e)),
            }
        }
    }
    Err(SendError::Timeout {
        tries: retry.tries.max(1),
    })
}
