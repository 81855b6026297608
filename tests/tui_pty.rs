//! The interactive screen through a real pseudo-terminal: the real binary, a real demo API
//! (in this process, 2 s latency per request), and a vt100 parser reading the screen the way
//! a terminal would.
//!
//! Waits are generous and polled: these tests assert what appears and what doesn't, never how
//! fast, except where the behaviour itself is a time bound ("q exits within a second").

use std::io::{ErrorKind, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use expectrl::session::OsSession;
use userfetch::server::{self, ServerConfig, ServerHandle};

const COLS: u16 = 120;
const ROWS: u16 = 36;
const PATIENCE: Duration = Duration::from_secs(15);

struct Pty {
    session: OsSession,
    parser: vt100::Parser,
    raw: Vec<u8>,
}

impl Pty {
    fn spawn(args: &[&str]) -> Pty {
        let mut command = Command::new(env!("CARGO_BIN_EXE_userfetch"));
        command.args(args);
        Pty::spawn_command(command)
    }

    /// An interactive bash with job control, for what a shell does around the program
    /// (Ctrl-Z, `fg`). Its prompt is `$ `.
    fn shell() -> Pty {
        let mut command = Command::new("bash");
        // The C locale, so its job report reads "Stopped" whatever the machine's language;
        // no history file written into the developer's home.
        command
            .args(["--norc", "--noprofile", "-i"])
            .env("PS1", "$ ")
            .env("LC_ALL", "C")
            .env("HISTFILE", "");
        Pty::spawn_command(command)
    }

    fn spawn_command(mut command: Command) -> Pty {
        command
            .env("TERM", "xterm-256color")
            .env("NO_COLOR", "1")
            .env_remove("USERFETCH_API");
        let mut session = OsSession::spawn(command).expect("spawn a program in a pty");
        session
            .get_process_mut()
            .set_window_size(COLS, ROWS)
            .expect("set the pty size");
        Pty {
            session,
            parser: vt100::Parser::new(ROWS, COLS, 0),
            raw: Vec::new(),
        }
    }

    /// Reads whatever the program has written so far.
    fn pump(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.session.try_read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    self.parser.process(&buf[..n]);
                    self.raw.extend_from_slice(&buf[..n]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // EIO: the program has exited and the pty is closed.
                Err(_) => return,
            }
        }
    }

    /// The screen's text as a person reads it: a no-break space (which keeps a figure of
    /// the header lines from wrapping apart) is a space.
    fn screen(&mut self) -> String {
        self.pump();
        self.parser.screen().contents().replace('\u{a0}', " ")
    }

    fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + PATIENCE;
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < until,
                "waited {PATIENCE:?} for {what}; the screen is:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn send(&mut self, text: &str) {
        self.session
            .write_all(text.as_bytes())
            .expect("write to the pty");
        self.session.flush().expect("flush the pty");
    }

    fn alive(&self) -> bool {
        self.session.get_process().is_alive().unwrap_or(false)
    }

    /// Waits for the program to end, returning how long that took.
    fn wait_exit(&mut self, limit: Duration) -> Duration {
        let started = Instant::now();
        while self.alive() {
            self.pump();
            assert!(
                started.elapsed() < limit,
                "still running {limit:?} after quitting; the screen is:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        self.pump();
        started.elapsed()
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        if self.alive() {
            let _ = self
                .session
                .get_process_mut()
                .kill(expectrl::process::unix::Signal::SIGKILL);
        }
    }
}

fn demo_api() -> ServerHandle {
    server::start_in_thread(ServerConfig::default()).expect("start the demo API")
}

/// The screen line of the lookup row for `id`.
fn row<'a>(screen: &'a str, id: &str) -> Option<&'a str> {
    screen.lines().find(|l| {
        let l = l.trim_start_matches(['│', '›', ' ']);
        l.starts_with(id) && l[id.len()..].starts_with(' ')
    })
}

fn bar(line: &str) -> Option<&str> {
    let start = line.find('[')?;
    let end = line[start..].find(']')? + start;
    Some(&line[start..=end])
}

fn name_of(api: &ServerHandle, id: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_userfetch"))
        .args(["get", id, "--no-cache", "--api", &api.url_template()])
        .stdin(Stdio::null())
        .output()
        .expect("run userfetch get");
    assert!(out.status.success(), "{out:?}");
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON record");
    record["name"].as_str().expect("a name").to_owned()
}

fn leaves_the_alternate_screen(raw: &[u8]) -> bool {
    raw.windows(8).any(|w| w == b"\x1b[?1049l")
}

