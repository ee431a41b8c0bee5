//! RFC 3339 timestamps in the form Go's `time.Time` marshals them (RFC3339Nano), without a
//! date library: configs are re-serialized, so the bytes must match Go's.

/// Format Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`. Always UTC: unlike ko, which uses the
/// build host's zone, so the same SOURCE_DATE_EPOCH gives the same digest everywhere.
pub fn format_unix(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Go's zero time, which `created` serializes as when unset.
pub const ZERO: &str = "0001-01-01T00:00:00Z";

// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Re-render an RFC 3339 timestamp as Go would after parsing it: trailing zeros of the
/// fraction dropped, a zero offset written `Z`. Returns `None` if it is not RFC 3339.
pub fn normalize(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| s[r].bytes().all(|c| c.is_ascii_digit());
    if !(digits(0..4)
        && digits(5..7)
        && digits(8..10)
        && digits(11..13)
        && digits(14..16)
        && digits(17..19))
    {
        return None;
    }
    let mut rest = &s[19..];
    let mut frac = "";
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        frac = r[..n].trim_end_matches('0');
        rest = &r[n..];
    }
    let zone = match rest {
        "Z" | "z" => "Z".to_string(),
        z if z.len() == 6
            && matches!(z.as_bytes()[0], b'+' | b'-')
            && z.as_bytes()[3] == b':'
            && digits(s.len() - 5..s.len() - 3)
            && digits(s.len() - 2..s.len()) =>
        {
            if &z[1..] == "00:00" {
                "Z".to_string()
            } else {
                z.to_string()
            }
        }
        _ => return None,
    };
    let frac = if frac.is_empty() {
        String::new()
    } else {
        format!(".{frac}")
    };
    Some(format!("{}T{}{frac}{zone}", &s[..10], &s[11..19]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_epochs() {
        assert_eq!(format_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_unix(5000), "1970-01-01T01:23:20Z");
        assert_eq!(format_unix(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn normalizes_like_go() {
        assert_eq!(
            normalize("2023-01-02T03:04:05Z").unwrap(),
            "2023-01-02T03:04:05Z"
        );
        assert_eq!(
            normalize("2023-01-02T03:04:05.120000Z").unwrap(),
            "2023-01-02T03:04:05.12Z"
        );
        assert_eq!(
            normalize("2023-01-02T03:04:05.000Z").unwrap(),
            "2023-01-02T03:04:05Z"
        );
        assert_eq!(
            normalize("2023-01-02T03:04:05+00:00").unwrap(),
            "2023-01-02T03:04:05Z"
        );
        assert_eq!(
            normalize("2023-01-02T03:04:05-05:00").unwrap(),
            "2023-01-02T03:04:05-05:00"
        );
        assert!(normalize("yesterday").is_none());
        assert!(normalize("2023-01-02T03:04:05").is_none());
    }
}
