//! The lookup engine every front end shares: cache first, then the API, with events for
//! whoever is watching.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::client::{Client, FetchError, RetryNotice};
use crate::id::UserId;
use crate::record::Record;

/// What happens during one lookup, in order. The outcome itself is the return value.
#[derive(Debug, Clone)]
pub enum Event {
    Started,
    Retrying(RetryNotice),
}

/// Where a found record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cache,
    Api,
}

#[derive(Debug, Clone)]
pub struct Found {
    pub record: Record,
    pub source: Source,
    /// Attempts made against the API (0 for a cache hit).
    pub attempts: u32,
    pub latency: Duration,
}

pub type Outcome = Result<Found, FetchError>;

/// Cheap to clone; one per process.
#[derive(Clone)]
pub struct Engine {
    client: Client,
    cache: Option<Cache>,
    max_age: Duration,
    /// Keeps records from different APIs apart in one cache file.
    namespace: Arc<str>,
}

impl Engine {
    pub fn new(client: Client, cache: Option<Cache>, max_age: Duration, namespace: &str) -> Self {
        Engine {
            client,
            cache,
            max_age,
            namespace: namespace.into(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The same engine (cache, freshness, namespace) on another client: the sync screen's
    /// lookups run on a runtime of their own, and connections belong to the runtime that
    /// opened them.
    pub fn with_client(&self, client: Client) -> Engine {
        Engine {
            client,
            ..self.clone()
        }
    }

    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A fresh cached record, or a fetch whose result is then cached. Cache trouble never
    /// fails a lookup: it is logged and the API answers instead.
    pub async fn lookup(
        &self,
        id: &UserId,
        cancel: &CancellationToken,
        on_event: &mut (dyn FnMut(Event) + Send),
    ) -> Outcome {
        let started = crate::stopped::Stopwatch::start();
        if cancel.is_cancelled() {
            return Err(FetchError::cancelled(0));
        }
        on_event(Event::Started);
        if let Some(cache) = &self.cache {
            let cached = tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(FetchError::cancelled(0)),
                cached = cache.get(&self.namespace, id.as_str(), self.max_age) => cached,
            };
            match cached {
                Ok(Some(hit)) => {
                    // With its age: "why did it not fetch?" is answered by how old it was.
                    tracing::debug!(%id, age = ?hit.age, "found in the cache");
                    return Ok(Found {
                        record: hit.record,
                        source: Source::Cache,
                        attempts: 0,
                        latency: started.ran(),
                    });
                }
                Ok(None) => {
                    tracing::debug!(%id, "not in the cache, or older than --max-age");
                }
                Err(e) => cache_failed("reading", id, &e),
            }
        }
        let mut on_retry = |notice: &RetryNotice| on_event(Event::Retrying(notice.clone()));
        // Biased: a lookup cancelled while its answer is ready is still cancelled.
        let fetched = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(FetchError::cancelled(0)),
            fetched = self.client.fetch(id, &mut on_retry) => fetched?,
        };
        if let Some(cache) = &self.cache
            && let Err(e) = cache.put(&self.namespace, id.as_str(), fetched.record.clone())
        {
            cache_failed("storing", id, &e);
        }
        Ok(Found {
            record: fetched.record,
            source: Source::Api,
            attempts: fetched.attempts,
            latency: started.ran(),
        })
    }

    /// Waits until every record stored so far is on disk.
    pub async fn flush(&self) {
        if let Some(cache) = &self.cache
            && let Err(e) = cache.flush().await
        {
            tracing::warn!("flushing the cache failed: {e}");
        }
    }

    /// Stores every record queued so far and closes the cache file.
    pub async fn close(&self) {
        if let Some(cache) = &self.cache
            && let Err(e) = cache.close().await
        {
            tracing::warn!("closing the cache failed: {e}");
        }
    }
}

/// A cache read or store that failed: each kind of failure said once, then only at `-vv`,
/// since every id stored on a damaged page fails the same way, and the API answers anyway.
fn cache_failed(doing: &str, id: &UserId, e: &crate::cache::CacheError) {
    if crate::console::first_time(format!("{doing}: {e}")) {
        tracing::warn!(
            "{doing} user {id} in the cache failed: {e} (the same failure for other ids is not said)"
        );
    } else {
        tracing::debug!("{doing} user {id} in the cache failed: {e}");
    }
}