#[test]
fn async_screen_stays_alive_while_a_lookup_is_pending() {
    let api = demo_api();
    let template = format!("{}?latency=2s", api.url_template());
    let expected_name = name_of(&api, "42");
    let mut pty = Pty::spawn(&["--api", &template, "--no-cache"]);
    pty.wait_for("the prompt", |s| s.contains("Enter user id:"));
    assert!(pty.screen().contains("ASYNC"));

    pty.send("42\r");
    let first = pty.wait_for("a loading row for 42", |s| {
        row(s, "42").is_some_and(|r| r.contains("/ 10.0 s"))
    });
    let first_bar = bar(row(&first, "42").unwrap_or_default())
        .unwrap_or_default()
        .to_owned();
    pty.wait_for("the loading bar to move", |s| {
        row(s, "42").and_then(bar).is_some_and(|b| b != first_bar)
    });

    // Typing is echoed while the first lookup is still waiting for its answer.
    pty.send("77");
    let echoed = pty.wait_for("the second id echoed", |s| s.contains("Enter user id: 77"));
    assert!(
        row(&echoed, "42").is_some_and(|r| r.contains("/ 10.0 s")),
        "42 should still be loading while 77 is typed:\n{echoed}"
    );

    pty.wait_for("the user's name", |s| {
        row(s, "42").is_some_and(|r| r.contains(&expected_name))
    });

    // A second lookup is in flight when q is pressed: the program still quits at once.
    pty.send("\r");
    pty.wait_for("a loading row for 77", |s| {
        row(s, "77").is_some_and(|r| r.contains("/ 10.0 s"))
    });
    pty.send("q");
    let took = pty.wait_exit(Duration::from_secs(1));
    assert!(
        leaves_the_alternate_screen(&pty.raw),
        "the terminal was not restored"
    );
    assert!(!pty.parser.screen().alternate_screen());
    eprintln!("quit took {took:?}");
    api.shutdown_blocking();
}

#[test]
fn sync_mode_freezes_the_screen_until_the_answer() {
    let api = demo_api();
    let template = format!("{}?latency=2s", api.url_template());
    let mut pty = Pty::spawn(&["ui", "--sync", "--api", &template, "--no-cache"]);
    pty.wait_for("the prompt", |s| s.contains("Enter user id:"));
    pty.send("5\r");
    let mut frozen = pty.wait_for("the frozen label", |s| s.contains("UI frozen"));
    // The frame with the label may still be arriving in pieces: take as the baseline a screen
    // that stayed the same for a moment.
    loop {
        std::thread::sleep(Duration::from_millis(150));
        let again = pty.screen();
        if again == frozen || again.contains("froze the UI for") {
            break;
        }
        frozen = again;
    }

    // For most of the 2 s wait nothing on screen may move: not the bar, not the clock, and
    // not what is typed.
    pty.send("9");
    let watch_until = Instant::now() + Duration::from_millis(1200);
    while Instant::now() < watch_until {
        let now = pty.screen();
        if now.contains("froze the UI for") {
            break;
        }
        assert_eq!(now, frozen, "the screen changed during a sync lookup");
        std::thread::sleep(Duration::from_millis(50));
    }

    pty.wait_for("the freeze to be reported", |s| {
        s.contains("froze the UI for")
    });
    let after = pty.wait_for("the key typed during the freeze", |s| {
        s.contains("Enter user id: 9")
    });
    assert!(row(&after, "5").is_some_and(|r| r.contains('✓')), "{after}");
    pty.send("\x03");
    pty.wait_exit(Duration::from_secs(5));
    assert!(leaves_the_alternate_screen(&pty.raw));
    api.shutdown_blocking();
}

#[test]
fn hostile_records_never_reach_the_terminal_raw() {
    let api = demo_api();
    let template = format!("{}?fault=hostile", api.url_template());
    let mut pty = Pty::spawn(&["--api", &template, "--no-cache"]);
    pty.wait_for("the prompt", |s| s.contains("Enter user id:"));
    pty.send("1\r");
    pty.wait_for("the hostile user", |s| s.contains("Mallory"));
    // The detail pane shows every field, including the hostile catch phrase.
    pty.wait_for("the detail pane", |s| s.contains("catchPhrase"));
    pty.send("q");
    pty.wait_exit(Duration::from_secs(5));
    let raw = &pty.raw;
    let contains = |needle: &[u8]| raw.windows(needle.len()).any(|w| w == needle);
    assert!(
        !contains(b"\x1b]0;PWNED"),
        "an OSC title sequence got through"
    );
    assert!(!contains(b"PWNED\x07"), "a BEL got through");
    assert!(!contains("\u{9b}".as_bytes()), "a C1 CSI got through");
    assert!(!contains("\u{85}".as_bytes()), "a C1 NEL got through");
    assert!(
        !contains("\u{202e}".as_bytes()),
        "a bidi override got through"
    );
    assert!(
        !contains("\u{2066}".as_bytes()),
        "a bidi isolate got through"
    );
    assert!(!contains(b"\x1b[31mred"), "an SGR from the API got through");
    api.shutdown_blocking();
}

