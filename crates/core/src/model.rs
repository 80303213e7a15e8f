//! The domain model: the critical entities as the store keeps them, and the
//! rows of a snapshot as the Wrapper sends them (SPEC §4).
//!
//! Plain data, no behaviour beyond deserialisation, so the store, the replica
//! batches and the Wrapper client can share it without importing each other;
//! it imports only the leaf `intern` (the store's shared values).

use serde::{Deserialize, Serialize};

/// One credit configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Credit {
    /// Cost of one operation; finite and non-negative.
    pub cost: f64,
    /// Inactive operations read as "not configured".
    pub active: bool,
}

/// A user's access: status and role ids, one shared shape (intern.rs).
pub use crate::intern::Access;

/// Snapshot row of `GET /api/credits/configs`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreditRow {
    /// Operation code.
    pub operation_code: String,
    /// Cost.
    pub credit_cost: f64,
    /// Defaults to active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_active: Option<bool>,
    /// Optional version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// Snapshot row of `GET /api/roles`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleRow {
    /// Role id.
    pub role_id: String,
    /// Permission patterns.
    pub permissions: Vec<String>,
    /// Optional version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// Snapshot row of `GET /api/users/access`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRow {
    /// User id.
    pub user_id: String,
    /// Status.
    pub status: String,
    /// Role ids.
    pub roles: Vec<String>,
    /// Optional version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// Snapshot row of `GET /api/configs/active`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigRow {
    /// Config id.
    pub config_id: String,
    /// Any JSON value (a missing member reads as `null`).
    #[serde(default)]
    pub config: serde_json::Value,
    /// Optional version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// A full critical snapshot as loaded from the Wrapper (or from the shared
/// snapshot in Redis, which keeps the same rows).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Snapshot {
    /// Credit configs.
    pub credits: Vec<CreditRow>,
    /// Roles.
    pub roles: Vec<RoleRow>,
    /// User access rows.
    pub users: Vec<UserRow>,
    /// Active configs.
    pub configs: Vec<ConfigRow>,
    /// Lists the Wrapper answered 304 to (credits, roles, users, configs):
    /// their rows are absent and the store keeps its table (conditional loads,
    /// SPEC §4). Never stored in a shared snapshot.
    #[serde(skip)]
    pub unchanged: [bool; 4],
}

/// A credit row parsed from a Wrapper page without copying its strings
/// (a full load's page-by-page build, critical.rs).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreditRowRef<'a> {
    /// Operation code.
    #[serde(borrow)]
    pub operation_code: std::borrow::Cow<'a, str>,
    /// Cost.
    pub credit_cost: f64,
    /// Defaults to active.
    #[serde(default)]
    pub is_active: Option<bool>,
    /// Optional version.
    #[serde(default)]
    pub version: Option<u64>,
}

/// A role row, borrowed (see [`CreditRowRef`]).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleRowRef<'a> {
    /// Role id.
    #[serde(borrow)]
    pub role_id: std::borrow::Cow<'a, str>,
    /// Permission patterns.
    #[serde(borrow)]
    pub permissions: Vec<std::borrow::Cow<'a, str>>,
    /// Optional version.
    #[serde(default)]
    pub version: Option<u64>,
}

/// A user row, borrowed (see [`CreditRowRef`]).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRowRef<'a> {
    /// User id.
    #[serde(borrow)]
    pub user_id: std::borrow::Cow<'a, str>,
    /// Status.
    #[serde(borrow)]
    pub status: std::borrow::Cow<'a, str>,
    /// Role ids.
    #[serde(borrow)]
    pub roles: Vec<std::borrow::Cow<'a, str>>,
    /// Optional version.
    #[serde(default)]
    pub version: Option<u64>,
}
