//! Writing XML: [`XmlWriter`], a thin layer over quick-xml's `Writer` that every message
//! encoder uses, so escaping is done in one place, by the library. Element names are written as
//! given (with their prefix); namespace declarations are ordinary attributes (`xmlns`,
//! `xmlns:p`). Already-serialized fragments (stored property values, DOM fragments) go in with
//! [`XmlWriter::raw`].
//!
//! Escaping: text gets quick-xml's `partial_escape` (`<`, `>`, `&`), attribute values its full
//! `escape` (also `"` and `'`). Characters an XML reader would normalise away (`\r` in text;
//! `\r`, `\n`, `\t` in attribute values) are written as character references, so a value reads
//! back exactly as written.

use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use std::borrow::Cow;

/// An XML writer into memory.
pub struct XmlWriter {
    w: quick_xml::Writer<Vec<u8>>,
}

/// Text content, escaped.
fn text_escape(s: &str) -> Cow<'_, str> {
    let e = quick_xml::escape::partial_escape(s);
    if e.contains('\r') {
        Cow::Owned(e.replace('\r', "&#13;"))
    } else {
        e
    }
}

/// An attribute value, escaped.
fn attr_escape(s: &str) -> Cow<'_, str> {
    let e = quick_xml::escape::escape(s);
    if e.contains(['\r', '\n', '\t']) {
        Cow::Owned(e.replace('\r', "&#13;").replace('\n', "&#10;").replace('\t', "&#9;"))
    } else {
        e
    }
}

impl XmlWriter {
    pub fn new() -> Self {
        Self::with_capacity(256)
    }

    pub fn with_capacity(bytes: usize) -> Self {
        XmlWriter { w: quick_xml::Writer::new(Vec::with_capacity(bytes)) }
    }

    fn tag<'a>(tag: &'a str, attrs: &[(&str, &str)]) -> BytesStart<'a> {
        let mut s = BytesStart::new(tag);
        for (k, v) in attrs {
            let v = attr_escape(v);
            s.push_attribute(Attribute::from((k.as_bytes(), v.as_bytes())));
        }
        s
    }

    fn event(&mut self, e: Event<'_>) {
        // Writing into a Vec cannot fail.
        let _ = self.w.write_event(e);
    }

    /// `<tag attrs…>`.
    pub fn start(&mut self, tag: &str, attrs: &[(&str, &str)]) -> &mut Self {
        self.event(Event::Start(Self::tag(tag, attrs)));
        self
    }

    /// `</tag>`.
    pub fn end(&mut self, tag: &str) -> &mut Self {
        self.event(Event::End(BytesEnd::new(tag)));
        self
    }

    /// `<tag attrs…/>`.
    pub fn empty(&mut self, tag: &str, attrs: &[(&str, &str)]) -> &mut Self {
        self.event(Event::Empty(Self::tag(tag, attrs)));
        self
    }

    /// Character data, escaped.
    pub fn text(&mut self, s: &str) -> &mut Self {
        if !s.is_empty() {
            self.event(Event::Text(BytesText::from_escaped(text_escape(s))));
        }
        self
    }

    /// `<tag attrs…>text</tag>`.
    pub fn leaf(&mut self, tag: &str, attrs: &[(&str, &str)], text: &str) -> &mut Self {
        self.start(tag, attrs).text(text).end(tag)
    }

    /// Already-serialized XML, written as is.
    pub fn raw(&mut self, xml: &str) -> &mut Self {
        self.w.get_mut().extend_from_slice(xml.as_bytes());
        self
    }

    pub fn into_string(self) -> String {
        // Everything written came from &str: the bytes are UTF-8.
        String::from_utf8(self.w.into_inner()).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

impl Default for XmlWriter {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soap::xml::{parse, Limits};

    #[test]
    fn escapes_once_and_reads_back() {
        let mut w = XmlWriter::new();
        let nasty = "a<b&c>\"d'e\r\nf ünïcødé ☃";
        w.start("p:x", &[("xmlns:p", "urn:a&b"), ("v", nasty)]).text(nasty).empty("p:y", &[]).end("p:x");
        let s = w.into_string();
        assert!(s.starts_with("<p:x xmlns:p=\"urn:a&amp;b\" v=\"a&lt;b&amp;c&gt;&quot;d&apos;e&#13;&#10;f"), "{s}");
        let e = parse(&s, &Limits::default()).unwrap();
        assert_eq!(e.name.ns, "urn:a&b");
        assert_eq!(e.attr("", "v"), Some(nasty));
        assert_eq!(e.text(), nasty);
        assert!(e.child("urn:a&b", "y").is_some());
    }

    #[test]
    fn leaf_and_raw() {
        let mut w = XmlWriter::new();
        w.start("r", &[]).leaf("a", &[], "1").raw("<b>2</b>").leaf("c", &[], "").end("r");
        assert_eq!(w.into_string(), "<r><a>1</a><b>2</b><c></c></r>");
    }
}