/// Ends a sync lookup frozen on an API that answers after 30 s with `stop`, and checks the
/// screen quits long before that, its terminal restored.
fn a_frozen_sync_lookup_ends_at_once(stop: impl FnOnce(&mut Pty)) {
    let api = demo_api();
    let template = format!("{}?latency=30s", api.url_template());
    let mut pty = Pty::spawn(&["ui", "--sync", "--api", &template, "--no-cache"]);
    pty.wait_for("the prompt", |s| s.contains("Enter user id:"));
    pty.send("5\r");
    pty.wait_for("the frozen label", |s| s.contains("UI frozen"));
    let asked = Instant::now();
    while api.stats().snapshot().user_requests == 0 {
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "the lookup never left"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stop(&mut pty);
    let took = pty.wait_exit(Duration::from_secs(25));
    assert!(took < Duration::from_secs(15), "quit only after {took:?}");
    assert!(leaves_the_alternate_screen(&pty.raw));
    api.shutdown_blocking();
}

#[test]
fn a_signal_ends_a_frozen_sync_lookup_at_once() {
    a_frozen_sync_lookup_ends_at_once(|pty| {
        pty.session
            .get_process_mut()
            .kill(expectrl::process::unix::Signal::SIGTERM)
            .expect("send SIGTERM");
    });
}

/// Ctrl-C typed during a sync freeze quits at once, as it would stop any program blocked in
/// a call: in raw mode it was a key, and keys wait out the freeze.
#[test]
fn ctrl_c_typed_during_a_sync_freeze_quits_at_once() {
    a_frozen_sync_lookup_ends_at_once(|pty| pty.send("\x03"));
}

#[test]
fn sigquit_ends_a_frozen_sync_lookup_at_once() {
    a_frozen_sync_lookup_ends_at_once(|pty| {
        pty.session
            .get_process_mut()
            .kill(expectrl::process::unix::Signal::SIGQUIT)
            .expect("send SIGQUIT");
    });
}

#[test]
fn resize_relays_the_screen_and_sigterm_restores_the_terminal() {
    let api = demo_api();
    let template = format!("{}?latency=2s", api.url_template());
    let mut pty = Pty::spawn(&["--api", &template, "--no-cache"]);
    pty.wait_for("the prompt", |s| s.contains("Enter user id:"));
    pty.send("3\r");
    pty.wait_for("a loading row", |s| row(s, "3").is_some());
    // On resize the screen is laid out again: below 90 columns the detail pane moves under
    // the list, so its box starts at the left edge.
    assert!(!pty.screen().lines().any(|l| l.starts_with("┌ user 3")));
    pty.pump();
    pty.parser.screen_mut().set_size(30, 80);
    pty.session
        .get_process_mut()
        .set_window_size(80, 30)
        .expect("resize the pty");
    pty.wait_for("the narrow layout", |s| {
        s.lines().any(|l| l.starts_with("┌ user 3"))
    });
    pty.session
        .get_process_mut()
        .kill(expectrl::process::unix::Signal::SIGTERM)
        .expect("send SIGTERM");
    pty.wait_exit(Duration::from_secs(5));
    assert!(leaves_the_alternate_screen(&pty.raw));
    api.shutdown_blocking();
}

/// SIGQUIT (`kill -QUIT`) quits like Ctrl-C, the terminal restored: by default it ended
/// the process with the terminal left raw.
#[test]
fn sigquit_restores_the_terminal() {
    let mut pty = Pty::spawn(&["--no-cache"]);
    pty.wait_for("the prompt", |s| s.contains("Enter user id:"));
    pty.session
        .get_process_mut()
        .kill(expectrl::process::unix::Signal::SIGQUIT)
        .expect("send SIGQUIT");
    pty.wait_exit(Duration::from_secs(5));
    assert!(leaves_the_alternate_screen(&pty.raw));
}

#[test]
fn a_paste_looks_up_each_line_even_one_starting_with_q() {
    let mut pty = Pty::spawn(&["--no-cache"]);
    pty.wait_for("the prompt", |s| s.contains("Enter user id:"));
    assert!(
        pty.raw.windows(8).any(|w| w == b"\x1b[?2004h"),
        "bracketed paste was not asked for"
    );
    pty.send("\x1b[200~7\rquinn\r\x1b[201~");
    pty.wait_for("both pasted ids as rows", |s| {
        row(s, "7").is_some() && row(s, "quinn").is_some()
    });
    assert!(pty.alive(), "the q of the pasted id quit the screen");
    pty.send("q");
    pty.wait_exit(Duration::from_secs(5));
}

#[test]
fn verbose_logging_onto_the_screen_is_refused() {
    let mut pty = Pty::spawn(&["-v", "--no-cache"]);
    pty.wait_exit(Duration::from_secs(10));
    assert!(
        pty.screen()
            .contains("-v writes its log to stderr, which the screen covers"),
        "{}",
        pty.screen()
    );
    assert!(
        !leaves_the_alternate_screen(&pty.raw),
        "the screen was never drawn"
    );
}

#[test]
fn a_sigint_from_outside_restores_the_terminal() {
    let mut pty = Pty::spawn(&["--no-cache"]);
    pty.wait_for("the prompt", |s| s.contains("Enter user id:"));
    pty.session
        .get_process_mut()
        .kill(expectrl::process::unix::Signal::SIGINT)
        .expect("send SIGINT");
    pty.wait_exit(Duration::from_secs(5));
    assert!(leaves_the_alternate_screen(&pty.raw));
}

/// Starts the screen as a job of `pty`'s shell, with `args`, and waits for it.
fn start_in_shell(pty: &mut Pty, args: &str) {
    pty.send(&format!(
        "'{}' --no-cache {args}\r",
        env!("CARGO_BIN_EXE_userfetch")
    ));
    pty.wait_for("the prompt", |s| s.contains("Enter user id:"));
}

/// After `fg`: the screen is drawn whole again (the shell's lines gone) and keys work
/// without Enter, so `q` quits at once and the shell gets the terminal back.
fn resumed_and_quits(pty: &mut Pty) {
    pty.send("fg\r");
    pty.wait_for("the whole screen again", |s| {
        s.contains("Enter user id:") && !s.contains("Stopped")
    });
    quits_at_once(pty);
}

/// `q` without Enter (raw mode) quits, and the shell gets the terminal back.
fn quits_at_once(pty: &mut Pty) {
    pty.send("q");
    pty.wait_for("the screen to close", |s| !s.contains("Enter user id:"));
    pty.send("echo ended $?\r");
    pty.wait_for("the shell", |s| s.contains("ended 0"));
}

/// In raw mode Ctrl-Z is a key, not the terminal's suspend: the screen hands the terminal
/// back and stops, as a program in cooked mode would, and `fg` brings it back working.
#[test]
fn ctrl_z_hands_the_terminal_to_the_shell_and_fg_brings_the_screen_back() {
    let api = demo_api();
    let mut pty = Pty::shell();
    // A lookup pending throughout, so the bar animates and the meter times frame gaps.
    start_in_shell(
        &mut pty,
        &format!("--api '{}?latency=20s'", api.url_template()),
    );
    pty.send("7\r");
    pty.wait_for("the lookup", |s| row(s, "7").is_some());
    pty.send("\x1a");
    let shell = pty.wait_for("the shell's job report", |s| s.contains("Stopped"));
    assert!(!shell.contains("Enter user id:"), "{shell}");
    assert!(leaves_the_alternate_screen(&pty.raw));
    // Stopped for 3 s: no freeze of the screen's, so the meter does not report one.
    std::thread::sleep(Duration::from_secs(3));
    pty.send("fg\r");
    let screen = pty.wait_for("the meter after the stop", |s| {
        s.contains("Enter user id:")
            && !s.contains("Stopped")
            && s.contains("frame gap ")
            && !s.contains("frame gap –")
    });
    let gap: u64 = screen
        .split("longest frame gap ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no frame gap on the meter:\n{screen}"));
    assert!(
        gap < 1500,
        "the stop counted as a {gap} ms freeze:\n{screen}"
    );
    quits_at_once(&mut pty);
}

