//! Go's `time.Time.Format` layouts (`2006-01-02T15:04:05Z07:00`), always in UTC: Sprig's
//! `date` and Skaffold's `dateTime` tagger take a Go layout, and kobuild renders times in UTC.

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// The layout elements Go recognises, in the order `time.nextStdChunk` tries them.
#[derive(Clone, Copy)]
enum Std {
    LongMonth,
    Month,
    NumMonth,
    ZeroMonth,
    LongWeekDay,
    WeekDay,
    Day,
    UnderDay,
    ZeroDay,
    UnderYearDay,
    ZeroYearDay,
    Hour,
    Hour12,
    ZeroHour12,
    Minute,
    ZeroMinute,
    Second,
    ZeroSecond,
    LongYear,
    Year,
    PM,
    Pm,
    TZ,
    /// Numeric zone offsets, fixed in UTC: `Z` for the `Z…` forms, zeros for the `-…` ones.
    Literal(&'static str),
    /// `.000`/`,999`: separator, digits, and whether trailing zeros are trimmed.
    Frac(char, usize, bool),
}

fn starts_lower(s: &str) -> bool {
    s.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
}

/// Find the next layout element: (text before it, the element, the rest).
fn next_chunk(layout: &str) -> Option<(&str, Std, &str)> {
    let b = layout.as_bytes();
    for i in 0..b.len() {
        // Every element starts with an ASCII byte; slicing inside a multi-byte character
        // (a layout like `2006年01月`) would panic.
        if !layout.is_char_boundary(i) {
            continue;
        }
        let rest = &layout[i..];
        let hit = |len: usize, std: Std| Some((&layout[..i], std, &layout[i + len..]));
        match b[i] {
            b'J' if rest.starts_with("Jan") => {
                if rest.starts_with("January") {
                    return hit(7, Std::LongMonth);
                }
                if !starts_lower(&rest[3..]) {
                    return hit(3, Std::Month);
                }
            }
            b'M' if rest.starts_with("Mon") => {
                if rest.starts_with("Monday") {
                    return hit(6, Std::LongWeekDay);
                }
                if !starts_lower(&rest[3..]) {
                    return hit(3, Std::WeekDay);
                }
            }
            b'M' if rest.starts_with("MST") => return hit(3, Std::TZ),
            b'0' => {
                if rest.starts_with("002") {
                    return hit(3, Std::ZeroYearDay);
                }
                let std = match b.get(i + 1) {
                    Some(b'1') => Some(Std::ZeroMonth),
                    Some(b'2') => Some(Std::ZeroDay),
                    Some(b'3') => Some(Std::ZeroHour12),
                    Some(b'4') => Some(Std::ZeroMinute),
                    Some(b'5') => Some(Std::ZeroSecond),
                    Some(b'6') => Some(Std::Year),
                    _ => None,
                };
                if let Some(std) = std {
                    return hit(2, std);
                }
            }
            b'1' => {
                if rest.starts_with("15") {
                    return hit(2, Std::Hour);
                }
                return hit(1, Std::NumMonth);
            }
            b'2' => {
                if rest.starts_with("2006") {
                    return hit(4, Std::LongYear);
                }
                return hit(1, Std::Day);
            }
            b'_' => {
                if rest.starts_with("_2006") {
                    // Go reads `_2006` as a literal underscore before the year.
                    return Some((&layout[..i + 1], Std::LongYear, &layout[i + 5..]));
                }
                if rest.starts_with("_2") {
                    return hit(2, Std::UnderDay);
                }
                if rest.starts_with("__2") {
                    return hit(3, Std::UnderYearDay);
                }
            }
            b'3' => return hit(1, Std::Hour12),
            b'4' => return hit(1, Std::Minute),
            b'5' => return hit(1, Std::Second),
            b'P' if rest.starts_with("PM") => return hit(2, Std::PM),
            b'p' if rest.starts_with("pm") => return hit(2, Std::Pm),
            b'-' | b'Z' => {
                let forms = [
                    ("070000", "+000000"),
                    ("07:00:00", "+00:00:00"),
                    ("0700", "+0000"),
                    ("07:00", "+00:00"),
                    ("07", "+00"),
                ];
                for (form, utc) in forms {
                    if rest[1..].starts_with(form) {
                        let text = if b[i] == b'Z' { "Z" } else { utc };
                        return hit(1 + form.len(), Std::Literal(text));
                    }
                }
            }
            b'.' | b',' => {
                if let Some(&d @ (b'0' | b'9')) = b.get(i + 1) {
                    let n = b[i + 1..].iter().take_while(|&&c| c == d).count();
                    // Go requires the run of digits not to be followed by another digit.
                    if !b.get(i + 1 + n).is_some_and(u8::is_ascii_digit) {
                        return hit(1 + n, Std::Frac(b[i] as char, n, d == b'9'));
                    }
                }
            }
            _ => {}
        }
    }
    None
}

/// Howard Hinnant's days-to-civil algorithm: (year, month 1-12, day 1-31).
fn civil(days: i64) -> (i64, usize, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m as usize, d)
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

/// Format `unix_secs` + `nanos` (UTC) with a Go layout, as `t.UTC().Format(layout)` does.
pub fn format_go_time(unix_secs: i64, nanos: u32, layout: &str) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (year, month, day) = civil(days);
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
    // 1970-01-01 was a Thursday.
    let weekday = (days + 4).rem_euclid(7) as usize;
    let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cumulative[month - 1] + day + i64::from(month > 2 && is_leap(year));
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::new();
    let mut rest = layout;
    while let Some((prefix, std, after)) = next_chunk(rest) {
        out.push_str(prefix);
        let text = match std {
            Std::LongMonth => MONTHS[month - 1].to_string(),
            Std::Month => MONTHS[month - 1][..3].to_string(),
            Std::NumMonth => month.to_string(),
            Std::ZeroMonth => format!("{month:02}"),
            Std::LongWeekDay => DAYS[weekday].to_string(),
            Std::WeekDay => DAYS[weekday][..3].to_string(),
            Std::Day => day.to_string(),
            Std::UnderDay => format!("{day:>2}"),
            Std::ZeroDay => format!("{day:02}"),
            Std::UnderYearDay => format!("{yday:>3}"),
            Std::ZeroYearDay => format!("{yday:03}"),
            Std::Hour => format!("{hour:02}"),
            Std::Hour12 => hour12.to_string(),
            Std::ZeroHour12 => format!("{hour12:02}"),
            Std::Minute => minute.to_string(),
            Std::ZeroMinute => format!("{minute:02}"),
            Std::Second => second.to_string(),
            Std::ZeroSecond => format!("{second:02}"),
            Std::LongYear => format!("{year:04}"),
            Std::Year => format!("{:02}", year.rem_euclid(100)),
            Std::PM => if hour >= 12 { "PM" } else { "AM" }.to_string(),
            Std::Pm => if hour >= 12 { "pm" } else { "am" }.to_string(),
            Std::TZ => "UTC".to_string(),
            Std::Literal(text) => text.to_string(),
            Std::Frac(sep, digits, trim) => {
                let all = format!("{nanos:09}");
                let mut frac = all[..digits.min(9)].to_string();
                if trim {
                    frac.truncate(frac.trim_end_matches('0').len());
                }
                if frac.is_empty() {
                    String::new()
                } else {
                    format!("{sep}{frac}")
                }
            }
        };
        out.push_str(&text);
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::format_go_time;

    // 2009-11-10T23:00:00Z, a Tuesday: the Go playground's clock.
    const T: i64 = 1_257_894_000;

    #[test]
    fn go_reference_layouts() {
        let cases = [
            ("2006-01-02T15:04:05Z07:00", "2009-11-10T23:00:00Z"),
            ("2006-01-02", "2009-11-10"),
            ("2006-01-02_15-04-05.999_MST", "2009-11-10_23-00-00_UTC"),
            (
                "Mon Jan _2 15:04:05 MST 2006",
                "Tue Nov 10 23:00:00 UTC 2009",
            ),
            (
                "Monday, 02-Jan-06 15:04:05 MST",
                "Tuesday, 10-Nov-09 23:00:00 UTC",
            ),
            ("January 2, 2006 3:04PM", "November 10, 2009 11:00PM"),
            ("-0700 -07:00 Z0700", "+0000 +00:00 Z"),
            ("002 __2", "314 314"),
            ("20060102150405", "20091110230000"),
            ("Janet", "Janet"),
            ("v1.0", "v11.0"),
        ];
        for (layout, want) in cases {
            assert_eq!(format_go_time(T, 0, layout), want, "{layout}");
        }
    }

    #[test]
    fn fractions_and_epoch_edges() {
        assert_eq!(format_go_time(T, 120_000_000, "05.000"), "00.120");
        assert_eq!(format_go_time(T, 120_000_000, "05.999"), "00.12");
        assert_eq!(format_go_time(T, 0, "05.999"), "00");
        assert_eq!(
            format_go_time(0, 0, "2006-01-02 15:04:05 Mon"),
            "1970-01-01 00:00:00 Thu"
        );
        assert_eq!(
            format_go_time(-62_135_596_800, 0, "2006-01-02T15:04:05Z07:00"),
            "0001-01-01T00:00:00Z"
        );
        assert_eq!(
            format_go_time(951_782_400, 0, "2006-01-02 002"),
            "2000-02-29 060"
        );
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/template.rs`): layouts with non-ASCII text
    /// panicked slicing inside a character.
    #[test]
    fn non_ascii_layouts() {
        assert_eq!(
            format_go_time(T, 0, "2006年01月02日 Mon ӧ0 Jan _2 PM"),
            "2009年11月10日 Tue ӧ0 Nov 10 PM"
        );
        assert_eq!(format_go_time(T, 0, "é"), "é");
    }
}
