//! Object metadata the server owns: uids, timestamps, names, and the
//! human-readable ages shown in tables.

use serde_json::Value;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A random RFC 4122 version-4 UUID.
pub fn new_uid() -> String {
    let hi = random_u64();
    let lo = random_u64();
    let hi = (hi & !0xF000) | 0x4000; // version 4
    let lo = (lo & !(0xC000 << 48)) | (0x8000 << 48); // variant 10
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xFFFF,
        hi & 0xFFFF,
        lo >> 48,
        lo & 0xFFFF_FFFF_FFFF
    )
}

/// 64 random bits: std's per-process random SipHash keys over a counter
/// and the clock.
pub fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

/// The 5 random lowercase alphanumerics `generateName` appends, drawn
/// from the same alphabet Kubernetes uses (no vowels, no look-alikes).
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bits = random_u64();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(bits % ALPHABET.len() as u64) as usize] as char;
            bits /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// A name from a `generateName` prefix, as kube-apiserver's
/// `SimpleNameGenerator` makes it: a prefix longer than 58 characters is
/// cut to 58 so that, with the 5 random characters, the name stays within
/// the 63 a label-shaped name may have.
pub fn generate_name(prefix: &str) -> String {
    const MAX_PREFIX: usize = 63 - 5;
    let mut cut = prefix.len().min(MAX_PREFIX);
    while !prefix.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{}", &prefix[..cut], name_suffix())
}

/// Now, as an RFC 3339 timestamp with second precision (`metav1.Time`).
pub fn now_rfc3339() -> String {
    format_rfc3339(SystemTime::now())
}

/// Now, with microseconds (`metav1.MicroTime`, used by Leases and Events).
pub fn now_rfc3339_micros() -> String {
    let now = SystemTime::now();
    let secs = format_rfc3339(now);
    let micros = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_micros();
    format!("{}.{micros:06}Z", secs.trim_end_matches('Z'))
}

pub fn format_rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (h, mi, se) = (n(11..13)?, n(14..16)?, n(17..19)?);
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

// Howard Hinnant's civil-calendar algorithms.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// kubectl's short duration: `42s`, `5m10s`, `3h`, `2d4h`, `400d`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=599 => {
            let (m, r) = (s / 60, s % 60);
            if r == 0 {
                format!("{m}m")
            } else {
                format!("{m}m{r}s")
            }
        }
        600..=10_799 => format!("{}m", s / 60),
        10_800..=28_799 => {
            let (h, m) = (s / 3600, (s / 60) % 60);
            if m == 0 {
                format!("{h}h")
            } else {
                format!("{h}h{m}m")
            }
        }
        28_800..=172_799 => format!("{}h", s / 3600),
        172_800..=691_199 => {
            let (d, h) = (s / 86_400, (s / 3600) % 24);
            if h == 0 {
                format!("{d}d")
            } else {
                format!("{d}d{h}h")
            }
        }
        691_200..=31_535_999 => format!("{}d", s / 86_400),
        _ => {
            let (y, d) = (s / 31_536_000, (s / 86_400) % 365);
            if y < 8 && d > 0 {
                format!("{y}y{d}d")
            } else {
                format!("{y}y")
            }
        }
    }
}

/// The age of a timestamp field, as kubectl prints it; `<unknown>` when
/// missing.
pub fn age(timestamp: Option<&Value>) -> String {
    timestamp
        .and_then(Value::as_str)
        .and_then(parse_rfc3339)
        .map(|t| human_duration(SystemTime::now().duration_since(t).unwrap_or_default()))
        .unwrap_or_else(|| "<unknown>".into())
}

/// A DNS-1123 subdomain: what most object names must be.
pub fn is_dns1123_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// A DNS-1123 label: namespace names.
pub fn is_dns1123_label(name: &str) -> bool {
    name.len() <= 63 && !name.contains('.') && is_dns1123_subdomain(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_well_formed_and_distinct() {
        let a = new_uid();
        let b = new_uid();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4", "{a}");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
        assert_eq!(name_suffix().len(), 5);
        let long = "p".repeat(80);
        let name = generate_name(&long);
        assert_eq!(name.len(), 63);
        assert!(name.starts_with(&"p".repeat(58)));
        assert_eq!(generate_name("web-").len(), 9);
        assert!(generate_name(&"é".repeat(40)).len() <= 63);
    }

    #[test]
    fn timestamps_round_trip() {
        for s in [
            "1970-01-01T00:00:00Z",
            "2000-02-29T12:34:56Z",
            "2026-11-22T23:59:59Z",
        ] {
            assert_eq!(format_rfc3339(parse_rfc3339(s).unwrap()), s);
        }
        assert_eq!(
            parse_rfc3339("2026-11-22T10:00:00.123456+01:00"),
            parse_rfc3339("2026-11-22T09:00:00Z")
        );
        assert!(parse_rfc3339("yesterday").is_none());
        assert!(now_rfc3339_micros().ends_with('Z'));
    }

    #[test]
    fn durations_read_like_kubectl() {
        let cases = [
            (5, "5s"),
            (119, "119s"),
            (130, "2m10s"),
            (1200, "20m"),
            (3 * 3600 + 60, "3h1m"),
            (10 * 3600, "10h"),
            (2 * 86_400 + 3600, "2d1h"),
            (30 * 86_400, "30d"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(Duration::from_secs(secs)), want);
        }
    }

    #[test]
    fn names() {
        assert!(is_dns1123_subdomain("web-1.example"));
        assert!(!is_dns1123_subdomain("Web"));
        assert!(!is_dns1123_subdomain("-a"));
        assert!(!is_dns1123_label("a.b"));
        assert!(is_dns1123_label("kube-system"));
    }
}
