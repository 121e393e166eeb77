//! Resource quantities (`500m`, `1Gi`, `1e3`) as kube-apiserver reads and
//! writes them: [`canonical`] is the form a real server stores, so
//! `cpu: 0.5` is kept as `500m` and `memory: 1024Mi` as `1Gi`.
//!
//! The rules are apimachinery's `resource.Quantity`:
//! - a number (sign, digits, at most one `.`) and a suffix: a binary SI
//!   one (`Ki` .. `Ei`), a decimal SI one (`n u m k M G T P E`, or none),
//!   or a decimal exponent (`e3`, `E-6`);
//! - precision finer than a nano unit is rounded up (away from zero), so
//!   asking for a tiny amount still asks for some;
//! - written back in the suffix family it was given in, with the largest
//!   suffix (a multiple of 3 decimal digits, or of 1024) that keeps the
//!   number whole; a binary quantity below 1024, or not whole, is written
//!   as a decimal SI one; zero is `0`.

use std::fmt;

/// Why a string is not a quantity, in apimachinery's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuantityError {
    Format,
    Numeric,
    Suffix,
}

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuantityError::Format => {
                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
            }
            QuantityError::Numeric => "unable to parse numeric part of quantity",
            QuantityError::Suffix => "unable to parse quantity's suffix",
        })
    }
}

impl std::error::Error for QuantityError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    BinarySi,
    DecimalSi,
    DecimalExponent,
}

/// An exact value, `mantissa × 10^exponent`, and the suffix family it was
/// written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantity {
    mantissa: i128,
    exponent: i32,
    format: Format,
}

/// The largest binary quantity apimachinery keeps (2^63 - 1).
const MAX_BINARY: i128 = i64::MAX as i128;

