//! The shared snapshot of SPEC §7: a tenant's critical data as of a stream
//! entry, kept in Redis (`{prefix}:{{tenant}}:snapshot`) so that one Wrapper
//! load serves a whole fleet. This file is its format and its checks.
//!
//! ```text
//! smart-crm-snapshot 1\n
//! {"tenantId":"acme","position":"1700000000000-0","epoch":"…","createdAt":1700000000000,"dataBytes":1234,"sha256":"…"}\n
//! <hex HMAC-SHA256 with the first signing key of (header line + "\n" + data), or "-">\n
//! {"credits":[…],"roles":[…],"users":[…],"configs":[…]}
//! ```
//!
//! The data rows are the Wrapper's own (SPEC §4). A reader checks, in order:
//! the format line, the header, the tenant, the size (`dataBytes` equals what
//! follows, and the whole is within the load bound), the SHA-256 of the data,
//! and with a signing secret the HMAC (any configured key); only then is the
//! data parsed. Any failure is one [`Rejected`] reason; the caller counts it
//! and asks the Wrapper.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::Snapshot;
use crate::signature::{self, SigningKeys};
use crate::stream::StreamId;

/// The first line of every snapshot of this format.
pub const FORMAT_LINE: &str = "smart-crm-snapshot 1";

/// The header line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    /// Whose data it is.
    pub tenant_id: String,
    /// The stream entry the data is as of (`0-0`: the stream was empty).
    pub position: String,
    /// The epoch of Redis's data when it was written.
    pub epoch: String,
    /// Epoch ms at which it was written.
    pub created_at: i64,
    /// Bytes of the data part.
    pub data_bytes: u64,
    /// Hex SHA-256 of the data part.
    pub sha256: String,
}

/// Why a snapshot read from Redis was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Not this format (or another version of it).
    Format,
    /// The header is not valid JSON of the expected shape.
    Header,
    /// Another tenant's.
    Tenant,
    /// Larger than the bound, or not the size it declares.
    Size,
    /// The data does not match its SHA-256 (truncated or altered).
    Digest,
    /// With a signing secret: no valid HMAC.
    Signature,
    /// The data does not parse as snapshot rows.
    Data,
}

impl Rejected {
    /// The name used in logs.
    pub fn name(self) -> &'static str {
        match self {
            Rejected::Format => "format",
            Rejected::Header => "header",
            Rejected::Tenant => "tenant",
            Rejected::Size => "size",
            Rejected::Digest => "digest",
            Rejected::Signature => "signature",
            Rejected::Data => "data",
        }
    }
}

/// Encodes `snap` as of `position` in `epoch` (signed with the first key
/// when there are keys). CPU work proportional to the data: run it off the
/// async workers.
pub fn encode(
    tenant_id: &str,
    position: StreamId,
    epoch: &str,
    created_at: i64,
    snap: &Snapshot,
    keys: Option<&SigningKeys>,
) -> Vec<u8> {
    let data = serde_json::to_vec(snap).unwrap_or_default();
    let header = Header {
        tenant_id: tenant_id.to_owned(),
        position: position.to_string(),
        epoch: epoch.to_owned(),
        created_at,
        data_bytes: data.len() as u64,
        sha256: hex::encode(Sha256::digest(&data)),
    };
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let mac = match keys {
        Some(k) => signature::sign_bytes(&[&header, b"\n", &data], k.primary()),
        None => "-".to_owned(),
    };
    let mut out = Vec::with_capacity(FORMAT_LINE.len() + header.len() + mac.len() + data.len() + 3);
    out.extend_from_slice(FORMAT_LINE.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&header);
    out.push(b'\n');
    out.extend_from_slice(mac.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&data);
    out
}

/// Splits off the next line.
fn line(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = b.iter().position(|&c| c == b'\n')?;
    Some((&b[..i], &b[i + 1..]))
}

/// Checks and decodes a snapshot of `tenant_id` of at most `max_bytes` (see
/// the module docs). CPU work proportional to the data.
pub fn decode(
    bytes: &[u8],
    tenant_id: &str,
    max_bytes: u64,
    keys: Option<&SigningKeys>,
) -> Result<(Header, Snapshot), Rejected> {
    if bytes.len() as u64 > max_bytes {
        return Err(Rejected::Size);
    }
    let (format, rest) = line(bytes).ok_or(Rejected::Format)?;
    if format != FORMAT_LINE.as_bytes() {
        return Err(Rejected::Format);
    }
    let (header_bytes, rest) = line(rest).ok_or(Rejected::Header)?;
    let header: Header = serde_json::from_slice(header_bytes).map_err(|_| Rejected::Header)?;
    if header.tenant_id != tenant_id {
        return Err(Rejected::Tenant);
    }
    if StreamId::parse(&header.position).is_none() {
        return Err(Rejected::Header);
    }
    let (mac, data) = line(rest).ok_or(Rejected::Header)?;
    if data.len() as u64 != header.data_bytes {
        return Err(Rejected::Size);
    }
    if hex::encode(Sha256::digest(data)) != header.sha256 {
        return Err(Rejected::Digest);
    }
    if let Some(keys) = keys {
        let mac = std::str::from_utf8(mac).map_err(|_| Rejected::Signature)?;
        if !signature::verify_bytes_any(&[header_bytes, b"\n", data], keys, mac) {
            return Err(Rejected::Signature);
        }
    }
    let snap: Snapshot = serde_json::from_slice(data).map_err(|_| Rejected::Data)?;
    Ok((header, snap))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CreditRow;
    use crate::secret::Secret;

    fn snap() -> Snapshot {
        Snapshot {
            credits: vec![CreditRow {
                operation_code: "op".into(),
                credit_cost: 2.5,
                is_active: Some(true),
                version: Some(3),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn round_trip_and_every_check() {
        let keys = SigningKeys::single(Secret::new(String::from("s3cret")));
        let pos = StreamId { ms: 7, seq: 1 };
        let b = encode("acme", pos, "ep", 1, &snap(), keys.as_ref());
        let (h, s) = decode(&b, "acme", 1 << 20, keys.as_ref()).unwrap();
        assert_eq!(h.position, "7-1");
        assert_eq!(s.credits[0].credit_cost, 2.5);
        // Without a secret, a signed snapshot is accepted (its digest still checked).
        assert!(decode(&b, "acme", 1 << 20, None).is_ok());
        assert_eq!(
            decode(&b, "other", 1 << 20, keys.as_ref()).unwrap_err(),
            Rejected::Tenant
        );
        assert_eq!(
            decode(&b, "acme", 10, keys.as_ref()).unwrap_err(),
            Rejected::Size
        );
        let other = SigningKeys::single(Secret::new(String::from("other")));
        assert_eq!(
            decode(&b, "acme", 1 << 20, other.as_ref()).unwrap_err(),
            Rejected::Signature
        );
        let unsigned = encode("acme", pos, "ep", 1, &snap(), None);
        assert_eq!(
            decode(&unsigned, "acme", 1 << 20, keys.as_ref()).unwrap_err(),
            Rejected::Signature
        );
        let mut tampered = b.clone();
        let n = tampered.len();
        tampered[n - 5] = b'9';
        assert_eq!(
            decode(&tampered, "acme", 1 << 20, None).unwrap_err(),
            Rejected::Digest
        );
        let mut wrong = b.clone();
        wrong[19] = b'2';
        assert_eq!(
            decode(&wrong, "acme", 1 << 20, None).unwrap_err(),
            Rejected::Format
        );
        assert_eq!(
            decode(b"{}", "acme", 1 << 20, None).unwrap_err(),
            Rejected::Format
        );
    }
}
