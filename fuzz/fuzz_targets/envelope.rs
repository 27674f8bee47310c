//! SOAP 1.1 envelope and WS-Addressing decoding (`soap::envelope::parse`, `soap::epr`): any
//! body is an `Envelope` or a `SoapFault`; headers, EPRs and faults built from what it carried
//! never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vws::soap::envelope::{self, must_understand};
use vws::soap::epr::Epr;
use vws::soap::xml::Limits;

fuzz_target!(|data: &[u8]| {
    match envelope::parse(data, &Limits::default()) {
        Ok(env) => {
            let _ = env.payload();
            for h in env.other_headers() {
                let _ = must_understand(h);
                let _ = env.header_named(&h.name);
                // Any header may be an EPR (ReplyTo, FaultTo, From, or a service's own).
                if let Ok(epr) = Epr::from_element(h) {
                    let xml = epr.to_file_xml();
                    let back = vws::soap::xml::parse(&xml, &Limits::default()).expect("an EPR we wrote parses");
                    assert_eq!(Epr::from_element(&back).expect("an EPR we wrote reads back"), epr);
                }
            }
            let a = &env.addressing;
            let resp = envelope::response(a, "http://localhost:8080/wsrf/services/X", "urn:a", "<r/>");
            vws::soap::xml::parse(&resp, &Limits::default()).expect("our response parses");
            let f = envelope::SoapFault::client("refused");
            let out = envelope::fault(Some(a), "http://localhost:8080/wsrf/services/X", &f);
            vws::soap::xml::parse(&out, &Limits::default()).expect("our fault parses");
        }
        Err(f) => {
            assert!(!f.string.is_empty());
            let out = envelope::fault(None, "http://localhost:8080/wsrf/services/X", &f);
            vws::soap::xml::parse(&out, &Limits::default()).expect("our fault parses");
        }
    }
});