impl Quantity {
    /// Parses a quantity as `resource.ParseQuantity` does.
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(QuantityError::Format);
        }
        let bytes = s.as_bytes();
        let mut i = 0;
        let negative = match bytes[0] {
            b'-' => {
                i = 1;
                true
            }
            b'+' => {
                i = 1;
                false
            }
            _ => false,
        };
        let digits_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let whole = &s[digits_start..i];
        let mut fraction = "";
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            fraction = &s[start..i];
        }
        if whole.is_empty() && fraction.is_empty() {
            return Err(QuantityError::Format);
        }
        let suffix = &s[i..];
        if !suffix
            .bytes()
            .all(|b| b"eEinumkKMGTP+-0123456789".contains(&b))
        {
            return Err(QuantityError::Format);
        }
        let (format, base2, base10) = match suffix {
            "" => (Format::DecimalSi, 0, 0),
            "n" => (Format::DecimalSi, 0, -9),
            "u" => (Format::DecimalSi, 0, -6),
            "m" => (Format::DecimalSi, 0, -3),
            "k" => (Format::DecimalSi, 0, 3),
            "M" => (Format::DecimalSi, 0, 6),
            "G" => (Format::DecimalSi, 0, 9),
            "T" => (Format::DecimalSi, 0, 12),
            "P" => (Format::DecimalSi, 0, 15),
            "E" => (Format::DecimalSi, 0, 18),
            "Ki" => (Format::BinarySi, 10, 0),
            "Mi" => (Format::BinarySi, 20, 0),
            "Gi" => (Format::BinarySi, 30, 0),
            "Ti" => (Format::BinarySi, 40, 0),
            "Pi" => (Format::BinarySi, 50, 0),
            "Ei" => (Format::BinarySi, 60, 0),
            _ => {
                let rest = suffix
                    .strip_prefix('e')
                    .or_else(|| suffix.strip_prefix('E'))
                    .ok_or(QuantityError::Suffix)?;
                let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(QuantityError::Suffix);
                }
                let e: i32 = rest.parse().map_err(|_| QuantityError::Suffix)?;
                (Format::DecimalExponent, 0, e)
            }
        };
        let digits = format!("{whole}{fraction}");
        let digits = digits.trim_start_matches('0');
        let mut mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| QuantityError::Numeric)?
        };
        let mut exponent = base10
            .checked_sub(i32::try_from(fraction.len()).map_err(|_| QuantityError::Numeric)?)
            .ok_or(QuantityError::Numeric)?;
        if base2 > 0 {
            mantissa = mantissa
                .checked_mul(1i128 << base2)
                .ok_or(QuantityError::Numeric)?;
        }
        // Finer than a nano unit: round up, away from zero.
        if mantissa != 0 && exponent < -9 {
            let divisor = pow10(-9 - exponent).ok_or(QuantityError::Numeric)?;
            let rounded = mantissa / divisor + i128::from(mantissa % divisor != 0);
            mantissa = rounded;
            exponent = -9;
        }
        let mut q = Quantity {
            mantissa,
            exponent,
            format,
        };
        if format == Format::BinarySi {
            if q.cmp_int(MAX_BINARY) == Some(std::cmp::Ordering::Greater) {
                q.mantissa = MAX_BINARY;
                q.exponent = 0;
            }
            if q.mantissa != 0 && q.cmp_int(1) == Some(std::cmp::Ordering::Less) {
                q.format = Format::DecimalSi;
            }
        }
        if negative {
            q.mantissa = -q.mantissa;
        }
        Ok(q)
    }

    fn cmp_int(&self, n: i128) -> Option<std::cmp::Ordering> {
        let m = self.mantissa.abs();
        if self.exponent >= 0 {
            Some(m.checked_mul(pow10(self.exponent)?)?.cmp(&n))
        } else {
            let scaled = n.checked_mul(pow10(-self.exponent)?)?;
            Some(m.cmp(&scaled))
        }
    }

    /// The whole value, when it is whole and fits.
    fn as_integer(&self) -> Option<i128> {
        if self.exponent >= 0 {
            self.mantissa.checked_mul(pow10(self.exponent)?)
        } else {
            let d = pow10(-self.exponent)?;
            (self.mantissa % d == 0).then(|| self.mantissa / d)
        }
    }

    /// The form kube-apiserver stores, or `None` if the value is too large
    /// to write back here (the caller keeps what it was given).
    pub fn canonical(&self) -> Option<String> {
        if self.mantissa == 0 {
            return Some("0".into());
        }
        let mut format = self.format;
        if format == Format::BinarySi {
            let small = self.cmp_int(1024) == Some(std::cmp::Ordering::Less);
            if small || self.as_integer().is_none() {
                format = Format::DecimalSi;
            }
        }
        if format == Format::BinarySi {
            let mut n = self.as_integer()?;
            let mut power = 0;
            while n % 1024 == 0 && power < 60 {
                n /= 1024;
                power += 10;
            }
            let suffix = match power {
                0 => "",
                10 => "Ki",
                20 => "Mi",
                30 => "Gi",
                40 => "Ti",
                50 => "Pi",
                _ => "Ei",
            };
            return Some(format!("{n}{suffix}"));
        }
        let (mut m, mut e) = (self.mantissa, self.exponent);
        while m % 10 == 0 {
            m /= 10;
            e += 1;
        }
        let down = e.rem_euclid(3);
        m = m.checked_mul(pow10(down)?)?;
        e -= down;
        let suffix = match (format, e) {
            (_, 0) => String::new(),
            (Format::DecimalExponent, e) => format!("e{e}"),
            (_, -9) => "n".into(),
            (_, -6) => "u".into(),
            (_, -3) => "m".into(),
            (_, 3) => "k".into(),
            (_, 6) => "M".into(),
            (_, 9) => "G".into(),
            (_, 12) => "T".into(),
            (_, 15) => "P".into(),
            (_, 18) => "E".into(),
            (_, e) => format!("e{e}"),
        };
        Some(format!("{m}{suffix}"))
    }
}

fn pow10(n: i32) -> Option<i128> {
    10i128.checked_pow(u32::try_from(n).ok()?)
}

/// The canonical form of a quantity written as a string or a JSON number;
/// `Err` when it is not a quantity, `Ok(None)` when it is one too large to
/// rewrite.
pub fn canonical(value: &serde_json::Value) -> Result<Option<String>, QuantityError> {
    let text = match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return Err(QuantityError::Format),
    };
    Ok(Quantity::parse(&text)?.canonical())
}

