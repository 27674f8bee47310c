//! Benchmark of WS-Security signed messages (GT 4.0 GSI Secure Message): median time of
//! signing (with a prepared `wssec::Signer`, and one-shot `wssec::sign`), `wssec::verify` and
//! the sign+verify round trip over 1000 runs each, with a real
//! proxy credential (goal: round trip ≤ 2 ms; GT 4.0's WS-Security round trip: 182 ms).
//!
//! Run with the test kit's credentials:
//! ```text
//! eval "$(../shared/peers/gsi-gridftp-up.sh target/gsikit-wssec 2815)"
//! cargo run --release --example wssec_bench            # X509_USER_PROXY, X509_CERT_DIR
//! WSSEC_BENCH_DUMP=1 cargo run --release --example wssec_bench   # also print one signed message
//! ```
//! `X509_USER_PROXY` (else the usual Globus places) is the signer, `X509_CERT_DIR` the trust
//! anchors; `X509_VOMS_DIR` enables VOMS when it exists. Each verify uses a fresh message id, so
//! the replay cache accepts it (and grows, as in a server).

use std::time::Instant;

use vws::security::credential::Credential;
use vws::security::wssec::{self, Algorithm, ReplayCache, SignOptions, Signer};
use vws::security::TrustConfig;
use vws::soap::ns;

const RUNS: usize = 1000;

fn request(id: &str) -> String {
    format!(
        "<soapenv:Envelope xmlns:soapenv=\"{}\" xmlns:wsa=\"{}\"><soapenv:Header>\
         <wsa:MessageID soapenv:mustUnderstand=\"0\">{id}</wsa:MessageID>\
         <wsa:To soapenv:mustUnderstand=\"0\">https://127.0.0.1:8443/wsrf/services/WorkspaceService</wsa:To>\
         <wsa:Action soapenv:mustUnderstand=\"0\">{}/GetResourceProperty</wsa:Action>\
         <k:WorkspaceKey xmlns:k=\"{}\" soapenv:mustUnderstand=\"0\">7</k:WorkspaceKey></soapenv:Header>\
         <soapenv:Body><wsrp:GetResourceProperty xmlns:wsrp=\"{}\" xmlns:vws=\"{}\">vws:State</wsrp:GetResourceProperty>\
         </soapenv:Body></soapenv:Envelope>",
        ns::SOAPENV,
        ns::WSA,
        ns::WSRP_ACTION,
        ns::VWS,
        ns::WSRP,
        ns::VWS
    )
}

fn median_us(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

fn main() {
    let cred = Credential::find_user().expect("a proxy (X509_USER_PROXY)");
    let trust = TrustConfig::from_env().expect("trust anchors (X509_CERT_DIR)");
    let replay = ReplayCache::new();
    let key_bits = cred.key.bits();
    if std::env::var_os("WSSEC_BENCH_DUMP").is_some() {
        println!("{}\n", wssec::sign(&request("uuid:dump"), &cred).unwrap());
    }
    println!("signer {} (chain of {}, RSA {key_bits} bits), {RUNS} runs each", cred.identity_dn(), cred.certificates().len());
    println!("{:<52} {:>12} {:>12}", "operation", "median", "p99");
    let signer = Signer::new(&cred).expect("prepare the key");
    for (name, alg) in [("RSA-SHA1 (GT 4.0)", Algorithm::RsaSha1), ("RSA-SHA256", Algorithm::RsaSha256)] {
        let opts = SignOptions { algorithm: alg, ..Default::default() };
        let (mut s, mut v, mut rt, mut once) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..RUNS + 20 {
            let req = request(&format!("uuid:bench-{name}-{i}"));
            let t0 = Instant::now();
            let signed = signer.sign_with(&req, &opts).unwrap();
            let t1 = Instant::now();
            let ok = wssec::verify(signed.as_bytes(), &trust, &replay, wssec::now_ms()).unwrap().expect("signed");
            let t2 = Instant::now();
            let _ = wssec::sign_with(&req, &cred, &opts).unwrap();
            let t3 = Instant::now();
            assert!(ok.caller.dn.is_some());
            if i >= 20 {
                s.push((t1 - t0).as_secs_f64() * 1e6);
                v.push((t2 - t1).as_secs_f64() * 1e6);
                rt.push((t2 - t0).as_secs_f64() * 1e6);
                once.push((t3 - t2).as_secs_f64() * 1e6);
            }
        }
        for (op, d) in [
            ("sign (Signer, key prepared)", s),
            ("sign (one-shot wssec::sign)", once),
            ("verify (incl. chain validation)", v),
            ("round trip (Signer + verify)", rt),
        ] {
            let (m, p) = median_us(d);
            println!("{:<52} {:>9.0} µs {:>9.0} µs", format!("{name} {op}"), m, p);
        }
    }
    println!("goal: round trip ≤ 2000 µs; GT 4.0 WS-Security: 182000 µs");
}
