//! GridFTP control-channel replies (`transfer::gridftp::control`): lines fed one by one to the
//! RFC 959 reply parser, and every reply through the PASV, range-marker and protected-reply
//! (RFC 2228 631/632/633, ADAT) readers.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vws::transfer::gridftp::control::{
    adat_token, b64_decode, parse_227, parse_pasv, parse_range_marker, protected_token, ReplyParser,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut p = ReplyParser::default();
    for line in text.split_inclusive('\n') {
        if let Some(tok) = protected_token(line) {
            let _ = b64_decode(tok);
        }
        let _ = parse_pasv(line);
        match p.push(line) {
            Ok(Some(r)) => {
                let _ = (r.text(), r.class(), r.is_ok(), r.is_preliminary());
                if let Some(t) = adat_token(&r) {
                    let _ = b64_decode(t);
                }
                let _ = parse_227(&r);
                if let Some(ranges) = parse_range_marker(&r) {
                    assert!(ranges.iter().all(|(a, b)| a <= b));
                }
            }
            Ok(None) => {}
            Err(_) => p = ReplyParser::default(),
        }
    }
});
