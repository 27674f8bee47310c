//! The SOAP layer: hardened XML parsing, SOAP 1.1 envelopes, WS-Addressing 2004/03 headers and
//! EPRs, SOAP faults, and the HTTP/1.1 listener that carries them.

pub mod envelope;
pub mod epr;
pub mod http;
pub mod ns;
pub mod xml;

/// Text of an element, or None when it is `xsi:nil="true"`.
pub fn element_text_or_nil(e: &xml::Element) -> Option<String> {
    if e.is_nil() {
        None
    } else {
        Some(e.text())
    }
}
