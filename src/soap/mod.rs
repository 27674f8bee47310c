//! The SOAP wire vocabulary, the bottom layer: hardened XML parsing, namespaces, SOAP 1.1
//! envelopes and fault shapes, WS-Addressing 2004/03 headers and EPRs, xsd:dateTime, the XML
//! writer every message encoder uses and the message codec traits. It imports
//! nothing else of vws; the HTTP edge that carries it is `server/`.

pub mod envelope;
pub mod epr;
pub mod message;
pub mod ns;
pub mod time;
pub mod writer;
pub mod xml;

/// Text of an element, or None when it is `xsi:nil="true"`.
pub fn element_text_or_nil(e: &xml::Element) -> Option<String> {
    if e.is_nil() {
        None
    } else {
        Some(e.text())
    }
}
