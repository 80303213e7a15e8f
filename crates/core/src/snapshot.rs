//! The shared snapshot of SPEC §7: a tenant's critical data as of a stream
//! entry, kept in Redis (`{prefix}:{{tenant}}:snapshot`) so that one Wrapper
//! load serves a whole fleet. This file is its formats and their checks.
//!
//! ```text
//! smart-crm-snapshot 2\n
//! {"tenantId":"acme","position":"1700000000000-0","epoch":"…","createdAt":1700000000000,"dataBytes":1234,"sha256":"…"}\n
//! <hex HMAC-SHA256 with the first signing key of (header line + "\n" + data), or "-">\n
//! <data: the binary body below>
//! ```
//!
//! **Format 2** (written by every consumer from this release on; PROTOCOL.md
//! has it byte by byte) keeps format 1's three text lines and replaces the JSON rows by a
//! binary body made to be decoded in one pass straight into the store
//! ([`StoreBuilder`]): unsigned LEB128 varints (`u`), strings as `u` length +
//! UTF-8 bytes (`str`), then
//!
//! ```text
//! counts   u credits, u roles, u users, u configs
//! strings  u n, n × str                       distinct names: permissions, role ids in lists, statuses
//! lists    u n, n × (u k, k × u string)       distinct name lists: permission lists, users' role lists
//! shapes   u n, n × (u status string, u list) distinct (status, roles) pairs
//! credits  × (str id, f64 cost little-endian, u8 flags: 1 active | 2 has version, [u version])
//! roles    × (str id, u list << 1 | has version, [u version])
//! users    × (str id, u shape << 1 | has version, [u version])
//! configs  × (str id, str JSON text, u8 flags: 2 has version, [u version])
//! ```
//!
//! and nothing after. A million users of a few hundred shapes are a few bytes
//! each beyond their ids; each distinct list and shape is interned once.
//!
//! **Format 1** (`smart-crm-snapshot 1`, the Wrapper's JSON rows
//! `{"credits":[…],"roles":[…],"users":[…],"configs":[…]}` as data) is still
//! read, so a fleet can be upgraded one instance at a time; it is no longer
//! written ([`encode_v1`] is kept for the test vectors). A reader of format 1
//! only rejects a format 2 snapshot (`format`), counts it and loads from the
//! Wrapper.
//!
//! A reader checks, in order ([`verify`]): the size bound, the format line,
//! the header, the tenant, the size (`dataBytes` equals what follows), the
//! SHA-256 of the data, and with a signing secret the HMAC (any configured
//! key); only then is the data decoded ([`build`]), applying the row rules of
//! `CriticalStore::from_snapshot` (the one id rule, for `roles[]` too; finite,
//! non-negative costs; of a repeated id the later row wins). A body that lies
//! (a count larger than its bytes could hold, an index out of range, a
//! truncated varint, trailing bytes, a config that is not JSON) is
//! [`Rejected::Data`]; no input panics or allocates beyond its own size. Any
//! failure is one [`Rejected`] reason; the caller counts it and asks the
//! Wrapper.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::critical::{CriticalStore, StoreBuilder};
use crate::ids::check_row_id;
use crate::intern::{self, Access, Names};
use crate::model::Snapshot;
use crate::signature::{self, SigningKeys};
use crate::stream::StreamId;

/// The first line of every snapshot written now (format 2, binary body).
pub const FORMAT_LINE: &str = "smart-crm-snapshot 2";
/// The first line of format 1 (JSON rows), still read.
pub const FORMAT_LINE_V1: &str = "smart-crm-snapshot 1";

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
    /// The data does not decode as snapshot rows, or a row breaks a rule.
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

/// Which body a verified snapshot has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON rows.
    V1,
    /// The binary body.
    V2,
}

/// A snapshot whose framing, tenant, size, digest and signature passed.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Its header.
    pub header: Header,
    /// Its body's format.
    pub format: Format,
    /// Where the data starts in the bytes.
    data_start: usize,
}

/// Encodes `snap` as of `position` in `epoch`, format 2 (signed with the
/// first key when there are keys). Deterministic: the same rows give the same
/// bytes (the periodic refresh compares digests). CPU work proportional to
/// the data: run it off the async workers.
pub fn encode(
    tenant_id: &str,
    position: StreamId,
    epoch: &str,
    created_at: i64,
    snap: &Snapshot,
    keys: Option<&SigningKeys>,
) -> Vec<u8> {
    let data = body_v2(snap);
    frame(
        FORMAT_LINE,
        tenant_id,
        position,
        epoch,
        created_at,
        &data,
        keys,
    )
}

