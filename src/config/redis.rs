//! `[redis]`: the one Redis every feature that needs one uses (push now, rooms across nodes
//! next). One primary (Sentinel-managed or not); Redis Cluster is out of scope.

use super::units::ConfDuration;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    pub url: Option<String>,
    pub key_prefix: Option<String>,
    pub connect_timeout: Option<ConfDuration>,
    pub push_channel: Option<String>,
    pub auth_channel: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` (or `unix:///path`).
    pub url: String,
    /// Prepended to every key wsedge writes (default `wsedge:`).
    pub key_prefix: String,
    /// Connecting and each command (default 5 s).
    pub connect_timeout: Duration,
    /// The websocket-push channels (exact names of the original: `BackgroundPush`, `AuthEvent`).
    pub push_channel: String,
    pub auth_channel: String,
}

/// Check `[redis]`; the first problem as (field, reason).
pub fn validate(r: &RawRedis) -> Result<RedisConfig, (String, String)> {
    let url = r.url.clone().ok_or((
        "url".to_string(),
        "required: where Redis listens, e.g. \"redis://127.0.0.1:6379\"".to_string(),
    ))?;
    if url.starts_with("rediss://") {
        return Err((
            "url".into(),
            "TLS to Redis (rediss://) is not built in this version; reach Redis over a private network or a local stunnel".into(),
        ));
    }
    if !(url.starts_with("redis://") || url.starts_with("unix://")) || url.len() <= 8 {
        return Err((
            "url".into(),
            format!("{url:?} is not a redis:// or unix:// URL"),
        ));
    }
    let connect_timeout = r.connect_timeout.map_or(Duration::from_secs(5), |d| d.0);
    if connect_timeout.is_zero() {
        return Err(("connect_timeout".into(), "must be greater than 0".into()));
    }
    let channel = |field: &str, v: &Option<String>, default: &str| match v {
        Some(c) if c.is_empty() => Err((field.to_string(), "must not be empty".to_string())),
        Some(c) => Ok(c.clone()),
        None => Ok(default.to_string()),
    };
    Ok(RedisConfig {
        url,
        key_prefix: r.key_prefix.clone().unwrap_or_else(|| "wsedge:".into()),
        connect_timeout,
        push_channel: channel("push_channel", &r.push_channel, "BackgroundPush")?,
        auth_channel: channel("auth_channel", &r.auth_channel, "AuthEvent")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_refusals() {
        let ok = validate(&RawRedis {
            url: Some("redis://127.0.0.1:6379".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ok.key_prefix, "wsedge:");
        assert_eq!(
            (ok.push_channel.as_str(), ok.auth_channel.as_str()),
            ("BackgroundPush", "AuthEvent")
        );
        assert_eq!(ok.connect_timeout, Duration::from_secs(5));
        for (url, field) in [
            (None, "url"),
            (Some("http://x"), "url"),
            (Some("rediss://x:1"), "url"),
        ] {
            let e = validate(&RawRedis {
                url: url.map(String::from),
                ..Default::default()
            })
            .unwrap_err();
            assert_eq!(e.0, field, "{url:?}");
        }
    }
}
