//! Human units in the configuration: sizes (`64MiB`) and durations (`90s`).
//!
//! Both also accept a bare integer (bytes, seconds), which is what an
//! environment variable such as `RELAIS_CACHE__MEMORY_CAPACITY=1048576` becomes.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A byte count. `MiB`/`GiB` are binary, `MB`/`GB` decimal; a single letter
/// (`k`, `m`, `g`) is binary, as in nginx.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Size {
    pub const fn mib(n: u64) -> Size {
        Size(n * 1024 * 1024)
    }
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic()).trim();
        let unit = &s[s.trim_end_matches(|c: char| c.is_ascii_alphabetic()).len()..];
        let shift = match unit.to_ascii_lowercase().as_str() {
            "k" => Some(10),
            "m" => Some(20),
            "g" => Some(30),
            _ => None,
        };
        if let (Some(shift), Ok(n)) = (shift, digits.parse::<u64>()) {
            return n.checked_mul(1 << shift).map(Size).ok_or_else(|| format!("size {s:?} is too large"));
        }
        bytesize::ByteSize::from_str(s)
            .map(|b| Size(b.as_u64()))
            .map_err(|_| format!("invalid size {s:?} (expected e.g. \"64MiB\", \"512KiB\", \"1GiB\")"))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", bytesize::ByteSize(self.0).display().iec_short())
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"64MiB\" or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v).map(Size).map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

/// A duration such as `90s`, `10m`, `1h 30m`, `250ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(n: u64) -> Dur {
        Dur(Duration::from_secs(n))
    }
    pub fn get(self) -> Duration {
        self.0
    }
}

/// Longer durations are refused: timers and clocks computed from them would overflow.
const MAX_DUR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl Dur {
    fn bounded(d: Duration) -> Result<Dur, String> {
        if d > MAX_DUR { Err(format!("duration {} is longer than 100 years", d.as_secs())) } else { Ok(Dur(d)) }
    }
}

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s.trim())
            .map_err(|e| format!("invalid duration {s:?}: {e} (expected e.g. \"90s\", \"10m\", \"250ms\")"))
            .and_then(Dur::bounded)
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"90s\" or a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                Dur::bounded(Duration::from_secs(v)).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                let v = u64::try_from(v).map_err(|_| E::custom("a duration cannot be negative"))?;
                self.visit_u64(v)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!("64MiB".parse::<Size>().unwrap(), Size(64 << 20));
        assert_eq!("64 MiB".parse::<Size>().unwrap(), Size(64 << 20));
        assert_eq!("64m".parse::<Size>().unwrap(), Size(64 << 20));
        assert_eq!("1GiB".parse::<Size>().unwrap(), Size(1 << 30));
        assert_eq!("1MB".parse::<Size>().unwrap(), Size(1_000_000));
        assert_eq!("4096".parse::<Size>().unwrap(), Size(4096));
        assert!("lots".parse::<Size>().is_err());
        assert!("17179869184g".parse::<Size>().is_err(), "overflow is an error, not 0");
        assert!("18446744073709551615s".parse::<Dur>().is_err());
        assert!("99years".parse::<Dur>().is_ok());
        assert!("12 parsecs".parse::<Size>().is_err());
    }

    #[test]
    fn durations() {
        assert_eq!("90s".parse::<Dur>().unwrap(), Dur::secs(90));
        assert_eq!("10m".parse::<Dur>().unwrap(), Dur::secs(600));
        assert_eq!("250ms".parse::<Dur>().unwrap(), Dur(Duration::from_millis(250)));
        assert!("soon".parse::<Dur>().is_err());
    }
}