/// [`encode`] of a store's live entries (tombstones left out): the credits,
/// roles and configs sorted by id, the users in the table's order (a load's:
/// the Wrapper's). The same bytes as [`encode`] of those rows in that order.
/// Deterministic like [`encode`]; CPU work: off the async workers.
pub fn encode_store(
    tenant_id: &str,
    position: StreamId,
    epoch: &str,
    created_at: i64,
    store: &CriticalStore,
    keys: Option<&SigningKeys>,
) -> Vec<u8> {
    let data = body_v2_of_store(store);
    frame(
        FORMAT_LINE,
        tenant_id,
        position,
        epoch,
        created_at,
        &data,
        keys,
    )
}

/// [`encode`] in format 1 (JSON rows). No consumer writes it any more; kept
/// for the test vectors and the tests of older snapshots.
pub fn encode_v1(
    tenant_id: &str,
    position: StreamId,
    epoch: &str,
    created_at: i64,
    snap: &Snapshot,
    keys: Option<&SigningKeys>,
) -> Vec<u8> {
    let data = serde_json::to_vec(snap).unwrap_or_default();
    frame(
        FORMAT_LINE_V1,
        tenant_id,
        position,
        epoch,
        created_at,
        &data,
        keys,
    )
}

/// The three text lines, then `data`.
fn frame(
    format_line: &str,
    tenant_id: &str,
    position: StreamId,
    epoch: &str,
    created_at: i64,
    data: &[u8],
    keys: Option<&SigningKeys>,
) -> Vec<u8> {
    let header = Header {
        tenant_id: tenant_id.to_owned(),
        position: position.to_string(),
        epoch: epoch.to_owned(),
        created_at,
        data_bytes: data.len() as u64,
        sha256: hex::encode(Sha256::digest(data)),
    };
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let mac = match keys {
        Some(k) => signature::sign_bytes(&[&header, b"\n", data], k.primary()),
        None => "-".to_owned(),
    };
    let mut out = Vec::with_capacity(format_line.len() + header.len() + mac.len() + data.len() + 3);
    out.extend_from_slice(format_line.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&header);
    out.push(b'\n');
    out.extend_from_slice(mac.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(data);
    out
}

/// Splits off the next line.
fn line(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = b.iter().position(|&c| c == b'\n')?;
    Some((&b[..i], &b[i + 1..]))
}

/// Checks a snapshot of `tenant_id` of at most `max_bytes` (see the module
/// docs) up to its data, which is left undecoded. CPU work proportional to
/// the data (the digest, and the HMAC with keys).
pub fn verify(
    bytes: &[u8],
    tenant_id: &str,
    max_bytes: u64,
    keys: Option<&SigningKeys>,
) -> Result<Verified, Rejected> {
    if bytes.len() as u64 > max_bytes {
        return Err(Rejected::Size);
    }
    let (format, rest) = line(bytes).ok_or(Rejected::Format)?;
    let format = match format {
        f if f == FORMAT_LINE.as_bytes() => Format::V2,
        f if f == FORMAT_LINE_V1.as_bytes() => Format::V1,
        _ => return Err(Rejected::Format),
    };
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
    let digest = Sha256::digest(data);
    let mut declared = [0u8; 32];
    if hex::decode_to_slice(&header.sha256, &mut declared).is_err() || declared != digest[..] {
        return Err(Rejected::Digest);
    }
    if let Some(keys) = keys {
        let mac = std::str::from_utf8(mac).map_err(|_| Rejected::Signature)?;
        if !signature::verify_bytes_any(&[header_bytes, b"\n", data], keys, mac) {
            return Err(Rejected::Signature);
        }
    }
    Ok(Verified {
        header,
        format,
        data_start: bytes.len() - data.len(),
    })
}

/// Decodes the data of `bytes`, which [`verify`] passed as `v`, into a
/// store. CPU work proportional to the data: run it off the async workers.
pub fn build(bytes: &[u8], v: &Verified) -> Result<CriticalStore, Rejected> {
    let data = bytes.get(v.data_start..).ok_or(Rejected::Data)?;
    match v.format {
        Format::V1 => {
            let snap: Snapshot = serde_json::from_slice(data).map_err(|_| Rejected::Data)?;
            CriticalStore::from_snapshot(snap).map_err(|_| Rejected::Data)
        }
        Format::V2 => build_v2(data),
    }
}

/// [`verify`], then [`build`].
pub fn decode(
    bytes: &[u8],
    tenant_id: &str,
    max_bytes: u64,
    keys: Option<&SigningKeys>,
) -> Result<(Header, CriticalStore), Rejected> {
    let v = verify(bytes, tenant_id, max_bytes, keys)?;
    let store = build(bytes, &v)?;
    Ok((v.header, store))
}

// ---- format 2 body ---------------------------------------------------------

/// Flag of a credit: active.
const ACTIVE: u8 = 1;
/// Flag of a credit or config: a version follows.
const HAS_VERSION: u8 = 2;

/// Appends `v` as an unsigned LEB128 varint.
fn put_u(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a length-prefixed string.
fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Assigns indices to distinct values in order of first use.
struct Distinct<K> {
    index: HashMap<K, u32, foldhash::fast::FixedState>,
    order: Vec<K>,
}

impl<K: std::hash::Hash + Eq + Clone> Distinct<K> {
    fn new() -> Self {
        Distinct {
            index: HashMap::default(),
            order: Vec::new(),
        }
    }

    fn of(&mut self, k: K) -> u32 {
        if let Some(&i) = self.index.get(&k) {
            return i;
        }
        let i = self.order.len() as u32;
        self.index.insert(k.clone(), i);
        self.order.push(k);
        i
    }
}

/// The format 2 body of `snap`'s rows, in their order (see the module docs).
fn body_v2(snap: &Snapshot) -> Vec<u8> {
    let mut strs: Distinct<&str> = Distinct::new();
    let mut lists: Distinct<Vec<u32>> = Distinct::new();
    let mut shapes: Distinct<(u32, u32)> = Distinct::new();
    fn list_of<'a>(
        strs: &mut Distinct<&'a str>,
        lists: &mut Distinct<Vec<u32>>,
        items: &'a [String],
    ) -> u32 {
        let l: Vec<u32> = items.iter().map(|s| strs.of(s.as_str())).collect();
        lists.of(l)
    }
    // The tables come before the rows: a first pass finds each row's index.
    let role_lists: Vec<u32> = snap
        .roles
        .iter()
        .map(|r| list_of(&mut strs, &mut lists, &r.permissions))
        .collect();
    // Users repeat a few shapes: one lookup of (status, roles) per user.
    let mut seen: HashMap<(&str, &[String]), u32, foldhash::fast::FixedState> = HashMap::default();
    let mut user_shapes = Vec::with_capacity(snap.users.len());
    for u in &snap.users {
        let key = (u.status.as_str(), u.roles.as_slice());
        let shape = match seen.get(&key) {
            Some(&s) => s,
            None => {
                let list = list_of(&mut strs, &mut lists, &u.roles);
                let status = strs.of(u.status.as_str());
                let s = shapes.of((status, list));
                seen.insert(key, s);
                s
            }
        };
        user_shapes.push(shape);
    }
    let ids: usize = snap.users.iter().map(|u| u.user_id.len() + 4).sum();
    let mut out = Vec::with_capacity(ids + snap.credits.len() * 24 + 4096);
    for n in [
        snap.credits.len(),
        snap.roles.len(),
        snap.users.len(),
        snap.configs.len(),
    ] {
        put_u(&mut out, n as u64);
    }
    put_tables(&mut out, &strs, &lists, &shapes);
    for c in &snap.credits {
        put_credit(
            &mut out,
            &c.operation_code,
            c.credit_cost,
            c.is_active.unwrap_or(true),
            c.version,
        );
    }
    for (r, &list) in snap.roles.iter().zip(&role_lists) {
        put_indexed(&mut out, &r.role_id, list, r.version);
    }
    for (u, &shape) in snap.users.iter().zip(&user_shapes) {
        put_indexed(&mut out, &u.user_id, shape, u.version);
    }
    for c in &snap.configs {
        let json = serde_json::to_string(&c.config).unwrap_or_else(|_| "null".into());
        put_config(&mut out, &c.config_id, &json, c.version);
    }
    out
}

/// The format 2 body of a store (see [`encode_store`]): the same tables and
/// rows [`body_v2`] writes for the store's rows.
fn body_v2_of_store(store: &CriticalStore) -> Vec<u8> {
    let credits = store.credits_sorted();
    let roles = store.roles_sorted();
    let configs = store.configs_sorted();
    let users = store.users();
    let mut strs: Distinct<&str> = Distinct::new();
    let mut lists: Distinct<Vec<u32>> = Distinct::new();
    let mut shapes: Distinct<(u32, u32)> = Distinct::new();
    fn list_of<'a>(
        strs: &mut Distinct<&'a str>,
        lists: &mut Distinct<Vec<u32>>,
        items: &'a [intern::Name],
    ) -> u32 {
        let l: Vec<u32> = items.iter().map(|s| strs.of(s)).collect();
        lists.of(l)
    }
    let role_lists: Vec<u32> = roles
        .iter()
        .map(|(_, p, _)| list_of(&mut strs, &mut lists, p))
        .collect();
    // The table's shapes, numbered in order of first use by a live user.
    let table_shapes = users.shapes();
    let mut shape_out: Vec<Option<u32>> = vec![None; table_shapes.len()];
    let mut user_rows = Vec::with_capacity(users.live());
    let mut ids = 0usize;
    for (id, shape, version) in users.iter_indexed() {
        let slot = &mut shape_out[shape as usize];
        let s = match *slot {
            Some(s) => s,
            None => {
                let a = &table_shapes[shape as usize];
                let list = list_of(&mut strs, &mut lists, a.roles());
                let status = strs.of(a.status());
                let s = shapes.of((status, list));
                *slot = Some(s);
                s
            }
        };
        ids += id.len() + 4;
        user_rows.push((id, s, version));
    }
    let mut out = Vec::with_capacity(ids + credits.len() * 24 + 4096);
    for n in [credits.len(), roles.len(), user_rows.len(), configs.len()] {
        put_u(&mut out, n as u64);
    }
    put_tables(&mut out, &strs, &lists, &shapes);
    for (id, c, version) in &credits {
        put_credit(&mut out, id, c.cost, c.active, *version);
    }
    for ((id, _, version), &list) in roles.iter().zip(&role_lists) {
        put_indexed(&mut out, id, list, *version);
    }
    for (id, shape, version) in user_rows {
        put_indexed(&mut out, id, shape, version);
    }
    for (id, json, version) in &configs {
        put_config(&mut out, id, json, *version);
    }
    out
}

