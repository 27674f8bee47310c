//! A minimal, strict DER reader for the few structures OpenSSL's Rust bindings do not expose:
//! certificate extensions (proxyCertInfo, basicConstraints, keyUsage), X.501 names as RDN lists,
//! and RFC 3281 attribute certificates (VOMS). Only low-tag-number, definite-length encodings are
//! accepted; anything else is an error, so malformed input never parses "partly".

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub struct DerError(pub String);

impl fmt::Display for DerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed DER: {}", self.0)
    }
}

pub type DerResult<T> = Result<T, DerError>;

fn err<T>(m: impl Into<String>) -> DerResult<T> {
    Err(DerError(m.into()))
}

pub const INTEGER: u8 = 0x02;
pub const BIT_STRING: u8 = 0x03;
pub const OCTET_STRING: u8 = 0x04;
pub const OID: u8 = 0x06;
pub const BOOLEAN: u8 = 0x01;
pub const SEQUENCE: u8 = 0x30;
pub const SET: u8 = 0x31;
pub const GENERALIZED_TIME: u8 = 0x18;
pub const UTC_TIME: u8 = 0x17;

/// Context-specific tag number `n`, constructed.
pub const fn ctx_cons(n: u8) -> u8 {
    0xa0 | n
}
/// Context-specific tag number `n`, primitive.
pub const fn ctx_prim(n: u8) -> u8 {
    0x80 | n
}

/// One tag-length-value element.
#[derive(Clone, Copy, Debug)]
pub struct Tlv<'a> {
    pub tag: u8,
    /// The content octets.
    pub content: &'a [u8],
    /// The whole encoding (tag, length and content).
    pub raw: &'a [u8],
}

impl<'a> Tlv<'a> {
    /// Reads one element from the front of `input`, returning it and the rest.
    pub fn read(input: &'a [u8]) -> DerResult<(Tlv<'a>, &'a [u8])> {
        if input.len() < 2 {
            return err("truncated element");
        }
        let tag = input[0];
        if tag & 0x1f == 0x1f {
            return err("high tag numbers are not supported");
        }
        let first = input[1];
        let (len, hdr) = if first < 0x80 {
            (first as usize, 2)
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 {
                return err("indefinite length");
            }
            if n > 4 || input.len() < 2 + n {
                return err("length too long or truncated");
            }
            let mut len = 0usize;
            for b in &input[2..2 + n] {
                len = (len << 8) | *b as usize;
            }
            if len < 0x80 || (n > 1 && input[2] == 0) {
                return err("non-minimal length");
            }
            (len, 2 + n)
        };
        let end = hdr.checked_add(len).ok_or_else(|| DerError("length overflow".into()))?;
        if input.len() < end {
            return err("content truncated");
        }
        Ok((Tlv { tag, content: &input[hdr..end], raw: &input[..end] }, &input[end..]))
    }

    /// Parses exactly one element filling `input`.
    pub fn parse(input: &'a [u8]) -> DerResult<Tlv<'a>> {
        let (t, rest) = Tlv::read(input)?;
        if !rest.is_empty() {
            return err("trailing data");
        }
        Ok(t)
    }

    pub fn expect(self, tag: u8, what: &str) -> DerResult<Tlv<'a>> {
        if self.tag != tag {
            return err(format!("{what}: expected tag 0x{tag:02x}, found 0x{:02x}", self.tag));
        }
        Ok(self)
    }

    /// The children of a constructed element.
    pub fn children(&self) -> DerResult<Vec<Tlv<'a>>> {
        if self.tag & 0x20 == 0 {
            return err(format!("tag 0x{:02x} is not constructed", self.tag));
        }
        let mut out = Vec::new();
        let mut rest = self.content;
        while !rest.is_empty() {
            let (t, r) = Tlv::read(rest)?;
            out.push(t);
            rest = r;
        }
        Ok(out)
    }

    pub fn oid(&self) -> DerResult<String> {
        if self.tag != OID {
            return err("expected an OBJECT IDENTIFIER");
        }
        oid_to_string(self.content)
    }

    /// A non-negative INTEGER that fits in u64.
    pub fn small_uint(&self) -> DerResult<u64> {
        if self.tag != INTEGER || self.content.is_empty() {
            return err("expected an INTEGER");
        }
        if self.content[0] & 0x80 != 0 {
            return err("negative INTEGER");
        }
        let bytes = if self.content[0] == 0 { &self.content[1..] } else { self.content };
        if bytes.len() > 8 {
            return err("INTEGER too large");
        }
        Ok(bytes.iter().fold(0u64, |a, b| (a << 8) | *b as u64))
    }

    pub fn boolean(&self) -> DerResult<bool> {
        if self.tag != BOOLEAN || self.content.len() != 1 {
            return err("expected a BOOLEAN");
        }
        Ok(self.content[0] != 0)
    }
}

/// Dotted-decimal form of an OID's content octets.
pub fn oid_to_string(c: &[u8]) -> DerResult<String> {
    if c.is_empty() {
        return err("empty OID");
    }
    let mut arcs: Vec<u64> = Vec::new();
    let mut v: u64 = 0;
    let mut in_arc = false;
    for &b in c {
        if !in_arc && b == 0x80 {
            return err("non-minimal OID arc");
        }
        if v > (u64::MAX >> 7) {
            return err("OID arc too large");
        }
        v = (v << 7) | (b & 0x7f) as u64;
        in_arc = true;
        if b & 0x80 == 0 {
            arcs.push(v);
            v = 0;
            in_arc = false;
        }
    }
    if in_arc {
        return err("truncated OID");
    }
    let first = arcs[0];
    let (a, b) = if first < 40 {
        (0, first)
    } else if first < 80 {
        (1, first - 40)
    } else {
        (2, first - 80)
    };
    let mut s = format!("{a}.{b}");
    for x in &arcs[1..] {
        s.push('.');
        s.push_str(&x.to_string());
    }
    Ok(s)
}

