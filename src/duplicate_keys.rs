//! Keys an object holds twice. JSON allows them; serde_json's `Value` (and every map type)
//! keeps one value per key, the last, so whatever shows a record field by field (the CSV,
//! `get --pretty`) says so rather than drop the others without a word.

use std::collections::HashSet;

/// The first key some object of `json` holds twice, unescaped, with the path to it
/// (`address.city`, `tags[1].name`); `None` when there is none (or the text is not JSON).
pub fn first(json: &str) -> Option<String> {
    let path = serde_json::from_str::<FirstDuplicate>(json).ok()?.0?;
    Some(path.strip_prefix('.').map(str::to_owned).unwrap_or(path))
}

/// Read by hand with serde's visitor: no map type keeps both values of a key. The path is
/// built on the way out, each level adding its own part (`.key`, `[i]`), so only the path to
/// a duplicate is ever allocated.
struct FirstDuplicate(Option<String>);

impl<'de> serde::Deserialize<'de> for FirstDuplicate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DuplicateVisitor)
    }
}

struct DuplicateVisitor;

impl<'de> serde::de::Visitor<'de> for DuplicateVisitor {
    type Value = FirstDuplicate;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<FirstDuplicate, E> {
        Ok(FirstDuplicate(None))
    }
    fn visit_i64<E>(self, _: i64) -> Result<FirstDuplicate, E> {
        Ok(FirstDuplicate(None))
    }
    fn visit_u64<E>(self, _: u64) -> Result<FirstDuplicate, E> {
        Ok(FirstDuplicate(None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<FirstDuplicate, E> {
        Ok(FirstDuplicate(None))
    }
    fn visit_str<E>(self, _: &str) -> Result<FirstDuplicate, E> {
        Ok(FirstDuplicate(None))
    }
    fn visit_unit<E>(self) -> Result<FirstDuplicate, E> {
        Ok(FirstDuplicate(None))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> Result<FirstDuplicate, A::Error> {
        let mut first = None;
        let mut index = 0usize;
        while let Some(FirstDuplicate(inner)) = seq.next_element()? {
            if first.is_none() {
                first = inner.map(|path| format!("[{index}]{path}"));
            }
            index += 1;
        }
        Ok(FirstDuplicate(first))
    }

    // With serde_json's arbitrary_precision a number arrives as a map of one private key:
    // one key, never a duplicate. Keys are borrowed from the text unless escaped; a user
    // record's objects are small, so they are compared in a list until one is not.
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<FirstDuplicate, A::Error> {
        const LISTED: usize = 32;
        let mut keys: Vec<Key<'de>> = Vec::new();
        let mut hashed: HashSet<Key<'de>> = HashSet::new();
        let mut first = None;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let FirstDuplicate(inner) = map.next_value()?;
            if first.is_some() {
                continue;
            }
            if keys.contains(&key) || hashed.contains(&key) {
                first = Some(format!(".{}", key.0));
                continue;
            }
            first = inner.map(|path| format!(".{}{path}", key.0));
            if keys.len() < LISTED {
                keys.push(key);
            } else {
                hashed.insert(key);
            }
        }
        Ok(FirstDuplicate(first))
    }
}

/// An object's key, unescaped: borrowed from the JSON text when it holds no escape.
#[derive(PartialEq, Eq, Hash)]
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(key)))
            }
            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(key.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_first_doubled_key_is_found_at_any_depth() {
        let first = super::first;
        assert_eq!(
            first(r#"{"id":7,"name":"x","name":"y"}"#).as_deref(),
            Some("name")
        );
        assert_eq!(
            first(r#"{"a":{"b":1,"c":[{},{"d":1,"d":2}]},"n":12345678901234567890123}"#).as_deref(),
            Some("a.c[1].d")
        );
        assert_eq!(
            first(r#"{"address":{"city":"x","city":"y"}}"#).as_deref(),
            Some("address.city")
        );
        assert_eq!(first(r#"[[{"k":1,"k":2}]]"#).as_deref(), Some("[0][0].k"));
        // A key that looks like an index is still a key.
        assert_eq!(
            first(r#"{"a":{"[x]":1,"[x]":2}}"#).as_deref(),
            Some("a.[x]")
        );
        assert_eq!(first(r#"{"a":{"b":1},"b":{"a":2},"n":1.5e300}"#), None);
        // The same key, once escaped: one key to a JSON reader.
        assert_eq!(first(r#"{"a":1,"\u0061":2}"#).as_deref(), Some("a"));
        // Past the listed keys: a large object is checked whole.
        let mut big: Vec<String> = (0..100).map(|n| format!(r#""k{n}":{n}"#)).collect();
        assert_eq!(first(&format!("{{{}}}", big.join(","))), None);
        big.push(r#""k70":0"#.to_owned());
        assert_eq!(
            first(&format!("{{{}}}", big.join(","))).as_deref(),
            Some("k70")
        );
        big.insert(50, r#""k10":0"#.to_owned());
        assert_eq!(
            first(&format!("{{{}}}", big.join(","))).as_deref(),
            Some("k10")
        );
    }
}