/// A lookup pending when Ctrl-Z stops the screen is not timed out by the stop: `--timeout`
/// counts only the time the process ran, and the answer that came meanwhile is read on `fg`
/// (not fetched again by a retry).
#[test]
fn a_stop_does_not_use_up_a_pending_lookups_timeout() {
    let api = demo_api();
    let mut pty = Pty::shell();
    start_in_shell(
        &mut pty,
        &format!("--timeout 4s --api '{}?latency=2s'", api.url_template()),
    );
    pty.send("7\r");
    pty.wait_for("the lookup", |s| row(s, "7").is_some());
    pty.send("\x1a");
    pty.wait_for("the shell's job report", |s| s.contains("Stopped"));
    // Stopped past the timeout; the API answers meanwhile.
    std::thread::sleep(Duration::from_secs(6));
    pty.send("fg\r");
    let screen = pty.wait_for("the lookup's end", |s| {
        s.contains("Enter user id:") && (s.contains("found 1 ·") || s.contains("errors 1"))
    });
    assert!(screen.contains("found 1 ·"), "{screen}");
    // Found by the first attempt, not by a retry after a timeout on resume.
    let found = row(&screen, "7").unwrap_or_default();
    assert!(!found.contains("attempts"), "{screen}");
    quits_at_once(&mut pty);
}

/// Stopped from outside (`kill -TSTP`), the screen has no say: the shell puts the terminal
/// back in cooked mode and writes over the screen. Resumed, the screen sets raw mode again
/// and redraws everything.
#[test]
fn stopped_from_outside_the_screen_recovers_on_fg() {
    let mut pty = Pty::shell();
    start_in_shell(&mut pty, "");
    let shell_pid = pty.session.get_process().pid().as_raw();
    let child = children_of(shell_pid);
    assert_eq!(child.len(), 1, "{child:?}");
    // SAFETY: kill(2) on a process this test started (through its shell).
    assert_eq!(unsafe { libc::kill(child[0], libc::SIGTSTP) }, 0);
    pty.wait_for("the shell's job report", |s| s.contains("Stopped"));
    resumed_and_quits(&mut pty);
}

