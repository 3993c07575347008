//! Human-friendly units used in task and engine settings: durations such as `"10s"` or
//! `"250ms"`, and byte sizes such as `"8MiB"`.
//!
//! Parsing is strict and errors say what was expected, so a config error can name the key and
//! the problem in one line. Not a general-purpose unit library.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as a number and a unit: `ms`, `s`, `m` or `h` (`"1.5s"`, `"250ms"`, `"0s"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{s:?} has no unit (use ms, s, m or h)"))?;
        let (number, unit) = s.split_at(split);
        let value: f64 =
            number.parse().map_err(|_| format!("{s:?} is not a duration like \"10s\" or \"250ms\""))?;
        let scale = match unit.trim() {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("unknown duration unit {other:?} (use ms, s, m or h)")),
        };
        let secs = value * scale;
        if !secs.is_finite() || secs > 1e9 {
            return Err(format!("{s:?} is out of range"));
        }
        Ok(HumanDuration(Duration::from_secs_f64(secs)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 == 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

/// A byte size: a number with an optional unit `B`, `KB`, `KiB`, `MB`, `MiB`, `GB`, `GiB`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let value: f64 = number.parse().map_err(|_| format!("{s:?} is not a size like \"8MiB\""))?;
        let scale: f64 = match unit.trim() {
            "" | "B" => 1.0,
            "KB" | "kB" => 1e3,
            "KiB" => 1024.0,
            "MB" => 1e6,
            "MiB" => 1024.0 * 1024.0,
            "GB" => 1e9,
            "GiB" => 1024.0 * 1024.0 * 1024.0,
            other => return Err(format!("unknown size unit {other:?} (use B, KB, KiB, MB, MiB, GB or GiB)")),
        };
        let bytes = value * scale;
        if !bytes.is_finite() || bytes > u64::MAX as f64 {
            return Err(format!("{s:?} is out of range"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}B", self.0)
    }
}

macro_rules! serde_via_str {
    ($ty:ty, $what:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}

serde_via_str!(HumanDuration, "duration");
serde_via_str!(ByteSize, "size");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!("10s".parse::<HumanDuration>().unwrap().0, Duration::from_secs(10));
        assert_eq!("250ms".parse::<HumanDuration>().unwrap().0, Duration::from_millis(250));
        assert_eq!("1.5m".parse::<HumanDuration>().unwrap().0, Duration::from_secs(90));
        assert_eq!("0s".parse::<HumanDuration>().unwrap().0, Duration::ZERO);
        assert!("10".parse::<HumanDuration>().unwrap_err().contains("no unit"));
        assert!("10 parsecs".parse::<HumanDuration>().unwrap_err().contains("unit"));
        assert!("s".parse::<HumanDuration>().is_err());
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!("8MiB".parse::<ByteSize>().unwrap().0, 8 * 1024 * 1024);
        assert_eq!("100".parse::<ByteSize>().unwrap().0, 100);
        assert_eq!("2KB".parse::<ByteSize>().unwrap().0, 2000);
        assert!("8 furlongs".parse::<ByteSize>().is_err());
    }

    #[test]
    fn display_round_trips() {
        for s in ["10s", "250ms", "0s"] {
            let d: HumanDuration = s.parse().unwrap();
            assert_eq!(d.to_string(), s);
        }
    }
}
