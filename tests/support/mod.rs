//! Shared by the batch tests: a demo API in this process, a scratch directory, and the
//! userfetch binary pointed at both.

#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use userfetch::server::{self, FaultRate, ServerConfig, ServerHandle};

pub struct Env {
    pub dir: tempfile::TempDir,
    pub server: ServerHandle,
}

impl Env {
    pub fn new() -> Env {
        Env::with(ServerConfig::default())
    }

    pub fn with(config: ServerConfig) -> Env {
        Env {
            dir: tempfile::tempdir().expect("temp dir"),
            server: server::start_in_thread(config).expect("demo API"),
        }
    }

    pub fn with_latency(latency: Duration) -> Env {
        Env::with(ServerConfig {
            latency,
            ..ServerConfig::default()
        })
    }

    pub fn with_faults(faults: &[&str]) -> Env {
        Env::with(ServerConfig {
            faults: faults
                .iter()
                .map(|f| f.parse::<FaultRate>().expect("fault"))
                .collect(),
            ..ServerConfig::default()
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, content).expect("write");
        path
    }

    /// `userfetch batch` against this env's API and cache, with `args` after it.
    pub fn batch(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_userfetch"));
        cmd.current_dir(self.dir.path())
            .env_remove("USERFETCH_TOKEN")
            .env_remove("NO_COLOR")
            .arg("--api")
            .arg(self.server.url_template())
            .arg("--cache")
            .arg(self.path("cache.sqlite3"))
            .arg("batch")
            .args(args);
        cmd
    }

    pub fn user_requests(&self) -> u64 {
        self.server.stats().snapshot().user_requests
    }

    /// Names in the scratch directory, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run userfetch")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn ids_file(ids: impl IntoIterator<Item = impl std::fmt::Display>) -> String {
    ids.into_iter().map(|i| format!("{i}\n")).collect()
}

/// The `id` field of every JSONL line, in order (as text, whatever its JSON type).
pub fn jsonl_ids(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("read jsonl");
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
            match &v["id"] {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            }
        })
        .collect()
}

/// Asserts that `ids` holds no id twice and returns them as a set.
pub fn once_each(ids: &[String], what: &str) -> HashSet<String> {
    let set: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(
        set.len(),
        ids.len(),
        "{what}: some id appears more than once"
    );
    set
}

pub fn summary(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("summary file"))
        .expect("summary JSON")
}