/// The strings, lists and shapes tables of a format 2 body.
fn put_tables(
    out: &mut Vec<u8>,
    strs: &Distinct<&str>,
    lists: &Distinct<Vec<u32>>,
    shapes: &Distinct<(u32, u32)>,
) {
    put_u(out, strs.order.len() as u64);
    for s in &strs.order {
        put_str(out, s);
    }
    put_u(out, lists.order.len() as u64);
    for l in &lists.order {
        put_u(out, l.len() as u64);
        for &i in l {
            put_u(out, u64::from(i));
        }
    }
    put_u(out, shapes.order.len() as u64);
    for &(status, list) in &shapes.order {
        put_u(out, u64::from(status));
        put_u(out, u64::from(list));
    }
}

/// One credit row of a format 2 body.
fn put_credit(out: &mut Vec<u8>, id: &str, cost: f64, active: bool, version: Option<u64>) {
    put_str(out, id);
    out.extend_from_slice(&cost.to_le_bytes());
    let active = if active { ACTIVE } else { 0 };
    let versioned = if version.is_some() { HAS_VERSION } else { 0 };
    out.push(active | versioned);
    if let Some(v) = version {
        put_u(out, v);
    }
}

/// One role or user row of a format 2 body: id, index and has-version bit.
fn put_indexed(out: &mut Vec<u8>, id: &str, index: u32, version: Option<u64>) {
    put_str(out, id);
    put_u(out, u64::from(index) << 1 | u64::from(version.is_some()));
    if let Some(v) = version {
        put_u(out, v);
    }
}