fn children_of(pid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
                // pid (comm) state ppid …; comm may hold spaces, so read after its ')'.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

/// The terminal going away (a closed window, a dropped ssh session) ends the screen like
/// Ctrl-C: exit 130, not a crash while restoring a terminal that is no longer there.
#[test]
fn a_closed_terminal_ends_the_screen_with_130() {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    // Opened close-on-exec from the start: a copy of the master inherited by a program
    // another test spawns meanwhile would keep the terminal open.
    // SAFETY: posix_openpt, grantpt, unlockpt and ptsname_r on a descriptor owned here; the
    // name is written into a buffer of the length given, and only read once they succeed.
    let (master, slave) = unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(master >= 0, "{}", std::io::Error::last_os_error());
        let master = OwnedFd::from_raw_fd(master);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&master);
        assert_eq!(libc::grantpt(fd), 0);
        assert_eq!(libc::unlockpt(fd), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(fd, name.as_mut_ptr(), name.len()), 0);
        let slave = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        assert!(slave >= 0, "{}", std::io::Error::last_os_error());
        let size = libc::winsize {
            ws_row: ROWS,
            ws_col: COLS,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        assert_eq!(libc::ioctl(fd, libc::TIOCSWINSZ, &size), 0);
        (master, OwnedFd::from_raw_fd(slave))
    };
    let mut command = Command::new(env!("CARGO_BIN_EXE_userfetch"));
    command
        .arg("--no-cache")
        .env("TERM", "xterm-256color")
        .env_remove("USERFETCH_API")
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    // SAFETY: only async-signal-safe calls between fork and exec: a new session, whose
    // controlling terminal is the pty on stdin, and SIGHUP at its default (the tests may run
    // under nohup).
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_DFL);
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let mut reader = std::fs::File::from(master);
    let mut seen = Vec::new();
    let until = Instant::now() + PATIENCE;
    while !String::from_utf8_lossy(&seen).contains("Enter user id") {
        assert!(
            Instant::now() < until,
            "no screen: {:?}",
            String::from_utf8_lossy(&seen)
        );
        // Waited for with a timeout, so a program that writes nothing fails the test
        // instead of hanging it.
        let mut ready = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&reader),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) on one pollfd owned here.
        if unsafe { libc::poll(&mut ready, 1, 100) } <= 0 {
            continue;
        }
        let mut buf = [0u8; 4096];
        let n = reader.read(&mut buf).unwrap();
        seen.extend_from_slice(&buf[..n]);
    }
    drop(reader);
    let until = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < until,
            "still running after its terminal closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130), "{status:?}");
}

