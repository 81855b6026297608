//! Shared test helpers: a real demo API on an ephemeral port, and clients pointed at it.
#![allow(dead_code)] // each test binary uses a different subset

use std::time::Duration;

use userfetch::client::{Client, ClientConfig, RetryPolicy, UrlTemplate};
use userfetch::server::{self, LoggedRequest, ServerConfig, ServerHandle, StatsSnapshot};

/// The demo API on its own thread, logging every request; stopped on drop.
pub struct TestApi {
    handle: Option<ServerHandle>,
}

impl TestApi {
    pub fn start() -> TestApi {
        TestApi::with(ServerConfig::default())
    }

    pub fn with(config: ServerConfig) -> TestApi {
        let handle = server::start_in_thread(ServerConfig {
            record_requests: true,
            ..config
        })
        .expect("demo API starts");
        TestApi {
            handle: Some(handle),
        }
    }

    fn handle(&self) -> &ServerHandle {
        self.handle.as_ref().expect("running")
    }

    /// `http://127.0.0.1:P/users/{id}` plus an optional query string.
    pub fn template(&self, query: &str) -> String {
        let base = self.handle().url_template();
        if query.is_empty() {
            base
        } else {
            format!("{base}?{query}")
        }
    }

    pub fn port(&self) -> u16 {
        self.handle().addr().port()
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.handle().stats().snapshot()
    }

    pub fn log(&self) -> Vec<LoggedRequest> {
        self.handle().stats().log()
    }

    /// A client with fast backoff so retry tests take milliseconds.
    pub fn client(&self, query: &str, retries: u32) -> Client {
        Client::new(self.config(query, retries)).expect("client builds")
    }

    pub fn config(&self, query: &str, retries: u32) -> ClientConfig {
        ClientConfig {
            retry: RetryPolicy {
                retries,
                base: Duration::from_millis(10),
                max_wait: Duration::from_secs(5),
                max_time: Duration::from_secs(60),
            },
            timeout: Duration::from_secs(5),
            ..ClientConfig::new(UrlTemplate::parse(&self.template(query)).expect("template"))
        }
    }
}

impl Drop for TestApi {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown_blocking();
        }
    }
}

pub fn id(text: &str) -> userfetch::id::UserId {
    userfetch::id::UserId::parse(text).expect("valid id")
}
