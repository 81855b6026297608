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
        let mut cmd = self.with_api(&self.server.url_template(), &[]);
        cmd.arg("batch").args(args);
        cmd
    }

    /// userfetch on this env's cache with `api` (the demo API's template, plus a query, say)
    /// and `global` options; the subcommand is the caller's.
    pub fn with_api(&self, api: &str, global: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_userfetch"));
        // Settings from the developer's shell (USERFETCH_HTTP2, USERFETCH_MAX_AGE, …) would
        // change what the tests exercise: every one of them is removed, not just the token.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("USERFETCH_") {
                cmd.env_remove(name);
            }
        }
        cmd.current_dir(self.dir.path())
            .env_remove("NO_COLOR")
            .arg("--api")
            .arg(api)
            .arg("--cache")
            .arg(self.path("cache.sqlite3"))
            .args(global);
        cmd
    }

    /// `userfetch batch INPUT` writing `out.jsonl`, `failures.jsonl` and `summary.json` in
    /// this env's directory, with `extra` arguments after them.
    pub fn batch_to_files(&self, input: &Path, extra: &[&str]) -> Command {
        let input = input.to_str().expect("utf-8 temp path");
        let mut args = vec![
            input,
            "--out",
            "out.jsonl",
            "--failures",
            "failures.jsonl",
            "--summary-json",
            "summary.json",
        ];
        args.extend_from_slice(extra);
        self.batch(&args)
    }

    pub fn user_requests(&self) -> u64 {
        self.server.stats().snapshot().user_requests
    }

    /// Waits until the API has seen at least `n` user requests in all, or `child` has ended;
    /// true if the count was reached. Panics after a minute of neither.
    pub fn wait_for_requests(&self, n: u64, child: &mut std::process::Child) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if self.user_requests() >= n {
                return true;
            }
            if child.try_wait().expect("try_wait").is_some() {
                return false;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the API saw {} requests in a minute, waiting for {n}",
                self.user_requests()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
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

/// The write end of a pipe whose reader is already gone: every write to it fails with EPIPE,
/// as when the output goes to `| head -1` and head has exited.
pub fn closed_pipe() -> std::process::Stdio {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2() writes. Close-on-exec, so no
    // child another test spawns meanwhile inherits the read end and keeps the pipe open.
    assert_eq!(
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) },
        0,
        "pipe2"
    );
    // SAFETY: both descriptors were just created and are owned here alone.
    let (read, write) = unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    drop(read);
    std::process::Stdio::from(write)
}

/// A validator for one of the committed JSON Schemas in `schema/`.
pub fn schema(name: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schema")
        .join(name);
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("schema file"))
            .expect("schema JSON");
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `cmd` with at most `n` open files (soft and hard limit alike).
pub fn limit_open_files(cmd: &mut Command, n: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe, and nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Reads `child`'s stderr on a thread until a line contains `line`; the lines read so far
/// and a handle that returns the rest of stderr.
pub fn wait_for_line(
    child: &mut std::process::Child,
    line: &str,
) -> (String, std::thread::JoinHandle<String>) {
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let rest = std::thread::spawn(move || {
        let mut text = String::new();
        for l in std::io::BufReader::new(stderr).lines() {
            let l = l.expect("stderr line");
            let _ = tx.send(l.clone());
            text.push_str(&l);
            text.push('\n');
        }
        text
    });
    let mut seen = String::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => {
                seen.push_str(&l);
                seen.push('\n');
                if l.contains(line) {
                    return (seen, rest);
                }
            }
            Err(e) => panic!("no line with {line:?} on stderr ({e}); got:\n{seen}"),
        }
    }
}

/// A hand-written HTTP/1.1 API for answers the demo API does not give: every request gets
/// `status` (`"200 OK"`) and the body `answer` makes of the request's text, on a connection
/// closed after it. Returns the URL template.
pub fn answering(status: &'static str, answer: impl Fn(&str) -> String + Send + 'static) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0; 4096];
            let n = stream.read(&mut request).unwrap_or(0);
            let body = answer(&String::from_utf8_lossy(&request[..n]));
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://127.0.0.1:{port}/users/{{id}}")
}
