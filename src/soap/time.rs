//! xsd:dateTime handling for lifetimes: UTC, millisecond precision, `Z` suffix, as GT 4.0 writes.

use time::OffsetDateTime;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// `2026-11-26T12:20:39.884Z`
pub fn format_ms(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Parse an xsd:dateTime (XML Schema 1.0 lexical form: `-?YYYY-MM-DDThh:mm:ss(.s+)?`, then `Z`,
/// `±hh:mm` up to 14:00, or nothing = UTC as GT 4.0 assumes; `24:00:00` is the next midnight).
pub fn parse_ms(s: &str) -> Option<i64> {
    let s = s.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'));
    let b = s.as_bytes();
    let mut i = 0;
    let neg = b.first() == Some(&b'-');
    if neg {
        i += 1;
    }
    let digits = |i: &mut usize, min: usize, max: usize| -> Option<i64> {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() && *i - start < max {
            *i += 1;
        }
        if *i - start < min {
            return None;
        }
        s[start..*i].parse().ok()
    };
    let expect = |i: &mut usize, c: u8| -> Option<()> { (b.get(*i) == Some(&c)).then(|| *i += 1) };
    let ystart = i;
    let year = digits(&mut i, 4, 9)?;
    if (i - ystart > 4 && b[ystart] == b'0') || year == 0 {
        return None;
    }
    let year = if neg { -year } else { year };
    expect(&mut i, b'-')?;
    let month = digits(&mut i, 2, 2)?;
    expect(&mut i, b'-')?;
    let day = digits(&mut i, 2, 2)?;
    expect(&mut i, b'T')?;
    let hour = digits(&mut i, 2, 2)?;
    expect(&mut i, b':')?;
    let minute = digits(&mut i, 2, 2)?;
    expect(&mut i, b':')?;
    let second = digits(&mut i, 2, 2)?;
    let mut frac_ms = 0i64;
    let mut frac_zero = true;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let f = &s[start..i];
        frac_zero = f.bytes().all(|c| c == b'0');
        let ms: String = f.chars().chain("000".chars()).take(3).collect();
        frac_ms = ms.parse().ok()?;
    }
    let offset_min = match b.get(i) {
        None => 0,
        Some(b'Z') => {
            i += 1;
            0
        }
        Some(&c @ (b'+' | b'-')) => {
            i += 1;
            let h = digits(&mut i, 2, 2)?;
            expect(&mut i, b':')?;
            let m = digits(&mut i, 2, 2)?;
            if m > 59 || h > 14 || (h == 14 && m > 0) {
                return None;
            }
            let o = h * 60 + m;
            if c == b'-' {
                -o
            } else {
                o
            }
        }
        Some(_) => return None,
    };
    if i != b.len() || minute > 59 || second > 59 {
        return None;
    }
    let end_of_day = hour == 24;
    if hour > 24 || (end_of_day && (minute != 0 || second != 0 || !frac_zero)) {
        return None;
    }
    let month = time::Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date = time::Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?).ok()?;
    let days =
        (date.to_julian_day() - time::Date::from_calendar_date(1970, time::Month::January, 1).ok()?.to_julian_day()) as i64;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    Some(secs * 1000 + frac_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn round_trip_and_zones() {
        let ms = 1_795_000_000_123;
        assert_eq!(parse_ms(&format_ms(ms)), Some(ms));
        assert_eq!(parse_ms("2026-11-26T13:20:39.731Z"), parse_ms("2026-11-26T14:20:39.731+01:00"));
        assert_eq!(parse_ms("2026-11-26T13:20:39.731"), parse_ms("2026-11-26T13:20:39.731Z"));
        assert_eq!(parse_ms("not a date"), None);
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        // xs:dateTime edge cases: end-of-day midnight, long years, strict separators and zones.
        assert_eq!(parse_ms("1970-01-01T24:00:00Z"), Some(86_400_000));
        assert!(parse_ms("12026-01-01T00:00:00Z").is_some());
        assert_eq!(parse_ms("2026-11-26 13:20:39Z"), None);
        assert_eq!(parse_ms("2026-11-26t13:20:39z"), None);
        assert_eq!(parse_ms("2026-11-26T13:20:39+15:00"), None);
        assert_eq!(parse_ms("2026-11-26T24:00:01Z"), None);
        assert_eq!(parse_ms("0000-01-01T00:00:00Z"), None);
        assert_eq!(parse_ms("2026-02-30T00:00:00Z"), None);
    }
}