#[test]
fn without_a_terminal_it_points_to_the_script_friendly_commands() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_userfetch"))
        .args(["--no-cache"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run userfetch");
    drop(child.stdin.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    let status = child.wait().expect("wait for userfetch");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("userfetch: "), "{stderr}");
    assert!(stderr.contains("userfetch get"), "{stderr}");
    assert!(stderr.contains("terminal"), "{stderr}");
}

/// `-v` log lines while batch's progress bar is drawn: each lifts the bar, so no frame of it
/// is left behind in what scrolled up.
#[test]
fn log_lines_are_written_above_the_batch_progress_bar() {
    let api = demo_api();
    let dir = tempfile::tempdir().unwrap();
    let ids = dir.path().join("ids.txt");
    std::fs::write(&ids, (1..=40).map(|n| format!("{n}\n")).collect::<String>()).unwrap();
    let template = format!(
        "{}?latency=50ms&fault=503&fault_rate=0.3",
        api.url_template()
    );
    let cache = dir.path().join("c.sqlite3");
    let out = dir.path().join("out.jsonl");
    let mut pty = Pty::spawn(&[
        "-vv",
        "--api",
        &template,
        "--cache",
        cache.to_str().unwrap(),
        "--retries",
        "10",
        "--max-retry-wait",
        "10ms",
        "batch",
        ids.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--concurrency",
        "2",
    ]);
    pty.wait_exit(Duration::from_secs(60));
    let screen = pty.screen();
    assert!(
        screen.contains("retrying"),
        "no log line to check:\n{screen}"
    );
    let frames: Vec<&str> = screen.lines().filter(|l| l.contains(" ETA ")).collect();
    assert!(
        frames.is_empty(),
        "bar frames left on screen: {frames:#?}\n{screen}"
    );
    api.shutdown_blocking();
}

/// Before the first id is done the bar has no rate to estimate from: it says "ETA -", not
/// indicatif's "0s", which reads as nearly finished at 0/3.
#[test]
fn the_batch_bar_makes_no_eta_up_before_the_first_answer() {
    let api = demo_api();
    let dir = tempfile::tempdir().unwrap();
    let ids = dir.path().join("ids.txt");
    std::fs::write(&ids, "1\n2\n3\n").unwrap();
    let template = format!("{}?latency=1s", api.url_template());
    let cache = dir.path().join("c.sqlite3");
    let out = dir.path().join("out.jsonl");
    let mut pty = Pty::spawn(&[
        "--api",
        &template,
        "--cache",
        cache.to_str().unwrap(),
        "batch",
        ids.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--concurrency",
        "1",
    ]);
    // "in flight" ends the bar's line: the whole line is drawn.
    let whole = |l: &str, at: &str| l.contains(at) && l.contains("in flight");
    let first = pty.wait_for("the bar at 0/3", |s| s.lines().any(|l| whole(l, "0/3 ids")));
    let line = first.lines().find(|l| whole(l, "0/3 ids")).unwrap_or("");
    assert!(line.contains("ETA -"), "{line:?}");
    pty.wait_exit(Duration::from_secs(30));
    let written = String::from_utf8_lossy(&pty.raw);
    assert!(
        !written
            .split(['\r', '\n'])
            .any(|frame| frame.contains("0/3 ids") && frame.contains("ETA 0s")),
        "a made-up ETA was drawn: {written:?}"
    );
    api.shutdown_blocking();
}

/// A resumed run skips its first 20 ids in milliseconds; the rate and the ETA are of the ids
/// it fetches (one a second here, by --rate), where indicatif's estimate took the skipped ones for
/// speed and said "ETA 0s" with 20 slow lookups left.
#[test]
fn a_resumed_batch_estimates_from_what_it_fetches() {
    let api = demo_api();
    let dir = tempfile::tempdir().unwrap();
    let write_ids = |n: u32| {
        let ids = dir.path().join(format!("ids-{n}.txt"));
        std::fs::write(&ids, (1..=n).map(|i| format!("{i}\n")).collect::<String>()).unwrap();
        ids
    };
    let (first, all) = (write_ids(20), write_ids(40));
    let cache = dir.path().join("c.sqlite3");
    let out = dir.path().join("out.jsonl");
    let template = api.url_template();
    for (rate, ids) in [("1000/s", &first), ("1/s", &all)] {
        let mut pty = Pty::spawn(&[
            "--api",
            &template,
            "--cache",
            cache.to_str().unwrap(),
            "batch",
            ids.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--rate",
            rate,
        ]);
        if ids == &all {
            // Three fetched in 2 s or more: 17 left at that rate is 11 s or more.
            // "in flight" ends the bar's line: the whole line is drawn.
            let whole = |l: &str| l.contains("23/40 ids") && l.contains("in flight");
            let screen = pty.wait_for("three ids fetched", |s| s.lines().any(whole));
            let line = screen.lines().find(|l| whole(l)).unwrap_or("");
            let eta = line
                .split("ETA ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or("");
            let seconds: Option<u32> = eta.strip_suffix('s').and_then(|n| n.parse().ok());
            assert!(
                seconds.is_some_and(|s| s >= 10) || eta.ends_with('m'),
                "ETA {eta:?} in {line:?}"
            );
            pty.send("\x03\x03");
        }
        pty.wait_exit(Duration::from_secs(60));
    }
    api.shutdown_blocking();
}

/// Ids typed on the terminal (`batch -`): told how to end the input, and no spinner is drawn
/// across the typing; the summary comes at the end.
#[test]
fn ids_typed_into_batch_are_not_drawn_over() {
    let api = demo_api();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("c.sqlite3");
    let out = dir.path().join("out.jsonl");
    let template = format!("{}?latency=300ms", api.url_template());
    let mut pty = Pty::spawn(&[
        "--api",
        &template,
        "--cache",
        cache.to_str().unwrap(),
        "batch",
        "-",
        "--out",
        out.to_str().unwrap(),
    ]);
    pty.wait_for("the hint", |s| s.contains("Ctrl-D ends the input"));
    pty.send("1\r");
    // Long enough for a spinner to have been drawn several times.
    std::thread::sleep(Duration::from_millis(800));
    pty.send("2\r\x04");
    pty.wait_exit(Duration::from_secs(30));
    let screen = pty.screen();
    assert!(screen.contains(": 2 ids: 2 found"), "{screen}");
    // The spinner's line reads "… N ids  R/s  elapsed  in flight …": never drawn, not even
    // to be cleared at the end.
    let written = String::from_utf8_lossy(&pty.raw);
    assert!(!written.contains("in flight"), "{written:?}");
    api.shutdown_blocking();
}

/// More than a read's worth of keys at once (a terminal without bracketed paste, or typing
/// ahead during a freeze): every key is taken, the last ones too, without waiting for
/// another key to arrive.
#[test]
fn a_burst_of_keys_longer_than_one_read_is_taken_whole() {
    let mut pty = Pty::spawn(&["--no-cache"]);
    pty.wait_for("the prompt", |s| s.contains("Enter user id:"));
    // 1,500 digits, Ctrl-U to clear them, then q on the empty line: quit.
    pty.send(&format!("{}\x15q", "1".repeat(1500)));
    pty.wait_exit(Duration::from_secs(10));
}

/// The screen in sync mode against an API answering in 2 s, with `ids` pasted at its
/// prompt (bracketed paste).
fn sync_paste(ids: &[&str]) -> (ServerHandle, Pty) {
    let api = demo_api();
    let template = format!("{}?latency=2s", api.url_template());
    let mut pty = Pty::spawn(&["ui", "--sync", "--api", &template, "--no-cache"]);
    pty.wait_for("the prompt", |s| s.contains("Enter user id:"));
    let lines: String = ids.iter().map(|id| format!("{id}\r")).collect();
    pty.send(&format!("\x1b[200~{lines}\x1b[201~"));
    (api, pty)
}

/// In sync mode a paste of several ids freezes the screen once per id, but Ctrl-C pressed
/// during the first freeze is read before the next one begins.
#[test]
fn ctrl_c_after_a_sync_paste_waits_for_one_lookup_not_for_all() {
    let (api, mut pty) = sync_paste(&["1", "2", "3", "4", "5", "6", "7", "8"]);
    // The second id's freeze is labelled as one too, after the first's was reported.
    pty.wait_for("the second freeze", |s| {
        s.contains("froze the UI for") && s.contains("UI frozen")
    });
    pty.send("\x03");
    // Eight ids at 2 s each hold the screen 16 s; the one in flight, 2 s.
    pty.wait_exit(Duration::from_secs(10));
    assert!(leaves_the_alternate_screen(&pty.raw));
    api.shutdown_blocking();
}

/// Ctrl-C pressed during the first freeze of a sync paste quits once that lookup ends: the
/// second pasted id is never asked for.
#[test]
fn ctrl_c_during_the_first_freeze_of_a_sync_paste_asks_for_no_more() {
    let (api, mut pty) = sync_paste(&["1", "2", "3"]);
    // The other two wait their turn as queued, not as lookups in flight.
    pty.wait_for("the first freeze", |s| {
        s.contains("UI frozen") && s.contains("in flight 1 · queued 2")
    });
    pty.send("\x03");
    pty.wait_exit(Duration::from_secs(10));
    assert_eq!(api.stats().snapshot().user_requests, 1);
    api.shutdown_blocking();
}

/// F2 during a sync paste: the ids not yet begun run async, beside the screen, instead of
/// freezing it one after another.
#[test]
fn f2_during_a_sync_paste_runs_the_rest_async() {
    let (api, mut pty) = sync_paste(&["1", "2", "3", "4", "5"]);
    pty.wait_for("the first freeze", |s| s.contains("UI frozen"));
    pty.send("\x1bOQ"); // F2
    // In sync mode one lookup at most is in flight; the four left run together.
    let screen = pty.wait_for("the other four in flight at once", |s| {
        s.contains("in flight 4 ·")
    });
    assert!(
        screen.contains("ASYNC") && !screen.contains("UI frozen"),
        "{screen}"
    );
    pty.wait_for("all five found", |s| s.contains("found 5 ·"));
    pty.send("q");
    pty.wait_exit(Duration::from_secs(5));
    api.shutdown_blocking();
}

/// Over HTTP/1.1 each lookup in flight holds a socket. Under a low open-file limit the screen
/// runs as many at a time as the limit allows and the rest wait their turn; before, the rest
/// failed with "Too many open files", which read as the API being down.
#[test]
fn lookups_beyond_the_open_file_limit_wait_instead_of_failing() {
    let api = server::start_in_thread(ServerConfig {
        latency: Duration::from_millis(500),
        ..ServerConfig::default()
    })
    .expect("demo API");
    let mut command = Command::new("bash");
    command.args([
        "-c",
        &format!(
            "ulimit -n 64 && exec '{}' --no-cache --retries 0 --api '{}'",
            env!("CARGO_BIN_EXE_userfetch"),
            api.url_template()
        ),
    ]);
    let mut pty = Pty::spawn_command(command);
    pty.wait_for("the prompt", |s| s.contains("Enter user id:"));
    let ids: String = (1..=80).map(|i| format!("{i}\r")).collect();
    pty.send(&format!("\x1b[200~{ids}\x1b[201~"));
    let screen = pty.wait_for("every lookup answered", |s| {
        s.contains("in flight 0 ·") && s.contains("found 80 ·")
    });
    assert!(screen.contains("errors 0"), "{screen}");
    assert!(screen.contains("lookups at a time at most"), "{screen}");
    pty.send("q");
    pty.wait_exit(Duration::from_secs(5));
    api.shutdown_blocking();
}

/// The embedded demo API runs in the screen's own process: over HTTP/1.1 each lookup holds
/// both ends of its connections (up to four of its files), which the open-file limit must
/// leave room for.
#[test]
fn lookups_to_the_embedded_api_fit_the_open_file_limit_with_both_ends() {
    let mut command = Command::new("bash");
    command.args([
        "-c",
        &format!(
            "ulimit -n 64 && exec '{}' --no-cache --retries 0 --http1",
            env!("CARGO_BIN_EXE_userfetch")
        ),
    ]);
    let mut pty = Pty::spawn_command(command);
    pty.wait_for("the prompt", |s| s.contains("Enter user id:"));
    let ids: String = (1..=60).map(|i| format!("{i}\r")).collect();
    pty.send(&format!("\x1b[200~{ids}\x1b[201~"));
    let screen = pty.wait_for("every lookup answered", |s| {
        s.contains("in flight 0 ·") && s.contains("found 60 ·")
    });
    assert!(screen.contains("errors 0"), "{screen}");
    pty.send("q");
    pty.wait_exit(Duration::from_secs(5));
}

/// The health check through a proxy that asks for credentials, or says it could not reach
/// the API: the API was never asked (or never answered), which is no "API up".
#[test]
fn a_proxys_own_answer_is_no_healthy_api() {
    use std::io::{Read, Write};
    for (status, said) in [
        (
            "407 Proxy Authentication Required",
            "asks for credentials (407)",
        ),
        (
            "502 Bad Gateway",
            "could not reach the API (502 Bad Gateway)",
        ),
    ] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let _ = stream.read(&mut [0; 4096]);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        let mut command = Command::new(env!("CARGO_BIN_EXE_userfetch"));
        command
            .args(["--no-cache", "--api", "http://api.example/users/{id}"])
            .env("http_proxy", format!("http://127.0.0.1:{port}"));
        let mut pty = Pty::spawn_command(command);
        pty.wait_for("the proxy named in the header", |s| {
            s.contains("API DOWN: the proxy") && s.contains(said)
        });
        pty.send("q");
        pty.wait_exit(Duration::from_secs(5));
    }
}

/// Another process holding the cache's write lock past the busy timeout: the screen says so
/// in its notice row (stderr, where the other commands say it, is under the screen).
#[test]
fn a_cache_locked_by_another_process_is_said_on_the_screen() {
    let api = server::start_in_thread(ServerConfig::default()).expect("demo API");
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache.sqlite3");
    let mut pty = Pty::spawn(&[
        "--cache",
        cache.to_str().unwrap(),
        "--api",
        &api.url_template(),
    ]);
    pty.wait_for("the prompt", |s| s.contains("Enter user id:"));
    pty.send("1\r");
    pty.wait_for("the first record", |s| {
        row(s, "1").is_some_and(|r| r.contains('✓'))
    });
    let holder = rusqlite::Connection::open(&cache).unwrap();
    holder
        .execute_batch("BEGIN IMMEDIATE; CREATE TABLE IF NOT EXISTS held (x);")
        .unwrap();
    pty.send("2\r");
    // After the 5 s busy timeout.
    let screen = pty.wait_for("the lock said", |s| {
        s.contains("is locked by another process")
    });
    assert!(!screen.contains("userfetch: the cache"), "{screen}");
    holder.execute_batch("ROLLBACK").unwrap();
    // The next record is stored, and the notice says the file is free again.
    pty.send("3\r");
    pty.wait_for("the lock's end said", |s| s.contains("is free again"));
    pty.send("q");
    pty.wait_exit(Duration::from_secs(5));
    api.shutdown_blocking();
}

/// `get`'s spinner, on a terminal's stderr, goes when a closed stdout ends the run early.
#[test]
fn get_clears_its_spinner_when_stdout_is_closed() {
    let api = demo_api();
    let mut pty = Pty::shell();
    // `DO''NE` in the command line, DONE in its output: the line echoed is not waited for.
    pty.send(&format!(
        "'{}' --no-cache --api '{}?latency=1s' get 1 2 | true; echo DO''NE\r",
        env!("CARGO_BIN_EXE_userfetch"),
        api.url_template()
    ));
    let screen = pty.wait_for("the command's end", |s| {
        s.lines().any(|l| l.trim_end().ends_with("DONE"))
    });
    assert!(
        pty.raw.windows(10).any(|w| w == "looking up".as_bytes()),
        "no spinner drawn"
    );
    assert!(!screen.contains("looking up"), "{screen}");
}

/// `demo`'s text report, sent to a file, has the width it has off a terminal, whatever the
/// window it was run from.
#[test]
fn a_demo_report_saved_to_a_file_does_not_take_the_window_width() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.txt");
    let mut pty = Pty::shell();
    pty.send(&format!(
        "'{}' demo --latency 100ms --lookups 1 > '{}'; echo DO''NE\r",
        env!("CARGO_BIN_EXE_userfetch"),
        report.display()
    ));
    pty.wait_for("the demo's end", |s| {
        s.lines().any(|l| l.trim_end().ends_with("DONE"))
    });
    let text = std::fs::read_to_string(&report).unwrap();
    let widest = text
        .lines()
        .map(unicode_width::UnicodeWidthStr::width)
        .max()
        .unwrap_or(0);
    // The window is 120 columns; off a terminal the report is 100 wide (its axis lines 98).
    assert!((90..=100).contains(&widest), "{widest} columns:\n{text}");
}
