//! Credential checks, without IO: PAP, CHAP and MS-CHAPv2 against a
//! subscriber's plaintext password (decrypted by the caller for one request
//! and zeroised after), and the MPPE keys an MS-CHAPv2 Access-Accept carries.

pub mod chap;
pub mod mppe;
pub mod mschapv2;
pub mod pap;

/// Which method an Access-Request uses, decided from its attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Pap,
    Chap,
    MsChapV2,
    /// MS-CHAPv1: recognised and refused (`unsupported auth method`).
    MsChapV1,
    /// EAP-Message present: refused until EAP is supported.
    Eap,
    /// No credentials at all.
    None,
}

impl Method {
    /// Classifies a request by the attributes it carries. EAP wins over
    /// everything (RFC 3579 §2.1), then MS-CHAPv2, CHAP, PAP.
    pub fn of(packet: &crate::proto::Packet<'_>) -> Method {
        use crate::proto::dict::{attr, ms, vendor};
        if packet.attr(attr::EAP_MESSAGE).is_some() {
            Method::Eap
        } else if packet
            .vendor_attr(vendor::MICROSOFT, ms::CHAP2_RESPONSE)
            .is_some()
        {
            Method::MsChapV2
        } else if packet
            .vendor_attr(vendor::MICROSOFT, ms::CHAP_RESPONSE)
            .is_some()
        {
            Method::MsChapV1
        } else if packet.attr(attr::CHAP_PASSWORD).is_some() {
            Method::Chap
        } else if packet.attr(attr::USER_PASSWORD).is_some() {
            Method::Pap
        } else {
            Method::None
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Method::Pap => "pap",
            Method::Chap => "chap",
            Method::MsChapV2 => "mschapv2",
            Method::MsChapV1 => "mschapv1",
            Method::Eap => "eap",
            Method::None => "none",
        }
    }
}