/// One config row of a format 2 body.
fn put_config(out: &mut Vec<u8>, id: &str, json: &str, version: Option<u64>) {
    put_str(out, id);
    put_str(out, json);
    out.push(if version.is_some() { HAS_VERSION } else { 0 });
    if let Some(v) = version {
        put_u(out, v);
    }
}

/// A bounds-checked reader of a format 2 body: every read is `None` past
/// the end.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.b.len() - self.at
    }

    fn byte(&mut self) -> Option<u8> {
        let c = *self.b.get(self.at)?;
        self.at += 1;
        Some(c)
    }

    /// An unsigned LEB128 varint of at most 10 bytes that fits in 64 bits.
    fn u(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let c = self.byte()?;
            let bits = u64::from(c & 0x7f);
            if shift == 63 && bits > 1 {
                return None;
            }
            v |= bits << shift;
            if c & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// A varint used as an index or a count.
    fn n(&mut self) -> Option<usize> {
        usize::try_from(self.u()?).ok()
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    fn str(&mut self) -> Option<&'a str> {
        let n = self.n()?;
        std::str::from_utf8(self.bytes(n)?).ok()
    }

    fn f64(&mut self) -> Option<f64> {
        let b: [u8; 8] = self.bytes(8)?.try_into().ok()?;
        Some(f64::from_le_bytes(b))
    }

    /// An index and a has-version bit, then the version if there is one.
    fn indexed(&mut self) -> Option<(usize, Option<u64>)> {
        let x = self.u()?;
        let version = if x & 1 == 1 { Some(self.u()?) } else { None };
        Some((usize::try_from(x >> 1).ok()?, version))
    }

    /// The version after a flags byte, if its flag says there is one.
    fn version_if(&mut self, flags: u8) -> Option<Option<u64>> {
        Some(if flags & HAS_VERSION != 0 {
            Some(self.u()?)
        } else {
            None
        })
    }
}

