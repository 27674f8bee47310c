//! GSI proxy chain validation (`security::proxy::validate_chain_at` via `authenticate_at`, with
//! VOMS ACs looked at): chains of up to four proxies minted per input from fuzzer-chosen fields
//! — proxy type (RFC 3820, GT 3/4.0 draft, legacy), proxyCertInfo content (well-formed with a
//! chosen path length and policy, or raw bytes), criticality, the last CN, validity, extra
//! basicConstraints / VOMS AC extensions, the signer and the issuer name — and really signed, so
//! validation runs past the signatures; optionally followed by the CA certificate or raw DER
//! certificates. Every outcome is a `Caller` or a typed `GsiError`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use openssl::x509::{X509Extension, X509};
use vws::security::der::{self, encode};
use vws_fuzz::{cert, ext, name_plus_cn, pki, Bytes, OID_PCI_DRAFT, OID_PCI_RFC, OID_VOMS_ACSEQ};

const LANGS: [&[u8]; 4] = [
    &[0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x15, 0x01],                   // inheritAll
    &[0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x15, 0x02],                   // independent
    &[0x2B, 0x06, 0x01, 0x04, 0x01, 0x9B, 0x50, 0x01, 0x01, 0x01, 0x09], // GT limited
    &[0x2A, 0x03],                                                       // something else
];

fn pci(b: &mut Bytes, draft: bool) -> Vec<u8> {
    let sel = b.u8();
    let mut policy = encode(der::OID, LANGS[sel as usize % 4]);
    if sel & 4 != 0 {
        policy.extend(encode(der::OCTET_STRING, b.chunk()));
    }
    let policy = encode(der::SEQUENCE, &policy);
    let path_len = (sel & 8 != 0).then(|| encode(der::INTEGER, &[b.u8() & 0x7f]));
    let mut content = Vec::new();
    if draft {
        content.extend(policy);
        if let Some(p) = path_len {
            content.extend(encode(der::ctx_cons(1), &p));
        }
    } else {
        content.extend(path_len.unwrap_or_default());
        content.extend(policy);
    }
    encode(der::SEQUENCE, &content)
}

fuzz_target!(init: { pki(); }, |data: &[u8]| {
    let k = pki();
    let mut b = Bytes(data);
    let n = b.u8() % 5;
    let mut chain: Vec<X509> = vec![k.user.clone()];
    for i in 0..n {
        let flags = b.u8();
        let kind = flags % 4;
        let critical = flags & 4 == 0;
        let cn_raw = b.chunk();
        let cn = match (kind, cn_raw.is_empty()) {
            (2, true) => {
                if flags & 8 != 0 {
                    "limited proxy".to_string()
                } else {
                    "proxy".to_string()
                }
            }
            (_, true) => format!("{}", 1000 + i as u32),
            _ => String::from_utf8_lossy(cn_raw).into_owned(),
        };
        let parent = chain.last().unwrap().clone();
        let mut exts: Vec<X509Extension> = Vec::new();
        match kind {
            0 => exts.extend(ext(OID_PCI_RFC, critical, &pci(&mut b, false))),
            1 => exts.extend(ext(OID_PCI_DRAFT, critical, &pci(&mut b, true))),
            2 => {}
            _ => exts.extend(ext(if flags & 8 != 0 { OID_PCI_DRAFT } else { OID_PCI_RFC }, critical, b.chunk())),
        }
        if flags & 16 != 0 {
            exts.extend(ext("2.5.29.19", flags & 1 != 0, b.chunk()));
        }
        if flags & 32 != 0 {
            exts.extend(ext(OID_VOMS_ACSEQ, false, b.chunk()));
        } else {
            exts.extend(ext("2.5.29.15", true, &[0x03, 0x02, 0x05, 0xA0]));
        }
        let Some(subject) = name_plus_cn(parent.subject_name(), &cn) else { return };
        let issuer = if flags & 128 != 0 { k.ca.subject_name() } else { parent.subject_name() };
        // The user certificate's key signs the first proxy; proxies share one key.
        let signer = if chain.len() == 1 && flags & 64 == 0 { &k.user_key } else { &k.proxy_key };
        let before = k.now - (b.u8() as i64) * 600;
        let after = k.now + (b.u8() as i64 - 16) * 600;
        let Some(c) = cert(&subject, issuer, signer, &k.proxy_key, 5000 + b.u16() as u32, before, after, exts) else { return };
        chain.push(c);
    }
    chain.reverse();
    let tail = b.u8();
    if tail & 1 != 0 {
        chain.push(k.ca.clone());
    }
    if tail & 2 != 0 {
        let rest = b.rest();
        if let Ok(c) = X509::from_der(rest) {
            chain.insert((tail as usize >> 2) % (chain.len() + 1), c);
        }
    }
    match vws::security::authenticate_at(&chain, &k.trust, k.now) {
        Ok(caller) => assert!(caller.dn.is_some()),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
