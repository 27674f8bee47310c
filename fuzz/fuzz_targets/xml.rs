//! The hardened XML reader (`soap::xml`): any bytes either parse within the limits or are
//! refused with an `XmlError`; what parses serialises (`to_fragment`) to a document that parses
//! again to the same fragment, and the tree's accessors hold on it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vws::soap::xml::{parse_bytes, Element, Limits, Node};

fn walk(e: &Element, depth: usize) {
    let _ = e.text();
    let _ = e.is_nil();
    let _ = e.resolve_qname(&e.text());
    for a in &e.attrs {
        let _ = e.resolve_qname(&a.value);
    }
    let _ = e.scope.bindings();
    for c in &e.children {
        if let Node::Element(c) = c {
            walk(c, depth + 1);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_depth: 64, max_elements: 5_000, max_attributes: 32 };
    if let Ok(root) = parse_bytes(data, &limits) {
        walk(&root, 0);
        let frag = root.to_fragment();
        let again = match parse_bytes(frag.as_bytes(), &limits) {
            Ok(e) => e,
            Err(e) => panic!("to_fragment output does not parse ({e}): {frag:?}"),
        };
        assert_eq!(again.to_fragment(), frag, "to_fragment is not stable");
    }
});
