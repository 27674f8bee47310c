//! xsd:dateTime handling for lifetimes: UTC, millisecond precision, `Z` suffix, as GT 4.0 writes.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
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

/// Parse an xsd:dateTime. A value without a zone is taken as UTC (GT 4.0 does the same).
pub fn parse_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let has_zone = s.ends_with('Z') || {
        let tail = s.rsplit('T').next().unwrap_or("");
        tail.contains('+') || tail.contains('-')
    };
    let owned;
    let s = if has_zone {
        s
    } else {
        owned = format!("{s}Z");
        &owned
    };
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
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
    }
}
