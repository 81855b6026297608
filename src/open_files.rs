//! How many lookups can be in flight within the process's open-file limit.

use crate::console::note;

/// Files a command keeps open besides its sockets: the cache file's connections and their
/// logs, the input and the outputs, the runtime's own descriptors (about 15 measured), with
/// room to spare.
const FILES_BESIDES_SOCKETS: u64 = 32;

/// `concurrency` lowered to what the open-file limit allows, with a line saying so. Over
/// HTTP/1.1 each lookup in flight holds a socket, two at times (see [`SOCKETS_PER_LOOKUP`]);
/// more of them than the limit allows fail
/// with "Too many open files", which would be counted (and retried) as the API failing, and
/// leave no descriptor for the cache or the outputs. Over HTTP/2 they share one connection
/// (but for redirects to another origin, spoken to over HTTP/1.1 and not counted here).
/// `needed`: the most lookups there are to run at once (`get`'s ids; `u32::MAX` for a batch),
/// so that the line is only said when they would not fit. `ask_about_http2`: the line
/// suggests `--http2` (not where batch has asked the API already).
/// `server_here`: the API runs in this process (the embedded demo API, the demo's), whose
/// end of each connection is a file of this process's too.
pub fn fit(
    concurrency: u32,
    needed: u32,
    over_http2: bool,
    ask_about_http2: bool,
    server_here: bool,
) -> u32 {
    let wanted = concurrency.min(needed).max(1);
    if over_http2 {
        return wanted;
    }
    let limit = limit();
    let fitted = within(wanted, limit, server_here);
    if fitted < wanted {
        note!(
            "userfetch: {concurrency} lookups at a time (--concurrency) need {} over HTTP/1.1, \
             and the open-file limit is {}: running {fitted} at a time (raise the limit with \
             ulimit -n{})",
            if server_here {
                "up to four sockets each with the demo API in the process"
            } else {
                "up to two sockets each"
            },
            limit.unwrap_or_default(),
            if server_here {
                // HTTP/1.1 to the demo API only because --http1 asked for it.
                ", or leave out --http1"
            } else if ask_about_http2 {
                ", or pass --http2 if the API speaks it"
            } else {
                ""
            }
        );
    }
    fitted
}

/// How many lookups may be in flight at once without running out of files, for a front end
/// with no `--concurrency` of its own (the screen, the demo): `None` when nothing bounds
/// them (HTTP/2, or no limit). `server_here`: as for [`fit`].
pub fn lookups_at_once(over_http2: bool, server_here: bool) -> Option<u32> {
    if over_http2 {
        return None;
    }
    let limit = limit()?;
    Some(within(u32::MAX, Some(limit), server_here))
}

/// The process's open-file limit (raised at start as far as allowed), if it has one.
fn limit() -> Option<u64> {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .ok()
        .map(|(soft, _)| soft)
        .filter(|&soft| soft != rlimit::INFINITY)
}

/// Sockets one HTTP/1.1 lookup in flight may hold at once. The connection pool races a new
/// connection against one coming free, and the loser's socket stays open (then idle in the
/// pool): counted at one each, 992 lookups under a limit of 1,024 ran out of files (ids failed
/// with "Too many open files", and the outputs could not be written at the end).
const SOCKETS_PER_LOOKUP: u64 = 2;

/// `concurrency` within the room `limit` leaves: [`SOCKETS_PER_LOOKUP`] per lookup, twice
/// that when the server is in this process (both ends of each connection are its files).
fn within(concurrency: u32, limit: Option<u64>, server_here: bool) -> u32 {
    let Some(limit) = limit else {
        return concurrency;
    };
    let per_lookup = SOCKETS_PER_LOOKUP * if server_here { 2 } else { 1 };
    let room = (limit.saturating_sub(FILES_BESIDES_SOCKETS) / per_lookup).max(1);
    u32::try_from(room).map_or(concurrency, |room| concurrency.min(room))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_left_besides_the_run_own_files_bounds_the_lookups() {
        assert_eq!(within(1000, Some(256), false), 112);
        assert_eq!(within(100, Some(256), false), 100);
        assert_eq!(within(1000, Some(10), false), 1);
        assert_eq!(within(1000, None, false), 1000);
        assert_eq!(within(7, Some(u64::MAX), false), 7);
        // Both ends of each connection, with the server in the process.
        assert_eq!(within(1000, Some(256), true), 56);
        assert_eq!(within(50, Some(256), true), 50);
        assert_eq!(within(1000, Some(10), true), 1);
    }
}
