//! The speed attributes of each BNG vendor, for an Access-Accept and a
//! CoA (MikroTik's Mikrotik-Rate-Limit and a generic NAS's Filter-Id are
//! written by their callers as before). Where vendors are deployed with
//! named policies rather than rates, the names come from templates in
//! `[speeds]`, with `{name}` (the service), `{tier}` (the FUP tier, 0 for
//! none), `{download}` and `{upload}` (kbit/s) filled in.
//!
//! - Cisco (ISG, IOS-XE BNG): Cisco-AVPair (vendor 9, attribute 1) values
//!   `subscriber:sub-qos-policy-in=NAME` / `subscriber:sub-qos-policy-out=NAME`
//!   name policy-maps configured on the router ("Per-User QoS via AAA
//!   Policy Name", Cisco IOS ISG configuration guide, "Configuring ISG
//!   Policies for Regulating Network Access"). Other AV-pairs (such as
//!   `ip:sub-qos-policy-in=` on older IOS) are a template away.
//! - Juniper MX: ERX-Ingress-Policy-Name (4874/10), ERX-Egress-Policy-Name
//!   (4874/11) and ERX-Qos-Profile-Name (4874/26) name firewall policies
//!   and a CoS profile of the router's dynamic profiles (Junos subscriber
//!   management, "RADIUS Servers and Parameters for Subscriber Access").
//! - Huawei (ME60, NE40E): Huawei-Input-Average-Rate (2011/2, the
//!   subscriber's upload) and Huawei-Output-Average-Rate (2011/5, the
//!   download), in bit/s.
//! - accel-ppp: its shaper reads Filter-Id as "DOWN/UP" in kbit/s (or one
//!   number for both) by default (accel-ppp documentation, `[shaper]`
//!   `attr=Filter-Id`).

use serde::Deserialize;

use crate::model::NasType;
use crate::proto::dict::attr;

/// Cisco's, Juniper ERX's and Huawei's vendor numbers.
const CISCO: u32 = 9;
const ERX: u32 = 4874;
const HUAWEI: u32 = 2011;

/// The templates of `[speeds]` (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VendorSpeeds {
    /// One Cisco-AVPair per template.
    pub cisco_avpairs: Vec<String>,
    /// ERX-Ingress-Policy-Name; empty: not sent.
    pub juniper_ingress_policy: String,
    /// ERX-Egress-Policy-Name; empty: not sent.
    pub juniper_egress_policy: String,
    /// ERX-Qos-Profile-Name; empty: not sent.
    pub juniper_qos_profile: String,
}

impl Default for VendorSpeeds {
    fn default() -> Self {
        VendorSpeeds {
            cisco_avpairs: vec![
                "subscriber:sub-qos-policy-in={name}-in".into(),
                "subscriber:sub-qos-policy-out={name}-out".into(),
            ],
            juniper_ingress_policy: "{name}-in".into(),
            juniper_egress_policy: "{name}-out".into(),
            juniper_qos_profile: String::new(),
        }
    }
}

/// The speed to express: a service's, or a FUP tier's of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rate {
    pub download_kbps: u32,
    pub upload_kbps: u32,
    /// The service's name; empty when not known (a manual `coa`).
    pub name: String,
    /// The FUP tier level, 0 for none.
    pub tier: u8,
}

impl Rate {
    /// The speed of a Mikrotik-Rate-Limit string given by hand (`rx/tx`:
    /// upload/download), for the other vendors' attributes; no name.
    pub fn from_rate_limit(rate_limit: &str) -> Option<Rate> {
        let first = rate_limit.split_whitespace().next()?;
        let (rx, tx) = first.split_once('/')?;
        Some(Rate {
            upload_kbps: crate::policy::speed::parse_kbps(rx).ok()?,
            download_kbps: crate::policy::speed::parse_kbps(tx).ok()?,
            name: String::new(),
            tier: 0,
        })
    }

    fn fill(&self, template: &str) -> Result<String, String> {
        if template.contains("{name}") && self.name.is_empty() {
            return Err(format!(
                "{template:?} needs the service's name, which a speed given by hand has not"
            ));
        }
        Ok(template
            .replace("{name}", &self.name)
            .replace("{tier}", &self.tier.to_string())
            .replace("{download}", &self.download_kbps.to_string())
            .replace("{upload}", &self.upload_kbps.to_string()))
    }
}

