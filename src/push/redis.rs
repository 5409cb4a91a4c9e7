//! Push over Redis PubSub, as the original service: one subscriber connection per node on the
//! `BackgroundPush` and `AuthEvent` channels (names from `[redis]`), every message delivered to
//! this node's push routes; and a publisher for the admin endpoint, so a push published on any
//! node reaches every node. A lost connection is retried with backoff (100 ms doubling to 5 s)
//! for as long as wsedge runs, and resubscribed; messages published meanwhile are lost, as with
//! the original (PubSub keeps nothing).

use crate::config::redis::RedisConfig;
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

/// What a message on one of the channels is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Push,
    Auth,
}

/// This node's link to Redis for push.
pub struct Link {
    client: redis::Client,
    pub config: RedisConfig,
    /// The subscriber is connected and subscribed.
    pub connected: AtomicBool,
    /// Times the subscriber (re)subscribed.
    pub subscriptions: AtomicU64,
    publisher: OnceCell<redis::aio::ConnectionManager>,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis: no answer within {0:?}")]
    Timeout(Duration),
}

impl Link {
    pub fn new(config: RedisConfig) -> Result<Arc<Link>, LinkError> {
        Ok(Arc::new(Link {
            client: redis::Client::open(config.url.as_str())?,
            config,
            connected: AtomicBool::new(false),
            subscriptions: AtomicU64::new(0),
            publisher: OnceCell::new(),
        }))
    }

    /// Publish `message` on the channel (the admin endpoint, with `[redis]`): how many
    /// subscribers (nodes) Redis says received it.
    pub async fn publish(&self, channel: Channel, message: &[u8]) -> Result<u64, LinkError> {
        let t = self.config.connect_timeout;
        let conn = tokio::time::timeout(
            t,
            self.publisher.get_or_try_init(|| {
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(t))
                    .set_response_timeout(Some(t));
                redis::aio::ConnectionManager::new_with_config(self.client.clone(), cfg)
            }),
        )
        .await
        .map_err(|_| LinkError::Timeout(t))??;
        let mut conn = conn.clone();
        let name = self.name(channel);
        let n: u64 = redis::cmd("PUBLISH")
            .arg(name)
            .arg(message)
            .query_async(&mut conn)
            .await?;
        Ok(n)
    }

    fn name(&self, channel: Channel) -> &str {
        match channel {
            Channel::Push => &self.config.push_channel,
            Channel::Auth => &self.config.auth_channel,
        }
    }

    /// Subscribe and hand every message to `deliver` until shutdown, reconnecting as needed.
    pub async fn subscribe(
        self: Arc<Self>,
        deliver: impl Fn(Channel, &[u8]) + Send + Sync + 'static,
        shutdown: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let session = async {
                let t = self.config.connect_timeout;
                let mut pubsub = tokio::time::timeout(t, self.client.get_async_pubsub())
                    .await
                    .map_err(|_| LinkError::Timeout(t))??;
                pubsub.subscribe(&self.config.push_channel).await?;
                pubsub.subscribe(&self.config.auth_channel).await?;
                self.connected.store(true, Ordering::Relaxed);
                self.subscriptions.fetch_add(1, Ordering::Relaxed);
                tracing::info!(url = %redacted(&self.config.url), "push: subscribed to Redis");
                let mut messages = pubsub.into_on_message();
                while let Some(m) = messages.next().await {
                    let channel = if m.get_channel_name() == self.config.push_channel {
                        Channel::Push
                    } else {
                        Channel::Auth
                    };
                    deliver(channel, m.get_payload_bytes());
                }
                Ok::<(), LinkError>(())
            };
            let ended = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = session => r,
            };
            let was = self.connected.swap(false, Ordering::Relaxed);
            if was {
                backoff = Duration::from_millis(100);
            }
            match ended {
                Ok(()) => tracing::warn!("push: Redis subscription ended; reconnecting"),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "push: Redis unreachable")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// The URL without its password, for logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}
