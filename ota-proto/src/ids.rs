//! Typed names and ids. Each is checked once, where it enters (a request body, a query, a
//! command-line argument, a database row), so the code behind never holds an invalid one, and
//! a bad one is refused with a message that says what the rule is.
//!
//! [`ImageId`] and [`KeyId`] come from the image format (`firmware`): they serialize as hex in
//! JSON and as bytes in postcard.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use firmware::image::{ImageId, KeyId};

/// A name or id that breaks its type's rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?}: {rule}")]
pub struct BadName {
    /// What it was meant to be (`device id`, `environment name`, ...).
    pub what: &'static str,
    /// The text given (cut at 80 characters).
    pub value: String,
    /// The rule it breaks, for people.
    pub rule: &'static str,
}

/// Defines a string newtype checked by `$valid`, with serde, `FromStr`, `Display` and
/// `AsRef<str>`.
macro_rules! checked_name {
    ($(#[$doc:meta])* $name:ident, $what:literal, $rule:literal, $valid:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `text` against the rule.
            pub fn new(text: impl Into<String>) -> Result<Self, BadName> {
                let text = text.into();
                let valid: fn(&str) -> bool = $valid;
                if valid(&text) {
                    Ok($name(text))
                } else {
                    Err(BadName { what: $what, value: text.chars().take(80).collect(), rule: $rule })
                }
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = BadName;
            fn try_from(text: String) -> Result<Self, BadName> {
                $name::new(text)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl FromStr for $name {
            type Err = BadName;
            fn from_str(text: &str) -> Result<Self, BadName> {
                $name::new(text)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

fn bytes_in(text: &str, max: usize, allowed: impl Fn(u8) -> bool) -> bool {
    !text.is_empty() && text.len() <= max && text.bytes().all(allowed)
}

checked_name!(
    /// A device id, as its factory line names it: 1 to 64 bytes of `[A-Za-z0-9._:-]` (a serial
    /// number, a MAC address, a UUID).
    DeviceId,
    "device id",
    "1 to 64 bytes of A-Z, a-z, 0-9, '.', '_', ':' and '-'",
    |t| bytes_in(t, 64, |b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
);

checked_name!(
    /// An environment name (`dev`, `test`, `prod`): 1 to 32 bytes of `[a-z0-9_-]`, the rule of
    /// the signed release statement that carries it.
    EnvironmentName,
    "environment name",
    "1 to 32 bytes of a-z, 0-9, '_' and '-'",
    |t| firmware::image::ReleaseStatement::new(ImageId([0; 32]), t, 0).is_some()
);

checked_name!(
    /// A board name (`microbit`, `nrf52840dk`): 1 to 32 bytes of `[a-z0-9_-]`, as in image
    /// manifests and board files.
    BoardName,
    "board name",
    "1 to 32 bytes of a-z, 0-9, '_' and '-'",
    |t| bytes_in(t, firmware::image::MAX_BOARD_LEN, |b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b)
    })
);

checked_name!(
    /// A management token's name, for people and the audit log: 1 to 64 bytes of printable
    /// text (no control characters, so a name cannot forge a line in a log).
    TokenName,
    "token name",
    "1 to 64 bytes of printable text (no control characters)",
    |t| !t.is_empty() && t.len() <= 64 && !t.chars().any(char::is_control)
);

checked_name!(
    /// A management token's public id (`tok_` and 12 hex digits of its hash): safe to show and
    /// log, used to list and revoke tokens.
    TokenId,
    "token id",
    "tok_ followed by 12 lowercase hex digits",
    |t| t.strip_prefix("tok_").is_some_and(|h| {
        h.len() == 12 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
);

impl TokenId {
    /// The public id of the token whose secret hashes (SHA-256) to `hash`: safe to show and
    /// log, it names the token without revealing it.
    pub fn of_hash(hash: &[u8; 32]) -> TokenId {
        TokenId(format!("tok_{}", hex::encode(&hash[..6])))
    }
}

/// Defines a fixed-size byte string shown as hex (keys, hashes).
macro_rules! hex_bytes {
    ($(#[$doc:meta])* $name:ident, $n:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $n]);

        impl FromStr for $name {
            type Err = BadName;
            fn from_str(text: &str) -> Result<Self, BadName> {
                let bad = || BadName {
                    what: $what,
                    value: text.chars().take(80).collect(),
                    rule: concat!(stringify!($n), " bytes as ", stringify!($n), "*2 hex digits"),
                };
                let bytes = hex::decode(text.trim()).map_err(|_| bad())?;
                bytes.try_into().map($name).map_err(|_| bad())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_bytes!(
    /// An Ed25519 public key, 32 bytes (hex in JSON).
    PublicKey,
    32,
    "public key"
);

hex_bytes!(
    /// A SHA-256 digest (hex in JSON): an image file's content address.
    Sha256,
    32,
    "SHA-256 digest"
);

/// Bytes of any length shown as hex: signed release statements.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct HexBytes(pub Vec<u8>);

impl fmt::Display for HexBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for HexBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HexBytes({self})")
    }
}

impl Serialize for HexBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HexBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text.trim())
            .map(HexBytes)
            .map_err(|e| serde::de::Error::custom(format!("not hex: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_on_the_way_in() {
        assert_eq!(DeviceId::new("sensor-17:a.b_c").unwrap().as_str(), "sensor-17:a.b_c");
        for bad in ["", "a b", "x/y", &"x".repeat(65), "é"] {
            let err = DeviceId::new(bad).unwrap_err();
            assert_eq!(err.what, "device id", "{bad}");
        }
        let err: Result<NewThing, _> = serde_json::from_str(r#"{"id": "bad id"}"#);
        let text = err.unwrap_err().to_string();
        assert!(text.contains(r#"device id "bad id": 1 to 64 bytes"#), "{text}");
        assert!(EnvironmentName::new("prod").is_ok());
        assert!(EnvironmentName::new("Prod").is_err());
        assert!(EnvironmentName::new("x".repeat(33)).is_err());
        assert!(BoardName::new("nrf52840dk").is_ok());
        assert!(BoardName::new("NRF").is_err());
        assert!(TokenName::new("ci bot").is_ok());
        assert!(TokenName::new("evil\nline").is_err());
        assert!(TokenId::new("tok_0123456789ab").is_ok());
        assert!(TokenId::new("tok_0123456789AB").is_err());
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct NewThing {
        id: DeviceId,
    }

    #[test]
    fn hex_types_round_trip() {
        let key: PublicKey = "11".repeat(32).parse().unwrap();
        assert_eq!(serde_json::to_string(&key).unwrap(), format!("\"{}\"", "11".repeat(32)));
        assert!("11".repeat(31).parse::<PublicKey>().is_err());
        let bytes: HexBytes = serde_json::from_str("\"00ff\"").unwrap();
        assert_eq!(bytes.0, vec![0, 255]);
        assert!(serde_json::from_str::<HexBytes>("\"0g\"").is_err());
    }
}
