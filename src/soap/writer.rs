//! Writing XML: [`XmlWriter`], the writer every message encoder uses, so escaping is done in one
//! place, by quick-xml's escape functions. It writes the bytes quick-xml's `Writer` writes for the
//! same start/end/empty/text events (no indentation), straight into its buffer: building
//! quick-xml's events copied every name and attribute once more. Element names are written as
//! given (with their prefix); namespace declarations are ordinary attributes (`xmlns`,
//! `xmlns:p`). Already-serialized fragments (stored property values, DOM fragments) go in with
//! [`XmlWriter::raw`].
//!
//! Escaping: text gets quick-xml's `partial_escape` (`<`, `>`, `&`), attribute values its full
//! `escape` (also `"` and `'`). Characters an XML reader would normalise away (`\r` in text;
//! `\r`, `\n`, `\t` in attribute values) are written as character references, so a value reads
//! back exactly as written.

use std::borrow::Cow;

/// An XML writer into memory.
pub struct XmlWriter {
    out: Vec<u8>,
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
    // A byte test (vectorised) rather than a char pattern: these are ASCII.
    if e.as_bytes().iter().fold(false, |any, &b| any | matches!(b, b'\r' | b'\n' | b'\t')) {
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
        XmlWriter { out: Vec::with_capacity(bytes) }
    }

    /// `<tag k="v"…` — what quick-xml's `Writer` writes for a `BytesStart` built with
    /// `push_attribute`, without building one (no copy of the name and attributes).
    fn open(&mut self, tag: &str, attrs: &[(&str, &str)]) {
        self.out.push(b'<');
        self.out.extend_from_slice(tag.as_bytes());
        for (k, v) in attrs {
            self.out.push(b' ');
            self.out.extend_from_slice(k.as_bytes());
            self.out.extend_from_slice(b"=\"");
            self.out.extend_from_slice(attr_escape(v).as_bytes());
            self.out.push(b'"');
        }
    }

    /// `<tag attrs…>`.
    pub fn start(&mut self, tag: &str, attrs: &[(&str, &str)]) -> &mut Self {
        self.open(tag, attrs);
        self.out.push(b'>');
        self
    }

    /// `</tag>`.
    pub fn end(&mut self, tag: &str) -> &mut Self {
        self.out.extend_from_slice(b"</");
        self.out.extend_from_slice(tag.as_bytes());
        self.out.push(b'>');
        self
    }

    /// `<tag attrs…/>`.
    pub fn empty(&mut self, tag: &str, attrs: &[(&str, &str)]) -> &mut Self {
        self.open(tag, attrs);
        self.out.extend_from_slice(b"/>");
        self
    }

    /// Character data, escaped.
    pub fn text(&mut self, s: &str) -> &mut Self {
        self.out.extend_from_slice(text_escape(s).as_bytes());
        self
    }

    /// `<tag attrs…>text</tag>`.
    pub fn leaf(&mut self, tag: &str, attrs: &[(&str, &str)], text: &str) -> &mut Self {
        self.start(tag, attrs).text(text).end(tag)
    }

    /// Already-serialized XML, written as is.
    pub fn raw(&mut self, xml: &str) -> &mut Self {
        self.out.extend_from_slice(xml.as_bytes());
        self
    }

    pub fn into_string(self) -> String {
        // Everything written came from &str: the bytes are UTF-8.
        String::from_utf8(self.out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
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
    fn writes_what_quick_xml_writer_writes() {
        use quick_xml::events::attributes::Attribute;
        use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
        let attrs: &[(&str, &str)] = &[("xmlns:p", "urn:x"), ("a", "1 < 2 & \"3\"\t"), ("b", "")];
        let mut ours = XmlWriter::new();
        ours.start("p:x", attrs).text("t & <u>\r").empty("p:e", attrs).empty("f", &[]).leaf("g", &[], "").end("p:x");
        let mut theirs = quick_xml::Writer::new(Vec::new());
        let start = |tag| {
            let mut s = BytesStart::new(tag);
            for (k, v) in attrs {
                s.push_attribute(Attribute::from((k.as_bytes(), attr_escape(v).as_bytes())));
            }
            s
        };
        for e in [
            Event::Start(start("p:x")),
            Event::Text(BytesText::from_escaped(text_escape("t & <u>\r"))),
            Event::Empty(start("p:e")),
            Event::Empty(BytesStart::new("f")),
            Event::Start(BytesStart::new("g")),
            Event::End(BytesEnd::new("g")),
            Event::End(BytesEnd::new("p:x")),
        ] {
            theirs.write_event(e).unwrap();
        }
        assert_eq!(ours.into_string(), String::from_utf8(theirs.into_inner()).unwrap());
    }

    #[test]
    fn leaf_and_raw() {
        let mut w = XmlWriter::new();
        w.start("r", &[]).leaf("a", &[], "1").raw("<b>2</b>").leaf("c", &[], "").end("r");
        assert_eq!(w.into_string(), "<r><a>1</a><b>2</b><c></c></r>");
    }
}
