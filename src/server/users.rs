//! Deterministic fake users shaped like JSONPlaceholder's `/users` records.
//!
//! Every field is derived from the id through a small hash, so user 42 is the same on every
//! machine and every run: tests and benchmarks can compare output byte for byte.

use serde::Serialize;

const FIRST: &[&str] = &[
    "Leanne",
    "Ervin",
    "Clementine",
    "Patricia",
    "Chelsey",
    "Dennis",
    "Kurtis",
    "Nicholas",
    "Glenna",
    "Clementina",
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Margaret",
    "Ken",
    "Radia",
    "Frances",
];
const LAST: &[&str] = &[
    "Graham",
    "Howell",
    "Bauch",
    "Lebsack",
    "Dietrich",
    "Schulist",
    "Weissnat",
    "Runolfsdottir",
    "Reichert",
    "DuBuque",
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Hamilton",
    "Thompson",
    "Perlman",
    "Allen",
];
const STREETS: &[&str] = &[
    "Kulas Light",
    "Victor Plains",
    "Douglas Extension",
    "Hoeger Mall",
    "Skiles Walks",
    "Norberto Crossing",
    "Rex Trail",
    "Ellsworth Summit",
    "Dayna Park",
    "Kattie Turnpike",
];
const CITIES: &[&str] = &[
    "Gwenborough",
    "Wisokyburgh",
    "McKenziehaven",
    "South Elvis",
    "Roscoeview",
    "South Christy",
    "Howemouth",
    "Aliyaview",
    "Bartholomebury",
    "Lebsackbury",
];
const DOMAINS: &[&str] = &[
    "april.biz",
    "melissa.tv",
    "yesenia.net",
    "kory.org",
    "annie.ca",
    "jasper.info",
];
const COMPANY: &[&str] = &[
    "Romaguera",
    "Deckow",
    "Robel",
    "Keebler",
    "Considine",
    "Johns",
    "Yost",
    "Hoeger",
    "Abernathy",
    "Crona",
];
const PHRASE_A: &[&str] = &[
    "Multi-layered",
    "Proactive",
    "Face to face",
    "Multi-tiered",
    "User-centric",
    "Synchronised",
];
const PHRASE_B: &[&str] = &[
    "client-server",
    "didactic",
    "bi-directional",
    "zero tolerance",
    "dedicated",
    "asynchronous",
];
const PHRASE_C: &[&str] = &[
    "neural-net",
    "contingency",
    "attitude",
    "moderator",
    "toolset",
    "event loop",
];
const BS_A: &[&str] = &[
    "harness",
    "synergize",
    "e-enable",
    "transition",
    "revolutionize",
    "streamline",
];
const BS_B: &[&str] = &[
    "real-time",
    "scalable",
    "strategic",
    "cutting-edge",
    "one-to-one",
    "concurrent",
];
const BS_C: &[&str] = &[
    "e-markets",
    "supply-chains",
    "applications",
    "channels",
    "lookups",
    "futures",
];

#[derive(Serialize)]
pub struct User {
    pub id: u64,
    pub name: String,
    pub username: String,
    pub email: String,
    pub address: Address,
    pub phone: String,
    pub website: String,
    pub company: Company,
}

#[derive(Serialize)]
pub struct Address {
    pub street: &'static str,
    pub suite: String,
    pub city: &'static str,
    pub zipcode: String,
    pub geo: Geo,
}

#[derive(Serialize)]
pub struct Geo {
    pub lat: String,
    pub lng: String,
}

#[derive(Serialize)]
pub struct Company {
    pub name: String,
    #[serde(rename = "catchPhrase")]
    pub catch_phrase: String,
    pub bs: String,
}

