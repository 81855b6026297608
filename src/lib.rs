//! userfetch fetches user data from an HTTP API without ever freezing its interface.
//!
//! One lookup engine, several front ends:
//!
//! - [`id`] validates user ids; [`client`] turns an id into an HTTP request with retries,
//!   timeouts and a classified error; [`cache`] keeps records in SQLite on its own thread;
//!   [`engine`] combines them into `lookup(id)` with events for whoever is watching.
//! - Front ends: [`get`] (one-shot lookups), [`tui`] (the interactive screen), [`batch`]
//!   (whole id lists from files or stdin, politely and resumably) and [`demo`] (one scripted
//!   session through the screen's loop, sync and async, measured and drawn).
//! - [`server`] is the demo API (`userfetch serve`, and in-process when no `--api` is given).
//! - [`record`] holds a record as checked JSON text ([`duplicate_keys`] finds a key held
//!   twice); [`term`] makes untrusted text safe for a terminal; [`console`] writes lines to
//!   stdout and stderr without panicking on a closed pipe.
//! - [`cli`] defines the command line and [`values`] how its values are read; [`session`]
//!   turns it into a working engine, [`commands`] runs it and maps errors to the codes in
//!   [`exit`]; [`signals`] is Ctrl-C, SIGTERM and SIGHUP as one stream.
//! - [`open_files`] bounds the lookups in flight by the open-file limit; [`stopped`] counts
//!   the time the process spent stopped (Ctrl-Z), which no `--timeout` counts.

pub mod batch;
pub mod cache;
pub mod cli;
pub mod client;
pub mod commands;
pub mod console;
pub mod demo;
pub mod duplicate_keys;
pub mod engine;
pub mod exit;
pub mod get;
pub mod id;
pub mod open_files;
pub mod record;
pub mod server;
pub mod session;
pub mod signals;
pub mod stopped;
pub mod term;
pub mod tui;
pub mod values;