/// Encodes a length in DER.
pub fn encode_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Wraps `content` in a tag.
pub fn encode(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    encode_len(content.len(), &mut out);
    out.extend_from_slice(content);
    out
}

/// Parses a GeneralizedTime (`YYYYMMDDHHMMSS[.fff]Z`) or UTCTime (`YYMMDDHHMMSSZ`) into Unix seconds.
pub fn time_to_unix(t: &Tlv) -> DerResult<i64> {
    // ASCII only: the fields below are sliced by byte position.
    if !t.content.is_ascii() {
        return err("time is not ASCII");
    }
    let s = std::str::from_utf8(t.content).map_err(|_| DerError("time is not ASCII".into()))?;
    let (year, rest) = match t.tag {
        GENERALIZED_TIME => {
            if s.len() < 15 {
                return err("short GeneralizedTime");
            }
            (num(&s[0..4])?, &s[4..])
        }
        UTC_TIME => {
            if s.len() < 13 {
                return err("short UTCTime");
            }
            let y = num(&s[0..2])?;
            (if y >= 50 { 1900 + y } else { 2000 + y }, &s[2..])
        }
        _ => return err("expected a time"),
    };
    if !rest.ends_with('Z') {
        return err("time is not in UTC (Z)");
    }
    let month = num(&rest[0..2])?;
    let day = num(&rest[2..4])?;
    let hour = num(&rest[4..6])?;
    let min = num(&rest[6..8])?;
    let sec = num(&rest[8..10])?;
    let frac = &rest[10..rest.len() - 1];
    if !(frac.is_empty() || (frac.starts_with('.') && frac.len() > 1 && frac[1..].bytes().all(|b| b.is_ascii_digit()))) {
        return err("bad time fraction");
    }
    let month = time::Month::try_from(month as u8).map_err(|_| DerError("bad month".into()))?;
    let date = time::Date::from_calendar_date(year as i32, month, day as u8).map_err(|_| DerError("bad date".into()))?;
    let tm = time::Time::from_hms(hour as u8, min as u8, sec as u8).map_err(|_| DerError("bad time of day".into()))?;
    Ok(time::PrimitiveDateTime::new(date, tm).assume_utc().unix_timestamp())
}

fn num(s: &str) -> DerResult<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return err(format!("bad number {s:?}"));
    }
    s.parse().map_err(|_| DerError("bad number".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lengths_and_oids() {
        // proxyCertInfo of a limited RFC proxy, as the fact sheet shows it
        let v = [0x30, 0x0F, 0x30, 0x0D, 0x06, 0x0B, 0x2B, 0x06, 0x01, 0x04, 0x01, 0x9B, 0x50, 0x01, 0x01, 0x01, 0x09];
        let t = Tlv::parse(&v).unwrap();
        let kids = t.children().unwrap();
        assert_eq!(kids.len(), 1);
        let pol = kids[0].children().unwrap();
        assert_eq!(pol[0].oid().unwrap(), "1.3.6.1.4.1.3536.1.1.1.9");
        assert!(Tlv::parse(&[0x30, 0x80, 0, 0]).is_err(), "indefinite length refused");
        assert!(Tlv::parse(&[0x30, 0x81, 0x05, 0, 0, 0, 0, 0]).is_err(), "non-minimal length refused");
        assert!(Tlv::parse(&[0x30, 0x03, 0x02, 0x01]).is_err(), "truncated refused");
        assert!(Tlv::parse(&[0x04, 0x00, 0x00]).is_err(), "trailing data refused");
        let long = encode(OCTET_STRING, &[7u8; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(Tlv::parse(&long).unwrap().content.len(), 300);
    }

    #[test]
    fn times() {
        let g = encode(GENERALIZED_TIME, b"20261126124326Z");
        assert_eq!(time_to_unix(&Tlv::parse(&g).unwrap()).unwrap(), 1795697006);
        let u = encode(UTC_TIME, b"261126124326Z");
        assert_eq!(time_to_unix(&Tlv::parse(&u).unwrap()).unwrap(), 1795697006);
        let bad = encode(GENERALIZED_TIME, b"20261126124326+0100");
        assert!(time_to_unix(&Tlv::parse(&bad).unwrap()).is_err());
    }

    /// Found while writing the fuzz target `der`: a multi-byte UTF-8 character across a field
    /// boundary made the byte-position slicing panic.
    #[test]
    fn non_ascii_times_are_errors() {
        for (tag, content) in [
            (GENERALIZED_TIME, "203\u{20ac}0101000000Z"),
            (GENERALIZED_TIME, "2026\u{e9}101000000Z"),
            (UTC_TIME, "2\u{e9}0101000000Z"),
            (UTC_TIME, "260101000000\u{e9}Z"),
        ] {
            let e = encode(tag, content.as_bytes());
            assert_eq!(time_to_unix(&Tlv::parse(&e).unwrap()).unwrap_err().0, "time is not ASCII");
        }
    }
}