/// splitmix64: a tiny, well-mixed deterministic generator, all we need for fake data.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick(&mut self, items: &[&'static str]) -> &'static str {
        items[(self.next() % items.len() as u64) as usize]
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Everything random about one user, drawn in one fixed order: the struct and the direct
/// JSON writer both start from here, so they cannot disagree on what user 42 is.
struct Draws {
    id: u64,
    first: &'static str,
    last: &'static str,
    domain: &'static str,
    /// Micro-degrees, as drawn: what the formatted coordinates are rounded from.
    lat_e6: u64,
    lng_e6: u64,
    street: &'static str,
    suite: u64,
    city: &'static str,
    zipcode: (u64, u64),
    phone: (u64, u64, u64),
    tld: &'static str,
    company: (&'static str, &'static str),
    phrase: (&'static str, &'static str, &'static str),
    bs: (&'static str, &'static str, &'static str),
}

impl Draws {
    fn new(id: u64) -> Draws {
        let mut r = Mix(id);
        Draws {
            id,
            first: r.pick(FIRST),
            last: r.pick(LAST),
            domain: r.pick(DOMAINS),
            lat_e6: r.below(180_000_000),
            lng_e6: r.below(360_000_000),
            street: r.pick(STREETS),
            suite: 100 + r.below(900),
            city: r.pick(CITIES),
            zipcode: (r.below(100_000), r.below(10_000)),
            phone: (200 + r.below(800), r.below(1000), r.below(10_000)),
            tld: r.pick(&["org", "net", "com", "info", "io"]),
            company: (r.pick(COMPANY), r.pick(COMPANY)),
            phrase: (r.pick(PHRASE_A), r.pick(PHRASE_B), r.pick(PHRASE_C)),
            bs: (r.pick(BS_A), r.pick(BS_B), r.pick(BS_C)),
        }
    }

    fn lat(&self) -> f64 {
        self.lat_e6 as f64 / 1e6 - 90.0
    }

    fn lng(&self) -> f64 {
        self.lng_e6 as f64 / 1e6 - 180.0
    }

    /// The whole id as the suffix: like JSONPlaceholder's, no two users share a username or
    /// an email (with `id % 1000`, users 101 and 8101 did).
    fn username(&self) -> String {
        format!("{}.{}{}", self.first, self.last, self.id)
    }
}

pub fn user(id: u64) -> User {
    let d = Draws::new(id);
    let username = d.username();
    User {
        id,
        name: format!("{} {}", d.first, d.last),
        email: format!("{}@{}", username.to_lowercase(), d.domain),
        username,
        address: Address {
            street: d.street,
            suite: format!("Apt. {}", d.suite),
            city: d.city,
            zipcode: format!("{:05}-{:04}", d.zipcode.0, d.zipcode.1),
            geo: Geo {
                lat: format!("{:.4}", d.lat()),
                lng: format!("{:.4}", d.lng()),
            },
        },
        phone: format!("1-{:03}-{:03}-{:04}", d.phone.0, d.phone.1, d.phone.2),
        website: format!("{}.{}", d.last.to_lowercase(), d.tld),
        company: Company {
            name: format!("{}-{}", d.company.0, d.company.1),
            catch_phrase: format!("{} {} {}", d.phrase.0, d.phrase.1, d.phrase.2),
            bs: format!("{} {} {}", d.bs.0, d.bs.1, d.bs.2),
        },
    }
}

/// `serde_json::to_vec(&user(id))`, byte for byte, written straight into one buffer.
///
/// Why by hand: a batch of distinct ids makes the demo API render every user once, and the
/// struct's dozen `format!` strings plus the exact float formatting cost about as much CPU as
/// serving the answer; a benchmark of the client must not measure the server's string
/// building. The table strings are plain ASCII and need no JSON escaping (checked in tests).
pub fn render(id: u64) -> Vec<u8> {
    use std::io::Write;
    let d = Draws::new(id);
    let mut out = Vec::with_capacity(560);
    let lower = |s: &str| s.to_ascii_lowercase();
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        r#"{{"id":{id},"name":"{first} {last}","username":"{first}.{last}{n}","email":"{lfirst}.{llast}{n}@{domain}","address":{{"street":"{street}","suite":"Apt. {suite}","city":"{city}","zipcode":"{z0:05}-{z1:04}","geo":{{"lat":""#,
        first = d.first,
        last = d.last,
        n = d.id,
        lfirst = lower(d.first),
        llast = lower(d.last),
        domain = d.domain,
        street = d.street,
        suite = d.suite,
        city = d.city,
        z0 = d.zipcode.0,
        z1 = d.zipcode.1,
    );
    write_degrees(&mut out, d.lat_e6, 90, d.lat());
    out.extend_from_slice(br#"","lng":""#);
    write_degrees(&mut out, d.lng_e6, 180, d.lng());
    let _ = write!(
        out,
        r#""}}}},"phone":"1-{p0:03}-{p1:03}-{p2:04}","website":"{llast}.{tld}","company":{{"name":"{c0}-{c1}","catchPhrase":"{a} {b} {c}","bs":"{x} {y} {z}"}}}}"#,
        p0 = d.phone.0,
        p1 = d.phone.1,
        p2 = d.phone.2,
        llast = lower(d.last),
        tld = d.tld,
        c0 = d.company.0,
        c1 = d.company.1,
        a = d.phrase.0,
        b = d.phrase.1,
        c = d.phrase.2,
        x = d.bs.0,
        y = d.bs.1,
        z = d.bs.2,
    );
    out
}

/// `format!("{:.4}", micro / 1e6 - offset)` without the float: the value is rounded from
/// its micro-degrees. An exact half (the last two digits 50) is where the float's own
/// rounding error decides the direction, so that one case is left to the float formatter.
fn write_degrees(out: &mut Vec<u8>, micro: u64, offset: u64, float: f64) {
    use std::io::Write;
    let signed = micro as i64 - (offset * 1_000_000) as i64;
    let magnitude = signed.unsigned_abs();
    if magnitude % 100 == 50 {
        let _ = write!(out, "{float:.4}");
        return;
    }
    let rounded = (magnitude + 50) / 100;
    // A value just below zero keeps its sign even when it rounds to 0.0000, as floats do.
    let sign = if signed < 0 { "-" } else { "" };
    let _ = write!(out, "{sign}{}.{:04}", rounded / 10_000, rounded % 10_000);
}

/// Each user's JSON, rendered once on first request. Building a user costs a dozen small
/// allocations and a float format; under a benchmark that was 15 % of the server's CPU, and
/// the server must never be what a client benchmark measures.
pub struct Bodies {
    slots: Vec<std::sync::OnceLock<bytes::Bytes>>,
}

/// Users beyond this many are rendered on every request rather than kept (32 bytes a slot).
const MAX_CACHED: u64 = 1 << 20;

impl Bodies {
    pub fn new(users: u64) -> Bodies {
        let slots = (0..users.min(MAX_CACHED))
            .map(|_| std::sync::OnceLock::new())
            .collect();
        Bodies { slots }
    }

    /// The JSON body of user `id` (1-based).
    pub fn get(&self, id: u64) -> bytes::Bytes {
        let render = || bytes::Bytes::from(render(id));
        match usize::try_from(id.wrapping_sub(1))
            .ok()
            .and_then(|i| self.slots.get(i))
        {
            Some(slot) => slot.get_or_init(render).clone(),
            None => render(),
        }
    }
}

/// A user whose text fields carry terminal escape sequences, C1 controls and bidi overrides,
/// for proving that none of it reaches a terminal raw.
pub fn hostile_user(id: u64) -> User {
    let mut u = user(id);
    u.name = "Mallory \u{1b}]0;PWNED\u{7}\u{1b}[2J\u{9b}31m\u{202e}evil".to_owned();
    u.company.catch_phrase = "\u{1b}[31mred\u{1b}[0m \u{85}next\u{2066}isolate".to_owned();
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_id_same_user_and_ids_differ() {
        let a = serde_json::to_string(&user(42)).unwrap();
        assert_eq!(a, serde_json::to_string(&user(42)).unwrap());
        assert_ne!(a, serde_json::to_string(&user(43)).unwrap());
    }

    #[test]
    fn no_two_users_share_a_username_or_an_email() {
        let mut names = std::collections::HashSet::new();
        let mut emails = std::collections::HashSet::new();
        for id in 1..=20_000 {
            let u = user(id);
            assert!(names.insert(u.username.clone()), "{id}: {}", u.username);
            assert!(emails.insert(u.email.clone()), "{id}: {}", u.email);
        }
    }

    #[test]
    fn the_direct_writer_matches_serde_byte_for_byte() {
        // Every table entry turns up within the first 30,000 ids; then a spread of larger ones.
        let large = (0..2_000u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 1);
        for id in (0..=30_000).chain(large).chain([u64::MAX]) {
            let want = serde_json::to_vec(&user(id)).unwrap();
            assert_eq!(
                String::from_utf8(render(id)).unwrap(),
                String::from_utf8(want).unwrap(),
                "user {id}"
            );
        }
    }

    #[test]
    fn coordinates_round_like_the_float_formatter() {
        for micro in [
            0,
            1,
            49,
            50,
            51,
            99,
            100,
            149,
            150,
            89_999_950,
            89_999_999,
            90_000_000,
            90_000_001,
            90_000_049,
            90_000_050,
            90_000_051,
            179_999_999,
        ] {
            let mut out = Vec::new();
            let float = micro as f64 / 1e6 - 90.0;
            write_degrees(&mut out, micro, 90, float);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!("{float:.4}"),
                "{micro}"
            );
        }
    }

    #[test]
    fn cached_bodies_match_fresh_ones() {
        let bodies = Bodies::new(3);
        for id in [1, 3, 4, 0] {
            let fresh = serde_json::to_vec(&user(id)).unwrap();
            assert_eq!(bodies.get(id), fresh);
            assert_eq!(bodies.get(id), fresh, "second read of {id}");
        }
    }

    #[test]
    fn has_the_jsonplaceholder_shape() {
        let v = serde_json::to_value(user(7)).unwrap();
        for key in [
            "id", "name", "username", "email", "address", "phone", "website", "company",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert!(v["address"]["geo"]["lat"].is_string());
        assert!(v["company"]["catchPhrase"].is_string());
        assert_eq!(v["id"], 7);
    }
}
