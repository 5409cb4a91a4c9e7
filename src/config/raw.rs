//! The config file exactly as written: serde structs that refuse unknown fields. Values that need
//! a line number in later validation errors are `Spanned`.

use super::guard::{RawGuard, RawLimits};
use super::units::{ConfDuration, ConfSize};
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub route: Vec<Spanned<RawRoute>>,
    pub guard: Option<Spanned<RawGuard>>,
    pub limits: Option<Spanned<RawLimits>>,
    pub redis: Option<Spanned<super::redis::RawRedis>>,
    pub cluster: Option<Spanned<RawCluster>>,
}

/// `[cluster]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub node_id: Option<String>,
    pub outage_grace: Option<super::units::ConfDuration>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub http: Option<Spanned<String>>,
    pub https: Option<Spanned<String>>,
    pub certdir: Option<Spanned<String>>,
    pub acme_webroot: Option<Spanned<String>>,
    pub shutdown_grace: Option<ConfDuration>,
    pub log_level: Option<Spanned<String>>,
    pub access_log: Option<bool>,
    pub default_cert: Option<Spanned<String>>,
    pub cert_rescan: Option<ConfDuration>,
    pub cert_watch: Option<bool>,
    pub admin: Option<Spanned<String>>,
    pub admin_token: Option<Spanned<String>>,
    pub log_format: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub host: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub upstream: Option<Spanned<String>>,
    pub rooms: Option<Spanned<super::rooms::RawRooms>>,
    pub push: Option<Spanned<toml::Value>>,
    pub strip_prefix: Option<bool>,
    pub plain_http: Option<bool>,
    pub preserve_host: Option<bool>,
    pub max_body: Option<Spanned<ConfSize>>,
    pub connect_timeout: Option<Spanned<ConfDuration>>,
    pub response_timeout: Option<Spanned<ConfDuration>>,
    pub body_timeout: Option<Spanned<ConfDuration>>,
    pub guard: Option<Spanned<RawGuard>>,
}