/// The fewest bytes a row of each table takes (credits, roles, users,
/// configs): a body whose counts need more bytes than it has is lying, and
/// no table is given room for more rows than its bytes can hold.
const MIN_ROW_BYTES: [usize; 4] = [11, 3, 3, 4];

/// Decodes a format 2 body (the data alone, after its checks) straight into
/// a store (module docs). Public for the fuzz target; [`build`] is the way in.
pub fn build_v2(data: &[u8]) -> Result<CriticalStore, Rejected> {
    decode_v2(data).ok_or(Rejected::Data)?
}

/// `None`: the body is malformed; `Some(Err)`: a row breaks a rule.
fn decode_v2(data: &[u8]) -> Option<Result<CriticalStore, Rejected>> {
    let mut r = Reader { b: data, at: 0 };
    let mut counts = [0usize; 4];
    for c in &mut counts {
        *c = r.n()?;
    }
    let mut need = 0usize;
    for (c, min) in counts.iter().zip(MIN_ROW_BYTES) {
        need = need.checked_add(c.checked_mul(min)?)?;
    }
    if need > r.left() {
        return None;
    }
    let n = r.n()?;
    let mut strings: Vec<&str> = Vec::with_capacity(n.min(r.left()));
    for _ in 0..n {
        strings.push(r.str()?);
    }
    let mut local = intern::Local::default();
    let n = r.n()?;
    let mut lists: Vec<(Names, Vec<&str>)> = Vec::with_capacity(n.min(r.left()));
    for _ in 0..n {
        let k = r.n()?;
        let mut items = Vec::with_capacity(k.min(r.left()));
        for _ in 0..k {
            items.push(*strings.get(r.n()?)?);
        }
        lists.push((local.names(&items), items));
    }
    let n = r.n()?;
    let mut shapes: Vec<Access> = Vec::with_capacity(n.min(r.left()));
    for i in 0..n {
        let status = *strings.get(r.n()?)?;
        let (roles, items) = lists.get(r.n()?)?;
        // A user's role ids follow the id rule: checked once per shape.
        for role in items {
            if check_row_id("/api/users/access", "roles[]", i, role).is_err() {
                return Some(Err(Rejected::Data));
            }
        }
        shapes.push(Access::with_roles(status, roles.clone()));
    }
    let mut b = StoreBuilder::with_capacity(counts);
    for _ in 0..counts[0] {
        let id = r.str()?;
        let cost = r.f64()?;
        let flags = r.byte()?;
        if flags & !(ACTIVE | HAS_VERSION) != 0 {
            return None;
        }
        let version = r.version_if(flags)?;
        if b.push_credit(id, cost, flags & ACTIVE != 0, version)
            .is_err()
        {
            return Some(Err(Rejected::Data));
        }
    }
    for _ in 0..counts[1] {
        let id = r.str()?;
        let (list, version) = r.indexed()?;
        let perms = lists.get(list)?.0.clone();
        if b.push_role(id, perms, version).is_err() {
            return Some(Err(Rejected::Data));
        }
    }
    for _ in 0..counts[2] {
        let id = r.str()?;
        let (shape, version) = r.indexed()?;
        let access = shapes.get(shape)?.clone();
        if b.push_user(id, access, version).is_err() {
            return Some(Err(Rejected::Data));
        }
    }
    for _ in 0..counts[3] {
        let id = r.str()?;
        let json = r.str()?;
        serde_json::from_str::<serde::de::IgnoredAny>(json).ok()?;
        let flags = r.byte()?;
        if flags & !HAS_VERSION != 0 {
            return None;
        }
        let version = r.version_if(flags)?;
        if b.push_config(id, json.to_owned(), version).is_err() {
            return Some(Err(Rejected::Data));
        }
    }
    if r.left() != 0 {
        return None;
    }
    Some(Ok(b.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::Delta;
    use crate::model::{ConfigRow, CreditRow, RoleRow, UserRow};
    use crate::protocol::{Change, Event, Rejection};
    use crate::secret::Secret;

    fn snap() -> Snapshot {
        Snapshot {
            credits: vec![
                CreditRow {
                    operation_code: "op".into(),
                    credit_cost: 2.5,
                    is_active: Some(true),
                    version: Some(3),
                },
                CreditRow {
                    operation_code: "off".into(),
                    credit_cost: 0.0,
                    is_active: Some(false),
                    version: None,
                },
            ],
            roles: vec![
                RoleRow {
                    role_id: "sales".into(),
                    permissions: vec!["crm.leads.*".into(), "crm.read".into()],
                    version: Some(u64::MAX),
                },
                RoleRow {
                    role_id: "ops".into(),
                    permissions: vec![],
                    version: None,
                },
            ],
            users: (0..50)
                .map(|i| UserRow {
                    user_id: format!("u-{i}"),
                    status: if i % 7 == 0 { "suspended" } else { "active" }.into(),
                    roles: if i % 2 == 0 {
                        vec!["sales".into()]
                    } else {
                        vec!["sales".into(), "ops".into()]
                    },
                    version: (i % 3 != 0).then_some(i * 1000),
                })
                .collect(),
            configs: vec![ConfigRow {
                config_id: "c".into(),
                config: serde_json::json!({"n": [1, 2.5], "s": "x"}),
                version: Some(4),
            }],
            unchanged: [false; 4],
        }
    }

    /// The live rows of a store, sorted by id, as JSON (for equality).
    fn rows_json(s: &CriticalStore) -> serde_json::Value {
        let mut r = s.rows();
        r.credits
            .sort_by(|a, b| a.operation_code.cmp(&b.operation_code));
        r.roles.sort_by(|a, b| a.role_id.cmp(&b.role_id));
        r.users.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        r.configs.sort_by(|a, b| a.config_id.cmp(&b.config_id));
        serde_json::to_value(&r).unwrap()
    }

    const POS: StreamId = StreamId { ms: 7, seq: 1 };

    fn keys(s: &str) -> Option<SigningKeys> {
        SigningKeys::single(Secret::new(String::from(s)))
    }

    /// The body of a format 2 snapshot.
    fn data_of(b: &[u8]) -> &[u8] {
        let v = verify(b, "acme", u64::MAX, None).unwrap();
        &b[v.data_start..]
    }

    /// A format 2 snapshot around `data`, its digest and size right.
    fn framed(data: &[u8]) -> Vec<u8> {
        frame(FORMAT_LINE, "acme", POS, "ep", 1, data, None)
    }

    #[test]
    fn a_store_encodes_to_the_bytes_of_its_rows() {
        // rows sorted by id in the small tables, users in their order
        let mut rows = snap();
        rows.credits
            .sort_by(|a, b| a.operation_code.cmp(&b.operation_code));
        rows.roles.sort_by(|a, b| a.role_id.cmp(&b.role_id));
        let mut store = CriticalStore::from_snapshot(rows.clone()).unwrap();
        let keys = keys("k1");
        assert_eq!(
            encode_store("acme", POS, "ep", 1, &store, keys.as_ref()),
            encode("acme", POS, "ep", 1, &rows, keys.as_ref())
        );
        // a deleted user is left out, as from the rows
        let mut d = Delta::default();
        let del = Event {
            event_id: None,
            event_type: "x",
            version: None,
            change: Change::UserDeleted {
                user_id: "u-3".into(),
            },
        };
        store.apply(&del, &mut d).unwrap();
        rows.users.retain(|u| u.user_id != "u-3");
        let b = encode_store("acme", POS, "ep", 1, &store, None);
        assert_eq!(b, encode("acme", POS, "ep", 1, &rows, None));
        let (_, back) = decode(&b, "acme", 1 << 20, None).unwrap();
        assert_eq!(rows_json(&back), rows_json(&store));
    }

    #[test]
    fn format_2_round_trip_store_to_bytes_to_store() {
        let mut store = CriticalStore::from_snapshot(snap()).unwrap();
        // a tombstone is not carried, a version is
        let mut d = Delta::default();
        let del = Event {
            event_id: None,
            event_type: "x",
            version: Some(9),
            change: Change::CreditDelete {
                operation_code: "off".into(),
            },
        };
        store.apply(&del, &mut d).unwrap();
        let b = encode("acme", POS, "ep", 1, &store.rows(), None);
        assert!(b.starts_with(b"smart-crm-snapshot 2\n"));
        let (h, back) = decode(&b, "acme", 1 << 20, None).unwrap();
        assert_eq!(h.position, "7-1");
        assert_eq!(rows_json(&back), rows_json(&store));
        assert_eq!(back.sizes(), [1, 2, 50, 1]);
        assert_eq!(back.credit_cost("off"), None);
        assert_eq!(back.credit_cost("op"), Some(2.5));
        assert_eq!(back.config_json("c"), store.config_json("c"));
        assert_eq!(
            back.user_access("u-7"),
            Some(&Access::new("suspended", &["sales", "ops"]))
        );
        // versions came along: an event not newer is stale
        let mut back = back;
        let stale = Event {
            event_id: None,
            event_type: "x",
            version: Some(3),
            change: Change::CreditSet {
                operation_code: "op".into(),
                cost: 1.0,
                is_active: None,
            },
        };
        assert_eq!(back.apply(&stale, &mut d), Err(Rejection::Stale));
        // the tombstone did not: any version applies
        let mut revive = stale.clone();
        revive.change = Change::CreditSet {
            operation_code: "off".into(),
            cost: 1.0,
            is_active: None,
        };
        revive.version = Some(1);
        back.apply(&revive, &mut d).unwrap();
        // deterministic: the same rows give the same bytes
        assert_eq!(b, encode("acme", POS, "ep", 1, &store.rows(), None));
        // users share one interned shape per distinct (status, roles)
        let a = back.user_access("u-1").unwrap();
        let c = back.user_access("u-3").unwrap();
        assert_eq!(a, c);
    }

    #[test]
    fn format_2_is_smaller_than_format_1() {
        let s = snap();
        let v2 = encode("acme", POS, "ep", 1, &s, None);
        let v1 = encode_v1("acme", POS, "ep", 1, &s, None);
        assert!(v2.len() * 2 < v1.len(), "{} vs {}", v2.len(), v1.len());
    }

    #[test]
    fn every_check_of_both_formats() {
        let k = keys("s3cret");
        for enc in [encode, encode_v1] {
            let b = enc("acme", POS, "ep", 1, &snap(), k.as_ref());
            let (h, s) = decode(&b, "acme", 1 << 20, k.as_ref()).unwrap();
            assert_eq!(h.position, "7-1");
            assert_eq!(s.credit_cost("op"), Some(2.5));
            assert_eq!(s.sizes(), [2, 2, 50, 1]);
            // Without a secret, a signed snapshot is accepted (its digest still checked).
            assert!(decode(&b, "acme", 1 << 20, None).is_ok());
            let err = |b: &[u8], t: &str, max: u64, k: Option<&SigningKeys>| {
                decode(b, t, max, k).err().unwrap()
            };
            assert_eq!(err(&b, "other", 1 << 20, k.as_ref()), Rejected::Tenant);
            assert_eq!(err(&b, "acme", 10, k.as_ref()), Rejected::Size);
            let other = keys("other");
            assert_eq!(
                err(&b, "acme", 1 << 20, other.as_ref()),
                Rejected::Signature
            );
            let unsigned = enc("acme", POS, "ep", 1, &snap(), None);
            assert_eq!(
                err(&unsigned, "acme", 1 << 20, k.as_ref()),
                Rejected::Signature
            );
            let mut tampered = b.clone();
            let n = tampered.len();
            tampered[n - 5] ^= 0x01;
            assert_eq!(err(&tampered, "acme", 1 << 20, None), Rejected::Digest);
            let mut wrong = b.clone();
            wrong[19] = b'9';
            assert_eq!(err(&wrong, "acme", 1 << 20, None), Rejected::Format);
            let mut longer = b.clone();
            longer.push(0);
            assert_eq!(err(&longer, "acme", 1 << 20, None), Rejected::Size);
            assert_eq!(err(b"{}", "acme", 1 << 20, None), Rejected::Format);
        }
    }

    /// A format 2 body by hand: counts, strings, lists, shapes, then `rows`.
    fn body(counts: [u64; 4], tables: &[u8], rows: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in counts {
            put_u(&mut out, c);
        }
        out.extend_from_slice(tables);
        out.extend_from_slice(rows);
        out
    }

    /// One string "r", one list [0], one shape (status 0, list 0).
    const TABLES: &[u8] = &[1, 1, b'r', 1, 1, 0, 1, 0, 0];

    #[test]
    fn a_body_that_lies_is_rejected_as_data() {
        let ok = body([0, 0, 1, 0], TABLES, &[1, b'u', 0]);
        let (_, s) = decode(&framed(&ok), "acme", 1 << 20, None).unwrap();
        assert_eq!(s.user_access("u"), Some(&Access::new("r", &["r"])));
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "shape index out of range",
                body([0, 0, 1, 0], TABLES, &[1, b'u', 2]),
            ),
            (
                "list index out of range",
                body([0, 1, 0, 0], TABLES, &[1, b'r', 2]),
            ),
            (
                "string index out of range",
                body([0, 0, 0, 0], &[0, 1, 1, 5, 0], &[]),
            ),
            (
                "truncated varint",
                body([0, 0, 1, 0], TABLES, &[1, b'u', 0x80]),
            ),
            (
                "varint past 64 bits",
                body(
                    [0, 0, 1, 0],
                    TABLES,
                    &[
                        1, b'u', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
                    ],
                ),
            ),
            (
                "string longer than the body",
                body([0, 0, 1, 0], TABLES, &[9, b'u', 0]),
            ),
            (
                "count larger than the body",
                body([0, 0, 1_000_000, 0], TABLES, &[1, b'u', 0]),
            ),
            ("huge count", body([u64::MAX, 0, 0, 0], TABLES, &[])),
            (
                "trailing bytes",
                body([0, 0, 1, 0], TABLES, &[1, b'u', 0, 0]),
            ),
            ("invalid UTF-8", body([0, 0, 1, 0], TABLES, &[1, 0xff, 0])),
            (
                "id against the id rule",
                body([0, 0, 1, 0], TABLES, &[1, b'\n', 0]),
            ),
            ("empty id", body([0, 0, 1, 0], TABLES, &[0, 0])),
            (
                "role id against the id rule",
                body([0, 0, 1, 0], &[1, 1, 0x07, 1, 1, 0, 1, 0, 0], &[1, b'u', 0]),
            ),
            (
                "negative cost",
                body(
                    [1, 0, 0, 0],
                    &[0, 0, 0],
                    &[[1, b'o'].as_slice(), &(-1.0f64).to_le_bytes(), &[1]].concat(),
                ),
            ),
            (
                "cost not finite",
                body(
                    [1, 0, 0, 0],
                    &[0, 0, 0],
                    &[[1, b'o'].as_slice(), &f64::NAN.to_le_bytes(), &[1]].concat(),
                ),
            ),
            (
                "unknown credit flag",
                body(
                    [1, 0, 0, 0],
                    &[0, 0, 0],
                    &[[1, b'o'].as_slice(), &1.0f64.to_le_bytes(), &[4]].concat(),
                ),
            ),
            (
                "config not JSON",
                body([0, 0, 0, 1], &[0, 0, 0], &[1, b'c', 1, b'{', 0]),
            ),
        ];
        for (name, data) in cases {
            assert_eq!(
                decode(&framed(&data), "acme", 1 << 20, None).err(),
                Some(Rejected::Data),
                "{name}"
            );
        }
        // a repeated id: the later row wins, counted once
        let twice = body([0, 0, 2, 0], TABLES, &[1, b'u', 0, 1, b'u', 1, 5]);
        let (_, s) = decode(&framed(&twice), "acme", 1 << 20, None).unwrap();
        assert_eq!(s.sizes(), [0, 0, 1, 0]);
    }

    #[test]
    fn truncated_and_mutated_bodies_never_panic() {
        let b = encode("acme", POS, "ep", 1, &snap(), None);
        let data = data_of(&b).to_vec();
        assert!(build_v2(&data).is_ok());
        for n in 0..data.len() {
            assert!(build_v2(&data[..n]).is_err(), "truncated at {n}");
        }
        // every single-byte mutation, and some random multi-byte ones
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for i in 0..data.len() {
            for x in [0x00u8, 0x01, 0x7f, 0x80, 0xff] {
                let mut m = data.clone();
                m[i] = x;
                let _ = build_v2(&m);
            }
        }
        for _ in 0..20_000 {
            let mut m = data.clone();
            for _ in 0..1 + next() % 4 {
                let i = (next() as usize) % m.len();
                m[i] = next() as u8;
            }
            if next() % 3 == 0 {
                let cut = (next() as usize) % m.len();
                m.truncate(cut);
            }
            let _ = build_v2(&m);
        }
        for _ in 0..2_000 {
            let len = (next() % 64) as usize;
            let m: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = build_v2(&m);
        }
    }
}
