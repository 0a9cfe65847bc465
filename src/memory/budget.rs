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

/// The smallest budget that can hold anything: the caching allocator reserves
/// device memory in segments of at least this size (2 MiB).
pub const MIN_BUDGET: u64 = crate::memory::caching::SMALL_BUFFER;

impl Budget {
    /// Parses a budget as `--budget` takes it: a plain byte count, a size with a
    /// decimal (KB, MB, GB, TB) or binary (KiB, MiB, GiB, TiB) unit, or a
    /// percentage in (0, 100] of device memory. Units are case-insensitive,
    /// spaces around the number and unit are ignored, and sizes are rounded to
    /// whole bytes. Errors with [`Error::InvalidArgument`] that say what is
    /// wrong (an exponent, text before the number or after the unit, an
    /// unknown unit, a size below [`MIN_BUDGET`] or beyond 16 EiB) and list the
    /// accepted forms.
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
        let bad = |why: String| Error::invalid("budget", format!("'{s}' {why}; {FORMS}"));
        let t = s.trim();
        if t.is_empty() {
            return Err(bad("is empty".into()));
        }
        let numeric = |c: char| c.is_ascii_digit() || c == '.';
        let start = t.find(numeric).unwrap_or(t.len());
        if start > 0 {
            let lead = &t[..start];
            return Err(bad(if lead == "-" || lead == "+" {
                "must be a positive size without a sign".into()
            } else {
                format!("has '{lead}' before the number")
            }));
        }
        let end = t.find(|c: char| !numeric(c)).unwrap_or(t.len());
        let (num, rest) = t.split_at(end);
        let rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('%') {
            if !after.trim().is_empty() {
                return Err(bad(format!("has '{}' after the %", after.trim())));
            }
            let v: f64 = num
                .parse()
                .map_err(|_| bad(format!("'{num}' is not a number")))?;
            if !v.is_finite() || v <= 0.0 || v > 100.0 {
                return Err(bad("must be a percentage above 0 and at most 100".into()));
            }
            return Ok(Budget::Fraction(v / 100.0));
        }
        if rest.starts_with(['e', 'E'])
            && rest[1..].starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+')
        {
            return Err(bad(
                "uses an exponent, which is not accepted (it reads too easily as a unit); write the number out, as in 1000GiB or 2.5TB".into(),
            ));
        }
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let (unit, junk) = rest.split_at(unit_len);
        if !junk.trim().is_empty() {
            return Err(bad(format!("has '{}' after the size", junk.trim())));
        }
        let mult: u128 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            other => return Err(bad(format!("has the unknown unit '{other}'"))),
        };
        // Whole numbers exactly (2^64 must not round to a valid u64); fractions
        // through f64, which is exact enough for a memory size.
        let bytes: u128 = if num.contains('.') {
            let v: f64 = num
                .parse()
                .map_err(|_| bad(format!("'{num}' is not a number")))?;
            let b = (v * mult as f64).round();
            if b >= u64::MAX as f64 {
                u128::MAX
            } else {
                b as u128
            }
        } else {
            num.parse::<u128>()
                .map_or(u128::MAX, |n| n.saturating_mul(mult))
        };
        if bytes == 0 {
            return Err(bad("must be a positive size".into()));
        }
        if bytes > u64::MAX as u128 {
            return Err(bad("is beyond 16 EiB, more than any device holds".into()));
        }
        let bytes = bytes as u64;
        if bytes < MIN_BUDGET {
            return Err(bad(format!(
                "is {}, below 2 MiB: the allocator reserves device memory in segments of at least 2 MiB, so such a budget could not hold even one tensor",
                format_bytes(bytes)
            )));
        }
        Ok(Budget::Bytes(bytes))
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
        assert_eq!(Budget::parse("2097152").unwrap(), Budget::Bytes(2 << 20));
        assert_eq!(Budget::parse(" 2048 kib ").unwrap(), Budget::Bytes(2 << 20));
        assert_eq!(Budget::parse("1000GiB").unwrap(), Budget::Bytes(1000 << 30));
        assert_eq!(Budget::parse("12.5%").unwrap(), Budget::Fraction(0.125));
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
    fn says_what_is_wrong() {
        for (s, why) in [
            ("1e3GiB", "exponent"),
            ("1E9", "exponent"),
            ("x24GiB", "'x24GiB' has 'x' before the number"),
            ("24GiB please", "'please' after the size"),
            ("24GiB!", "'!' after the size"),
            ("50% of it", "after the %"),
            ("12 parsecs", "unknown unit 'parsecs'"),
            ("-5GiB", "without a sign"),
            ("1MiB", "below 2 MiB"),
            ("1048576", "below 2 MiB"),
            ("18446744073709551616", "beyond 16 EiB"),
            ("20000000TiB", "beyond 16 EiB"),
        ] {
            let e = Budget::parse(s).unwrap_err().to_string();
            assert!(e.contains(why), "{s}: {e}");
        }
        assert_eq!(
            Budget::parse("18446744073709551615").unwrap(),
            Budget::Bytes(u64::MAX)
        );
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
