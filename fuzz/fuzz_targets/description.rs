//! The workspace description reader (`workspace::description`): any XML either reads as a
//! `Description` or is refused with a `DescriptionError` naming an element and a line; what
//! reads writes out its resource properties as XML that parses.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vws::soap::xml::{parse, parse_bytes, Limits};
use vws::workspace::Description;

fuzz_target!(|data: &[u8]| {
    let Ok(root) = parse_bytes(data, &Limits::default()) else { return };
    match Description::from_element(&root) {
        Ok(d) => {
            let mut parts = vec![d.category_xml()];
            parts.extend(d.hardware_xml());
            parts.extend(d.network_xml());
            parts.extend(d.software_xml());
            parts.extend(d.capability_xml());
            for p in parts {
                if let Err(e) = parse(&p, &Limits::default()) {
                    panic!("a description property we wrote does not parse ({e}): {p:?}");
                }
            }
            let _ = (d.max_ram(), d.min_disk());
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