/// Whether two values are the same quantity (each a string or a number).
pub fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (canonical(a), canonical(b)) {
        (Ok(Some(x)), Ok(Some(y))) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn c(s: &str) -> String {
        Quantity::parse(s).unwrap().canonical().unwrap()
    }

    #[test]
    fn canonical_forms_as_kube_apiserver_stores_them() {
        for (given, stored) in [
            // Decimal SI: the largest suffix that keeps the number whole.
            ("0.5", "500m"),
            ("1", "1"),
            ("1.0", "1"),
            ("1000m", "1"),
            ("1500m", "1500m"),
            ("1.5", "1500m"),
            ("1500", "1500"),
            ("1000", "1k"),
            ("100000", "100k"),
            ("1000000", "1M"),
            ("1.5k", "1500"),
            ("0.1", "100m"),
            ("100m", "100m"),
            ("250m", "250m"),
            (".5", "500m"),
            ("5.", "5"),
            ("+2", "2"),
            ("-500m", "-500m"),
            ("-0.5", "-500m"),
            ("2G", "2G"),
            ("2000M", "2G"),
            ("1E", "1E"),
            ("1000P", "1E"),
            // Below a nano unit: rounded up, away from zero.
            ("0.0000000001", "1n"),
            ("1.0000000001", "1000000001n"),
            ("-0.0000000001", "-1n"),
            ("1n", "1n"),
            ("1u", "1u"),
            ("1000n", "1u"),
            // Binary SI: whole multiples of 1024 keep their family.
            ("1024Mi", "1Gi"),
            ("1536Mi", "1536Mi"),
            ("0.5Gi", "512Mi"),
            ("1.5Gi", "1536Mi"),
            ("1Ki", "1Ki"),
            ("2048Ki", "2Mi"),
            ("1025Ki", "1025Ki"),
            ("1048576Ki", "1Gi"),
            ("1Ei", "1Ei"),
            // ... and below 1024, or not whole, become decimal SI.
            ("0.5Ki", "512"),
            ("1000Mi", "1000Mi"),
            ("0.1Ki", "102400m"),
            ("0.5Mi", "512Ki"),
            // Decimal exponents.
            ("1e3", "1e3"),
            ("1E3", "1e3"),
            ("1000e0", "1e3"),
            ("1.5e3", "1500"),
            ("12e6", "12e6"),
            ("1e-3", "1e-3"),
            ("5e-1", "500e-3"),
            ("1e+3", "1e3"),
            // Zero, however written.
            ("0", "0"),
            ("0Mi", "0"),
            ("0.0", "0"),
            ("-0", "0"),
            ("0e3", "0"),
        ] {
            assert_eq!(c(given), stored, "{given}");
            // Canonical forms are fixed points.
            assert_eq!(c(stored), stored, "{stored}");
        }
    }

    #[test]
    fn not_quantities_in_apimachinery_words() {
        use QuantityError::*;
        for (bad, why) in [
            ("", Format),
            ("abc", Format),
            ("m", Format),
            ("1.2.3", Format),
            ("1Mb", Format),
            ("1 Gi", Format),
            ("1e3.5", Format),
            ("--1", Format),
            ("1K", Suffix),
            ("1ki", Suffix),
            ("1e", Suffix),
            ("1e+", Suffix),
            ("1234567890123456789012345678901234567890", Numeric),
        ] {
            assert_eq!(Quantity::parse(bad), Err(why), "{bad:?}");
        }
        assert!(
            QuantityError::Format
                .to_string()
                .starts_with("quantities must match the regular expression")
        );
    }

    proptest::proptest! {
        /// Writing a quantity canonically keeps its value, and a canonical
        /// form is its own canonical form.
        #[test]
        fn canonical_keeps_the_value(
            whole in 0u64..10_000_000,
            fraction in proptest::option::of(0u32..1000),
            suffix in proptest::sample::select(vec![
                "", "n", "u", "m", "k", "M", "G", "Ki", "Mi", "Gi", "e3", "e-3",
            ]),
            negative in proptest::bool::ANY,
        ) {
            let text = match fraction {
                Some(f) => format!("{}{whole}.{f:03}{suffix}", if negative { "-" } else { "" }),
                None => format!("{}{whole}{suffix}", if negative { "-" } else { "" }),
            };
            let q = Quantity::parse(&text).unwrap();
            let stored = q.canonical().unwrap();
            let back = Quantity::parse(&stored).unwrap();
            proptest::prop_assert_eq!(back.canonical().unwrap(), stored.clone());
            // Same value: compare at a common exponent.
            let at = |q: Quantity| q.mantissa * 10i128.pow((q.exponent + 9) as u32);
            proptest::prop_assert_eq!(at(back), at(q), "{} -> {}", text, stored);
        }
    }

    #[test]
    fn numbers_and_strings_compare_as_quantities() {
        assert!(same(&json!(0.5), &json!("500m")));
        assert!(same(&json!("1024Mi"), &json!("1Gi")));
        assert!(same(&json!(2), &json!("2")));
        assert!(same(&json!("1000m"), &json!(1)));
        assert!(!same(&json!("1Gi"), &json!("1G")));
        assert!(!same(&json!("abc"), &json!("abc")));
        assert_eq!(canonical(&json!(0.25)).unwrap().as_deref(), Some("250m"));
        assert!(canonical(&json!(true)).is_err());
    }
}
