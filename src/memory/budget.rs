//! Memory budgets: "24GiB", "512MiB", "1.5GB", "90%", or plain bytes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The most device memory a run may reserve.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Budget {
    /// An absolute cap, in bytes.
    Bytes(u64),
    /// A fraction in (0, 1] of the device's total memory.
    Fraction(f64),
}

const FORMS: &str = "accepted forms: a byte count (1073741824), a size with a unit (512MiB, 24GiB, 1.5GB; units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB) or a percentage of device memory (90%)";

impl Budget {
    /// Parses a budget as `--budget` takes it: a plain byte count, a size with a
    /// decimal (KB, MB, GB, TB) or binary (KiB, MiB, GiB, TiB) unit, or a
    /// percentage in (0, 100] of device memory. Units are case-insensitive,
    /// spaces around the number and unit are ignored, and sizes are rounded to
    /// whole bytes. Errors with [`Error::InvalidArgument`]
    /// listing the accepted forms for anything else (zero, negatives, exponents,
    /// unknown units).
    ///
    /// ```
    /// use headroom::memory::Budget;
    ///
    /// assert_eq!(Budget::parse("512MiB").unwrap(), Budget::Bytes(512 << 20));
    /// assert_eq!(Budget::parse("1.5GB").unwrap(), Budget::Bytes(1_500_000_000));
    /// assert_eq!(Budget::parse("50%").unwrap(), Budget::Fraction(0.5));
    /// assert!(Budget::parse("12 parsecs").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<Budget> {
        let bad = |why: &str| Error::invalid("budget", format!("'{s}' {why}; {FORMS}"));
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| bad("is not a number"))?;
            if !v.is_finite() || v <= 0.0 || v > 100.0 {
                return Err(bad("must be a percentage above 0 and at most 100"));
            }
            return Ok(Budget::Fraction(v / 100.0));
        }
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+')))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let unit = unit.trim().to_ascii_lowercase();
        let mult: f64 = match unit.as_str() {
            "" | "b" => 1.0,
            "kb" => 1e3,
            "mb" => 1e6,
            "gb" => 1e9,
            "tb" => 1e12,
            "kib" => 1024.0,
            "mib" => (1u64 << 20) as f64,
            "gib" => (1u64 << 30) as f64,
            "tib" => (1u64 << 40) as f64,
            _ => return Err(bad("has an unknown unit")),
        };
        let v: f64 = num.trim().parse().map_err(|_| bad("is not a number"))?;
        if !v.is_finite() || v <= 0.0 {
            return Err(bad("must be a positive size"));
        }
        let bytes = (v * mult).round();
        if bytes < 1.0 || bytes > u64::MAX as f64 {
            return Err(bad("is out of range"));
        }
        Ok(Budget::Bytes(bytes as u64))
    }

    /// The budget in bytes on a device with `total` bytes of memory.
    pub fn resolve(self, total: u64) -> u64 {
        match self {
            Budget::Bytes(b) => b,
            Budget::Fraction(f) => (total as f64 * f) as u64,
        }
    }
}

impl FromStr for Budget {
    type Err = Error;
    fn from_str(s: &str) -> Result<Budget> {
        Budget::parse(s)
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Budget::Bytes(b) => f.write_str(&format_bytes(*b)),
            // Rounded so "57%" prints as 57%, not 56.99999999999999%.
            Budget::Fraction(x) => write!(f, "{}%", (x * 1e6).round() / 1e4),
        }
    }
}

/// Bytes in binary units, as memory tools print them ("1.50 GiB").
///
/// Below 1 KiB the exact count is printed; above, two decimals of the largest
/// binary unit (up to TiB) that keeps the number at least 1.
///
/// ```
/// use headroom::memory::format_bytes;
///
/// assert_eq!(format_bytes(512), "512 B");
/// assert_eq!(format_bytes(3 << 29), "1.50 GiB");
/// ```
pub fn format_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_form() {
        assert_eq!(Budget::parse("24GiB").unwrap(), Budget::Bytes(24 << 30));
        assert_eq!(Budget::parse("512MiB").unwrap(), Budget::Bytes(512 << 20));
        assert_eq!(
            Budget::parse("1.5GB").unwrap(),
            Budget::Bytes(1_500_000_000)
        );
        assert_eq!(Budget::parse("90%").unwrap(), Budget::Fraction(0.9));
        assert_eq!(Budget::parse("1048576").unwrap(), Budget::Bytes(1 << 20));
        assert_eq!(Budget::parse(" 2 kib ").unwrap(), Budget::Bytes(2048));
        assert_eq!(Budget::parse("100%").unwrap(), Budget::Fraction(1.0));
    }

    #[test]
    fn rejects_garbage_with_the_accepted_forms() {
        for s in [
            "",
            "lots",
            "0",
            "0GiB",
            "-5GiB",
            "101%",
            "0%",
            "-3%",
            "12 parsecs",
            "1e3",
            "NaN",
            "inf%",
            "1.2.3GB",
        ] {
            let e = Budget::parse(s).unwrap_err().to_string();
            assert!(e.contains("accepted forms"), "{s}: {e}");
        }
    }

    #[test]
    fn fraction_resolves_against_device_memory() {
        assert_eq!(Budget::Fraction(0.5).resolve(1000), 500);
        assert_eq!(Budget::Bytes(7).resolve(1000), 7);
    }

    #[test]
    fn formats_binary_units() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(3 << 20), "3.00 MiB");
        assert_eq!(format_bytes(3 << 29), "1.50 GiB");
    }
}
