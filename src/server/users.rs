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

pub fn user(id: u64) -> User {
    let mut r = Mix(id);
    let first = r.pick(FIRST);
    let last = r.pick(LAST);
    let username = format!("{first}.{last}{}", id % 1000);
    let domain = r.pick(DOMAINS);
    let lat = r.below(180_000_000) as f64 / 1e6 - 90.0;
    let lng = r.below(360_000_000) as f64 / 1e6 - 180.0;
    User {
        id,
        name: format!("{first} {last}"),
        email: format!("{}@{domain}", username.to_lowercase()),
        username,
        address: Address {
            street: r.pick(STREETS),
            suite: format!("Apt. {}", 100 + r.below(900)),
            city: r.pick(CITIES),
            zipcode: format!("{:05}-{:04}", r.below(100_000), r.below(10_000)),
            geo: Geo {
                lat: format!("{lat:.4}"),
                lng: format!("{lng:.4}"),
            },
        },
        phone: format!(
            "1-{:03}-{:03}-{:04}",
            200 + r.below(800),
            r.below(1000),
            r.below(10_000)
        ),
        website: format!(
            "{}.{}",
            last.to_lowercase(),
            r.pick(&["org", "net", "com", "info", "io"])
        ),
        company: Company {
            name: format!("{}-{}", r.pick(COMPANY), r.pick(COMPANY)),
            catch_phrase: format!(
                "{} {} {}",
                r.pick(PHRASE_A),
                r.pick(PHRASE_B),
                r.pick(PHRASE_C)
            ),
            bs: format!("{} {} {}", r.pick(BS_A), r.pick(BS_B), r.pick(BS_C)),
        },
    }
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
        let render = || bytes::Bytes::from(serde_json::to_vec(&user(id)).unwrap_or_default());
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
