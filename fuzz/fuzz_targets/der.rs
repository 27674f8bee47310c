//! The DER reader and what is built on it (`security::{der, x509, proxy, voms}`): arbitrary
//! bytes as a DER tree (every primitive reader on every node, and re-encoding reproduces what
//! was read), as a proxyCertInfo value (RFC 3820 and draft layouts), as a VOMS AC sequence and a
//! single attribute certificate, and as an X.509 certificate whose extensions, names and times
//! go through vws' helpers.
#![no_main]
use libfuzzer_sys::fuzz_target;
use openssl::x509::X509;
use vws::security::der::{self, Tlv};
use vws::security::{proxy, voms, x509 as xu};

fn walk(t: &Tlv, depth: usize) {
    assert_eq!(der::encode(t.tag, t.content), t.raw, "re-encoding differs from the input");
    let _ = t.oid();
    let _ = t.small_uint();
    let _ = t.boolean();
    let _ = der::time_to_unix(t);
    let _ = der::oid_to_string(t.content);
    if depth < 32 {
        if let Ok(kids) = t.children() {
            for k in &kids {
                walk(k, depth + 1);
            }
        }
    }
}

fuzz_target!(init: { vws_fuzz::pki(); }, |data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else { return };
    match mode % 4 {
        0 => {
            let mut rest = input;
            while let Ok((t, r)) = Tlv::read(rest) {
                walk(&t, 0);
                rest = r;
            }
        }
        1 => {
            let _ = proxy::fuzz_parse_pci(input, false);
            let _ = proxy::fuzz_parse_pci(input, true);
        }
        2 => {
            if let Ok(acs) = voms::parse_ac_seq(input) {
                for ac in &acs {
                    let _ = format!("{ac:?}");
                }
            }
            let _ = voms::parse_ac(input);
        }
        _ => {
            let Ok(cert) = X509::from_der(input) else { return };
            let _ = xu::subject(&cert);
            let _ = xu::issuer(&cert);
            let _ = xu::serial_hex(&cert);
            let _ = xu::self_issued(&cert);
            let _ = xu::asn1_to_unix_checked(cert.not_after());
            if let Ok(rdns) = xu::rdns(cert.subject_name()) {
                for r in &rdns {
                    let _ = xu::single_cn(r);
                }
                if let Ok(n) = xu::name_from_rdns(&rdns) {
                    let _ = xu::dn_string(&n);
                }
            }
            if let Ok(exts) = xu::extensions(&cert) {
                let _ = xu::basic_constraints(&exts);
                let _ = xu::key_usage_digital_signature(&exts);
                let _ = xu::is_ca(&exts);
                for e in &exts {
                    let _ = proxy::fuzz_parse_pci(&e.value, false);
                    let _ = voms::parse_ac_seq(&e.value);
                }
            }
            let _ = vws::security::validate_chain(&[cert], &vws_fuzz::pki().trust.cert_dir);
        }
    }
});
