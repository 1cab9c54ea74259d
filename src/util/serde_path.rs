//! Paths in our JSON and TOML files, stored losslessly.
//!
//! serde writes a `PathBuf` as a string and fails on a path that is not valid
//! UTF-8, which Unix allows (a dataset on a disk written by an old Latin-1 system).
//! Such a path is written as `{"unix_bytes_hex": "2f646174..."}` instead; any other
//! path stays a plain string, so files written before this existed, and every file
//! without such a path, read and fingerprint exactly as before.
//!
//! Use `#[serde(with = "crate::util::serde_path")]` on a `PathBuf` field and
//! `#[serde(with = "crate::util::serde_path::option")]` on an `Option<PathBuf>`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserializer, Serializer};

/// The key of the object form.
pub const BYTES_KEY: &str = "unix_bytes_hex";

pub fn serialize<S: Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
    if let Some(text) = path.to_str() {
        return serializer.serialize_str(text);
    }
    #[cfg(unix)]
    {
        use serde::ser::SerializeMap;
        use std::os::unix::ffi::OsStrExt;
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(BYTES_KEY, &hex::encode(path.as_os_str().as_bytes()))?;
        map.end()
    }
    #[cfg(not(unix))]
    {
        Err(serde::ser::Error::custom(format!(
            "the path {} is not valid Unicode and cannot be stored",
            path.display()
        )))
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PathBuf, D::Error> {
    deserializer.deserialize_any(PathVisitor)
}

struct PathVisitor;

impl<'de> Visitor<'de> for PathVisitor {
    type Value = PathBuf;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a path: a string, or {{\"{BYTES_KEY}\": \"HEX\"}}")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<PathBuf, E> {
        Ok(PathBuf::from(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PathBuf, A::Error> {
        let mut hex_text: Option<String> = None;
        while let Some(key) = map.next_key::<String>()? {
            if key != BYTES_KEY || hex_text.is_some() {
                return Err(de::Error::custom(format!(
                    "a path object holds exactly one key, `{BYTES_KEY}`; found `{key}`"
                )));
            }
            hex_text = Some(map.next_value()?);
        }
        let hex_text = hex_text.ok_or_else(|| de::Error::missing_field(BYTES_KEY))?;
        let bytes = hex::decode(&hex_text).map_err(|e| {
            de::Error::custom(format!("`{BYTES_KEY}` is not hexadecimal bytes: {e}"))
        })?;
        from_bytes(bytes).map_err(de::Error::custom)
    }
}

#[cfg(unix)]
fn from_bytes(bytes: Vec<u8>) -> Result<PathBuf, String> {
    use std::os::unix::ffi::OsStringExt;
    Ok(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
}

#[cfg(not(unix))]
fn from_bytes(bytes: Vec<u8>) -> Result<PathBuf, String> {
    String::from_utf8(bytes)
        .map(PathBuf::from)
        .map_err(|_| "a Unix path that is not valid Unicode cannot be used on this system".into())
}

/// The same for `Option<PathBuf>` (`None` as the format's null, or absent with
/// `#[serde(default)]`).
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(
        path: &Option<PathBuf>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match path {
            Some(p) => serializer.serialize_some(&AsStored(p)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<PathBuf>, D::Error> {
        deserializer.deserialize_option(OptionVisitor)
    }

    struct AsStored<'a>(&'a Path);

    impl serde::Serialize for AsStored<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            super::serialize(self.0, serializer)
        }
    }

    struct OptionVisitor;

    impl<'de> Visitor<'de> for OptionVisitor {
        type Value = Option<PathBuf>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a path or nothing")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Holder {
        #[serde(with = "crate::util::serde_path")]
        path: PathBuf,
        #[serde(default, with = "crate::util::serde_path::option")]
        maybe: Option<PathBuf>,
    }

    #[test]
    fn plain_paths_stay_plain_strings_in_json_and_toml() {
        let h = Holder {
            path: "data/mmad.json".into(),
            maybe: Some("k.json".into()),
        };
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, r#"{"path":"data/mmad.json","maybe":"k.json"}"#);
        assert_eq!(serde_json::from_str::<Holder>(&json).unwrap(), h);
        let none: Holder = serde_json::from_str(r#"{"path":"a","maybe":null}"#).unwrap();
        assert_eq!(none.maybe, None);
        let absent: Holder = serde_json::from_str(r#"{"path":"a"}"#).unwrap();
        assert_eq!(absent.maybe, None);
        let toml_text = toml::to_string(&h).unwrap();
        assert_eq!(toml::from_str::<Holder>(&toml_text).unwrap(), h);
    }

    #[cfg(unix)]
    #[test]
    fn a_path_that_is_not_unicode_round_trips_byte_for_byte() {
        use std::os::unix::ffi::OsStrExt;
        let raw = std::ffi::OsStr::from_bytes(b"/data/caf\xe9/mmad.json");
        let h = Holder {
            path: PathBuf::from(raw),
            maybe: Some(PathBuf::from(raw)),
        };
        let json = serde_json::to_string(&h).unwrap();
        assert!(json.contains(r#"{"unix_bytes_hex":"2f646174612f636166e92f6d6d61642e6a736f6e"}"#));
        assert_eq!(serde_json::from_str::<Holder>(&json).unwrap(), h);
        let toml_text = toml::to_string(&h).unwrap();
        assert_eq!(
            toml::from_str::<Holder>(&toml_text).unwrap(),
            h,
            "{toml_text}"
        );
    }

    #[test]
    fn a_bad_path_object_is_an_error_not_a_panic() {
        for bad in [
            r#"{"path":{"unix_bytes_hex":"zz"}}"#,
            r#"{"path":{"other":"00"}}"#,
            r#"{"path":{}}"#,
            r#"{"path":3}"#,
        ] {
            assert!(serde_json::from_str::<Holder>(bad).is_err(), "{bad}");
        }
    }
}