/// (vendor, attribute, value) of each attribute `nas_type` takes for
/// `rate`; empty for MikroTik and generic NASes (their callers write
/// those). Err: a template needs what `rate` does not have.
pub fn attributes(
    nas_type: NasType,
    rate: &Rate,
    speeds: &VendorSpeeds,
) -> Result<Vec<(u32, u8, Vec<u8>)>, String> {
    let bits = |kbps: u32| (u64::from(kbps) * 1000).min(u64::from(u32::MAX)) as u32;
    Ok(match nas_type {
        NasType::Mikrotik | NasType::Generic => Vec::new(),
        NasType::Cisco => speeds
            .cisco_avpairs
            .iter()
            .filter(|t| !t.is_empty())
            .map(|t| Ok((CISCO, 1, rate.fill(t)?.into_bytes())))
            .collect::<Result<_, String>>()?,
        NasType::Juniper => [
            (10, &speeds.juniper_ingress_policy),
            (11, &speeds.juniper_egress_policy),
            (26, &speeds.juniper_qos_profile),
        ]
        .into_iter()
        .filter(|(_, t)| !t.is_empty())
        .map(|(ty, t)| Ok((ERX, ty, rate.fill(t)?.into_bytes())))
        .collect::<Result<_, String>>()?,
        NasType::Huawei => vec![
            (HUAWEI, 2, bits(rate.upload_kbps).to_be_bytes().to_vec()),
            (HUAWEI, 5, bits(rate.download_kbps).to_be_bytes().to_vec()),
        ],
        NasType::AccelPpp => vec![(
            0,
            attr::FILTER_ID,
            format!("{}/{}", rate.download_kbps, rate.upload_kbps).into_bytes(),
        )],
    })
}

/// Whether `nas_type`'s speed is one of [`attributes`] (the others get
/// Mikrotik-Rate-Limit or a generic Filter-Id).
pub fn by_vendor(nas_type: NasType) -> bool {
    !matches!(nas_type, NasType::Mikrotik | NasType::Generic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate() -> Rate {
        Rate {
            download_kbps: 10_000,
            upload_kbps: 2_000,
            name: "gold".into(),
            tier: 1,
        }
    }

    #[test]
    fn each_vendor_gets_its_own_attributes() {
        let s = VendorSpeeds::default();
        assert_eq!(
            attributes(NasType::Cisco, &rate(), &s).unwrap(),
            vec![
                (9, 1, b"subscriber:sub-qos-policy-in=gold-in".to_vec()),
                (9, 1, b"subscriber:sub-qos-policy-out=gold-out".to_vec()),
            ]
        );
        assert_eq!(
            attributes(NasType::Juniper, &rate(), &s).unwrap(),
            vec![
                (4874, 10, b"gold-in".to_vec()),
                (4874, 11, b"gold-out".to_vec())
            ]
        );
        assert_eq!(
            attributes(NasType::Huawei, &rate(), &s).unwrap(),
            vec![
                (2011, 2, 2_000_000u32.to_be_bytes().to_vec()),
                (2011, 5, 10_000_000u32.to_be_bytes().to_vec())
            ]
        );
        assert_eq!(
            attributes(NasType::AccelPpp, &rate(), &s).unwrap(),
            vec![(0, 11, b"10000/2000".to_vec())]
        );
        assert!(attributes(NasType::Mikrotik, &rate(), &s)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn templates_fill_tiers_and_rates_and_refuse_a_missing_name() {
        let s = VendorSpeeds {
            cisco_avpairs: vec!["ip:rate={download}/{upload}".into(), String::new()],
            juniper_ingress_policy: String::new(),
            juniper_egress_policy: "{name}-fup{tier}".into(),
            juniper_qos_profile: "qos-{download}".into(),
        };
        assert_eq!(
            attributes(NasType::Cisco, &rate(), &s).unwrap(),
            vec![(9, 1, b"ip:rate=10000/2000".to_vec())]
        );
        assert_eq!(
            attributes(NasType::Juniper, &rate(), &s).unwrap(),
            vec![
                (4874, 11, b"gold-fup1".to_vec()),
                (4874, 26, b"qos-10000".to_vec())
            ]
        );
        let unnamed = Rate {
            name: String::new(),
            ..rate()
        };
        assert!(attributes(NasType::Juniper, &unnamed, &s).is_err());
        assert!(attributes(NasType::Cisco, &unnamed, &s).is_ok());
        // Rates past u32 bit/s saturate instead of wrapping.
        let fast = Rate {
            download_kbps: u32::MAX,
            ..rate()
        };
        assert_eq!(
            attributes(NasType::Huawei, &fast, &s).unwrap()[1].2,
            u32::MAX.to_be_bytes().to_vec()
        );
    }
}
