//! WS-Security header processing (`security::wssec::verify`): an envelope is verified as it
//! came (mode 0), or first signed with the run's proxy (mode 1), or signed and then tampered with by fuzzer-chosen byte edits (mode 2).
//! Every outcome is `Ok(None)` (no Security header), `Ok(Signed)` or a typed `WsSecError`.
//!
//! Input: a mode byte; for mode 2 the envelope up to the first NUL byte, then edits of three
//! bytes each (a 16-bit position, a replacement byte).
#![no_main]
use libfuzzer_sys::fuzz_target;
use vws::security::wssec::{self, ReplayCache, Signer};
use vws_fuzz::pki;

thread_local! {
    static SIGNER: Signer = Signer::new(&pki().cred).expect("the fuzz PKI's proxy signs");
}

fn replay() -> ReplayCache {
    // The whole timeline is acceptable: the window check is exercised, not the clock.
    ReplayCache::with_limits(i64::MAX / 4, i64::MAX / 4, 16)
}

fuzz_target!(init: { pki(); SIGNER.with(|_| ()); }, |data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else { return };
    let k = pki();
    let now_ms = k.now * 1000;
    match mode % 3 {
        0 => {
            let _ = wssec::verify(input, &k.trust, &replay(), now_ms);
        }
        1 => {
            let Ok(env) = std::str::from_utf8(input) else { return };
            let Ok(signed) = SIGNER.with(|s| s.sign(env)) else { return };
            match wssec::verify(signed.as_bytes(), &k.trust, &replay(), now_ms) {
                Ok(Some(v)) => assert!(v.caller.dn.is_some()),
                Ok(None) => panic!("a message we signed has no Security header: {signed}"),
                // Envelopes verify refuses by shape (duplicate Ids, several Bodies…) may still be
                // signable: a refusal is an answer, as long as it is a typed one.
                Err(e) => assert!(!e.kind().is_empty()),
            }
        }
        _ => {
            let (env, edits) = match input.iter().position(|&b| b == 0) {
                Some(i) => (&input[..i], &input[i + 1..]),
                None => (input, &[][..]),
            };
            let Ok(env) = std::str::from_utf8(env) else { return };
            let Ok(signed) = SIGNER.with(|s| s.sign(env)) else { return };
            let mut bytes = signed.into_bytes();
            for e in edits.chunks_exact(3) {
                let pos = u16::from_be_bytes([e[0], e[1]]) as usize % bytes.len();
                bytes[pos] = e[2];
            }
            let _ = wssec::verify(&bytes, &k.trust, &replay(), now_ms);
        }
    }
});
