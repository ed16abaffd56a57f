//! Human units in the configuration: sizes (`64MiB`) and durations (`90s`).
//!
//! Both also accept a bare integer (bytes, seconds), which is what an
//! environment variable such as `RELAIS_CACHE__MEMORY_CAPACITY=1048576` becomes.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A byte count: a number and a unit. `KiB`/`MiB`/`GiB`/`TiB` are binary,
/// `kB`/`MB`/`GB`/`TB` decimal, a single letter (`k`, `m`, `g`) binary as in
/// nginx, no unit (or `B`) bytes. Case does not matter; a fraction is allowed
/// (`1.5GiB`). A value past 16 EiB is an error, not a wrap.
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

const UNITS: [(&str, u64); 13] = [
    ("", 1),
    ("b", 1),
    ("k", 1 << 10),
    ("kib", 1 << 10),
    ("kb", 1000),
    ("m", 1 << 20),
    ("mib", 1 << 20),
    ("mb", 1_000_000),
    ("g", 1 << 30),
    ("gib", 1 << 30),
    ("gb", 1_000_000_000),
    ("tib", 1 << 40),
    ("tb", 1_000_000_000_000),
];

impl FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let invalid = || format!("invalid size {s:?} (expected e.g. \"64MiB\", \"512KiB\", \"1GiB\")");
        let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (number, unit) = (&s[..split], s[split..].trim().to_ascii_lowercase());
        let multiplier = UNITS.iter().find(|(u, _)| *u == unit).map(|&(_, m)| m).ok_or_else(invalid)?;
        if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
            return Err(invalid());
        }
        let too_large = || format!("size {s:?} is too large");
        let bytes = match number.parse::<u64>() {
            Ok(n) => n.checked_mul(multiplier).ok_or_else(too_large)?,
            Err(_) if number.bytes().filter(|&b| b == b'.').count() == 1 => {
                let n: f64 = number.parse().map_err(|_| invalid())?;
                let bytes = (n * multiplier as f64).round();
                if bytes >= u64::MAX as f64 {
                    return Err(too_large());
                }
                bytes as u64
            }
            Err(_) if number.bytes().all(|b| b.is_ascii_digit()) => return Err(too_large()),
            Err(_) => return Err(invalid()),
        };
        Ok(Size(bytes))
    }
}

impl fmt::Display for Size {
    /// The largest binary unit that divides it, else bytes: `64MiB`, `1500B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
            if self.0 != 0 && self.0.is_multiple_of(1 << shift) {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{}B", self.0)
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
        assert_eq!("1.5GiB".parse::<Size>().unwrap(), Size(3 << 29));
        assert_eq!("2 kb".parse::<Size>().unwrap(), Size(2000));
        assert_eq!("1TiB".parse::<Size>().unwrap(), Size(1 << 40));
        for bad in ["", "MiB", "1..5MiB", ".5MiB", "5.MiB", "-1MiB", "1e3", "1 2MiB"] {
            assert!(bad.parse::<Size>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn oversized_sizes_are_errors_not_wraps() {
        for huge in ["99999999999999999999GiB", "99999999999999999999", "16384PiB", "17179869184GiB", "9999999999.5TiB"]
        {
            let e = huge.parse::<Size>();
            assert!(e.is_err(), "{huge:?} gave {e:?}");
        }
        assert!("99999999999999999999GiB".parse::<Size>().unwrap_err().contains("too large"));
    }

    #[test]
    fn sizes_display_in_their_largest_unit() {
        assert_eq!(Size::mib(64).to_string(), "64MiB");
        assert_eq!(Size(1536).to_string(), "1536B");
        assert_eq!(Size(3 << 30).to_string(), "3GiB");
        assert_eq!(Size(0).to_string(), "0B");
    }

    #[test]
    fn durations() {
        assert_eq!("90s".parse::<Dur>().unwrap(), Dur::secs(90));
        assert_eq!("10m".parse::<Dur>().unwrap(), Dur::secs(600));
        assert_eq!("250ms".parse::<Dur>().unwrap(), Dur(Duration::from_millis(250)));
        assert!("soon".parse::<Dur>().is_err());
    }
}
