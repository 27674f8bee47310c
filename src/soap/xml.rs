//! Hardened, namespace-aware XML parsing into a small DOM, and XML writing helpers.
//!
//! Everything vws reads off the wire goes through [`parse`]: it refuses any DOCTYPE (so no entity
//! expansion and no external entities can happen), and enforces limits on nesting depth, element
//! count and attributes per element. Every element keeps its in-scope namespace bindings (so
//! QName-valued text such as `ns1:CurrentState` can be resolved against the declarations on that
//! very element) and the line it started on (for validation messages).

use quick_xml::events::attributes::AttrError;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use std::fmt::Write as _;
use std::sync::Arc;

pub const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
pub const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";

/// Limits applied while parsing untrusted XML.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_depth: usize,
    pub max_elements: usize,
    pub max_attributes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_depth: 128, max_elements: 50_000, max_attributes: 64 }
    }
}

/// Why a document was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum XmlError {
    #[error("DOCTYPE declarations are not allowed (line {0})")]
    Doctype(u32),
    #[error("element nesting deeper than {0} levels (line {1})")]
    TooDeep(usize, u32),
    #[error("more than {0} elements in the document")]
    TooManyElements(usize),
    #[error("more than {0} attributes on one element (line {1})")]
    TooManyAttributes(usize, u32),
    #[error("undeclared namespace prefix '{0}' (line {1})")]
    UndeclaredPrefix(String, u32),
    #[error("malformed XML at line {line}: {msg}")]
    Malformed { line: u32, msg: String },
    #[error("document has no root element")]
    Empty,
    #[error("document is not UTF-8")]
    NotUtf8,
}

/// A local name or prefix: short ones (≤ 24 bytes, nearly all) are held inline, not allocated.
pub type Name = compact_str::CompactString;

/// A namespace URI. The well-known ones (those of [`crate::soap::ns`] and XML's own) are static;
/// any other is shared: one allocation per declaration, a reference count per element or
/// attribute in it. Compares, hashes and orders as its `str`.
#[derive(Clone)]
pub struct Ns(NsRepr);

#[derive(Clone)]
enum NsRepr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Ns {
    /// No namespace.
    pub const EMPTY: Ns = Ns(NsRepr::Static(""));

    pub const fn from_static(uri: &'static str) -> Ns {
        Ns(NsRepr::Static(uri))
    }

    pub fn new(uri: &str) -> Ns {
        match well_known(uri) {
            Some(s) => Ns(NsRepr::Static(s)),
            None => Ns(NsRepr::Shared(Arc::from(uri))),
        }
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            NsRepr::Static(s) => s,
            NsRepr::Shared(s) => s,
        }
    }
}

/// The static copy of a namespace URI every GT4 message uses, if `uri` is one.
fn well_known(uri: &str) -> Option<&'static str> {
    use super::ns::*;
    Some(match uri {
        "" => "",
        SOAPENV => SOAPENV,
        WSA => WSA,
        WSRP => WSRP,
        WSRL => WSRL,
        WSBF => WSBF,
        WSNT => WSNT,
        VWS => VWS,
        NIMBUS => NIMBUS,
        XSD => XSD,
        XSI => XSI,
        GLOBUS_CORE => GLOBUS_CORE,
        GLOBUS_NOTIFICATION => GLOBUS_NOTIFICATION,
        COUNTER => COUNTER,
        SOAP12ENV => SOAP12ENV,
        XML_NS => XML_NS,
        _ => return None,
    })
}

impl Default for Ns {
    fn default() -> Self {
        Ns::EMPTY
    }
}

impl std::ops::Deref for Ns {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Ns {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for Ns {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for Ns {
    fn from(s: &str) -> Ns {
        Ns::new(s)
    }
}

impl From<String> for Ns {
    fn from(s: String) -> Ns {
        Ns::new(&s)
    }
}

impl PartialEq for Ns {
    fn eq(&self, other: &Ns) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Ns {}

impl PartialEq<str> for Ns {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Ns {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Ns {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<Ns> for str {
    fn eq(&self, other: &Ns) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Ns> for &str {
    fn eq(&self, other: &Ns) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Ns> for String {
    fn eq(&self, other: &Ns) -> bool {
        self == other.as_str()
    }
}

impl std::hash::Hash for Ns {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.as_str().hash(h)
    }
}

impl PartialOrd for Ns {
    fn partial_cmp(&self, other: &Ns) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ns {
    fn cmp(&self, other: &Ns) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::fmt::Debug for Ns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Ns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An expanded name: namespace URI ("" for none) and local part.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QName {
    pub ns: Ns,
    pub local: Name,
}

impl QName {
    pub fn new(ns: &str, local: &str) -> Self {
        QName { ns: Ns::new(ns), local: Name::new(local) }
    }
    /// `{ns}local` (Clark notation), as GT4 prints QNames.
    pub fn clark(&self) -> String {
        if self.ns.is_empty() {
            self.local.to_string()
        } else {
            format!("{{{}}}{}", self.ns, self.local)
        }
    }
    /// Parse Clark notation `{ns}local` or a bare local name.
    pub fn from_clark(s: &str) -> Option<QName> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix('{') {
            let (ns, local) = rest.split_once('}')?;
            if local.is_empty() || !is_ncname(local) {
                return None;
            }
            Some(QName::new(ns, local))
        } else if is_ncname(s) {
            Some(QName::new("", s))
        } else {
            None
        }
    }
    pub fn is(&self, ns: &str, local: &str) -> bool {
        self.ns == ns && self.local == local
    }
}

impl std::fmt::Display for QName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.clark())
    }
}

pub fn is_ncname(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '.')
}

#[derive(Clone, Debug, PartialEq)]
pub struct Attr {
    pub name: QName,
    /// The prefix as written ("" for none).
    pub prefix: Name,
    pub value: Name,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Element(Element),
    Text(String),
}

/// In-scope namespace bindings, as a chain: each element that declares namespaces adds a link
/// holding its own declarations; the others share their parent's link. "" is the default prefix.
#[derive(Debug, Default, PartialEq)]
pub struct ScopeLink {
    parent: Option<Scope>,
    decls: Vec<(Name, Ns)>,
}

pub type Scope = Arc<ScopeLink>;

impl ScopeLink {
    /// The URI bound to `prefix`, innermost declaration first.
    pub fn lookup(&self, prefix: &str) -> Option<&str> {
        self.lookup_ns(prefix).map(Ns::as_str)
    }

    /// The same, as the shared [`Ns`] of the declaration.
    pub fn lookup_ns(&self, prefix: &str) -> Option<&Ns> {
        let mut link = Some(self);
        while let Some(l) = link {
            if let Some((_, u)) = l.decls.iter().rev().find(|(p, _)| p == prefix) {
                return Some(u);
            }
            link = l.parent.as_deref();
        }
        None
    }

    /// Every binding in effect, one per prefix (innermost wins), outermost first.
    pub fn bindings(&self) -> Vec<(String, String)> {
        self.bindings_ns().into_iter().map(|(p, u)| (p.to_string(), u.to_string())).collect()
    }

    fn bindings_ns(&self) -> Vec<(Name, Ns)> {
        let mut chain = Vec::new();
        let mut link = Some(self);
        while let Some(l) = link {
            chain.push(l);
            link = l.parent.as_deref();
        }
        let mut out: Vec<(Name, Ns)> = Vec::new();
        for l in chain.iter().rev() {
            for (p, u) in &l.decls {
                out.retain(|(q, _)| q != p);
                out.push((p.clone(), u.clone()));
            }
        }
        out
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Element {
    pub name: QName,
    pub prefix: Name,
    pub attrs: Vec<Attr>,
    /// Whether `scope`'s innermost link holds this element's own namespace declarations
    /// (see [`Element::decls`]); otherwise the element shares its parent's link.
    pub own_scope: bool,
    /// Every binding in scope on this element (inherited + own).
    pub scope: Scope,
    pub children: Vec<Node>,
    pub line: u32,
}

impl Element {
    /// A fresh element (for building documents); scope holds its own declaration.
    pub fn new(ns: &str, local: &str) -> Element {
        Element {
            name: QName::new(ns, local),
            prefix: Name::default(),
            attrs: Vec::new(),
            own_scope: false,
            scope: Arc::new(ScopeLink::default()),
            children: Vec::new(),
            line: 0,
        }
    }

    pub fn is(&self, ns: &str, local: &str) -> bool {
        self.name.is(ns, local)
    }

    /// Namespace declarations written on this element (kept once, in its scope link).
    pub fn decls(&self) -> &[(Name, Ns)] {
        if self.own_scope {
            &self.scope.decls
        } else {
            &[]
        }
    }

    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    pub fn child(&self, ns: &str, local: &str) -> Option<&Element> {
        self.elements().find(|e| e.is(ns, local))
    }

    /// First child element whose local name matches, in any namespace.
    pub fn child_local(&self, local: &str) -> Option<&Element> {
        self.elements().find(|e| e.name.local == local)
    }

    pub fn first_element(&self) -> Option<&Element> {
        self.elements().next()
    }

    /// Concatenated direct text content, borrowed when there is one text node (or none).
    pub fn text_ref(&self) -> std::borrow::Cow<'_, str> {
        let mut texts = self.children.iter().filter_map(|n| match n {
            Node::Text(t) => Some(t.as_str()),
            Node::Element(_) => None,
        });
        let first = texts.next().unwrap_or("");
        match texts.next() {
            None => std::borrow::Cow::Borrowed(first),
            Some(second) => {
                let mut s = String::from(first);
                s.push_str(second);
                texts.for_each(|t| s.push_str(t));
                std::borrow::Cow::Owned(s)
            }
        }
    }

    /// Concatenated direct text content.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                s.push_str(t);
            }
        }
        s
    }

    pub fn attr(&self, ns: &str, local: &str) -> Option<&str> {
        self.attrs.iter().find(|a| a.name.is(ns, local)).map(|a| a.value.as_str())
    }

    /// Resolve a prefix against the bindings in scope on this element.
    pub fn lookup_prefix(&self, prefix: &str) -> Option<&str> {
        if prefix == "xml" {
            return Some(XML_NS);
        }
        self.scope.lookup(prefix)
    }

    fn lookup_ns(&self, prefix: &str) -> Option<Ns> {
        if prefix == "xml" {
            return Some(Ns::from_static(XML_NS));
        }
        self.scope.lookup_ns(prefix).cloned()
    }

    /// Resolve QName-valued text (`prefix:local` or `local`) in this element's scope.
    pub fn resolve_qname(&self, text: &str) -> Result<QName, String> {
        let t = text.trim();
        let (prefix, local) = match t.split_once(':') {
            Some((p, l)) => (p, l),
            None => ("", t),
        };
        if !is_ncname(local) || (!prefix.is_empty() && !is_ncname(prefix)) {
            return Err(format!("'{t}' is not a valid QName"));
        }
        match self.lookup_ns(prefix) {
            Some(ns) => Ok(QName { ns, local: Name::new(local) }),
            None if prefix.is_empty() => Ok(QName { ns: Ns::EMPTY, local: Name::new(local) }),
            None => Err(format!("prefix '{prefix}' of QName '{t}' is not declared")),
        }
    }

    /// True when `xsi:nil="true"` (or "1") is set.
    pub fn is_nil(&self) -> bool {
        matches!(self.attr(crate::soap::ns::XSI, "nil").map(str::trim), Some("true") | Some("1"))
    }

    /// Serialize as a standalone fragment: the root declares every in-scope binding the subtree
    /// uses (names, and QName-looking text), so it keeps its meaning wherever it is embedded.
    pub fn to_fragment(&self) -> String {
        let mut out = String::with_capacity(128);
        self.write(&mut out, true);
        out
    }

    /// Prefixes this subtree needs: in element and attribute names, and in text or attribute
    /// values that look like QNames (`p:local`), so QName-valued content keeps its binding.
    fn used_prefixes<'a>(&'a self, acc: &mut Vec<&'a str>) {
        fn qname_prefix(v: &str) -> Option<&str> {
            let (p, l) = v.trim().split_once(':')?;
            (is_ncname(p) && is_ncname(l)).then_some(p)
        }
        fn add<'a>(acc: &mut Vec<&'a str>, p: &'a str) {
            if !acc.contains(&p) {
                acc.push(p)
            }
        }
        add(acc, self.prefix.as_str());
        for a in &self.attrs {
            if !a.prefix.is_empty() {
                add(acc, a.prefix.as_str());
            }
            if let Some(p) = qname_prefix(&a.value) {
                add(acc, p);
            }
        }
        for c in &self.children {
            match c {
                Node::Text(t) => {
                    if let Some(p) = qname_prefix(t) {
                        add(acc, p);
                    }
                }
                Node::Element(e) => e.used_prefixes(acc),
            }
        }
    }

    fn write(&self, out: &mut String, root: bool) {
        out.push('<');
        if !self.prefix.is_empty() {
            out.push_str(&self.prefix);
            out.push(':');
        }
        out.push_str(&self.name.local);
        let used;
        let decls: &[(Name, Ns)] = if root {
            let mut prefixes = Vec::new();
            self.used_prefixes(&mut prefixes);
            used = self.scope.bindings_ns().into_iter().filter(|(p, _)| prefixes.contains(&p.as_str())).collect::<Vec<_>>();
            &used
        } else {
            self.decls()
        };
        // An unprefixed root in no namespace must undeclare any default namespace around it.
        if root && self.prefix.is_empty() && self.name.ns.is_empty() {
            out.push_str(" xmlns=\"\"");
        }
        // On the root, later bindings of the same prefix shadow earlier ones.
        for (p, u) in decls.iter() {
            if root && p.is_empty() && self.name.ns.is_empty() {
                continue;
            }
            if p.is_empty() {
                out.push_str(" xmlns=\"");
            } else {
                out.push_str(" xmlns:");
                out.push_str(p);
                out.push_str("=\"");
            }
            escape_into(out, u, true);
            out.push('"');
        }
        for a in &self.attrs {
            out.push(' ');
            if !a.prefix.is_empty() {
                out.push_str(&a.prefix);
                out.push(':');
            }
            out.push_str(&a.name.local);
            out.push_str("=\"");
            escape_into(out, &a.value, true);
            out.push('"');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for c in &self.children {
            match c {
                Node::Text(t) => escape_into(out, t, false),
                Node::Element(e) => e.write(out, false),
            }
        }
        out.push_str("</");
        if !self.prefix.is_empty() {
            out.push_str(&self.prefix);
            out.push(':');
        }
        out.push_str(&self.name.local);
        out.push('>');
    }
}

/// Escape text or attribute content.
pub fn escape_into(out: &mut String, s: &str, attr: bool) {
    // Every character escaped is ASCII, so the runs between them are copied whole (their ends
    // are char boundaries).
    let mut run = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let esc = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'\r' => "&#13;",
            b'"' if attr => "&quot;",
            b'\n' if attr => "&#10;",
            b'\t' if attr => "&#9;",
            _ => continue,
        };
        out.push_str(&s[run..i]);
        out.push_str(esc);
        run = i + 1;
    }
    out.push_str(&s[run..]);
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(&mut out, s, false);
    out
}

pub fn escape_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(&mut out, s, true);
    out
}

/// Parse bytes (must be UTF-8) into a DOM, enforcing `limits`.
pub fn parse_bytes(input: &[u8], limits: &Limits) -> Result<Element, XmlError> {
    let s = std::str::from_utf8(input).map_err(|_| XmlError::NotUtf8)?;
    parse(s, limits)
}

struct LineCounter<'a> {
    src: &'a [u8],
    pos: usize,
    line: u32,
}

impl LineCounter<'_> {
    fn at(&mut self, pos: usize) -> u32 {
        let pos = pos.min(self.src.len());
        // Most steps are a few dozen bytes: a plain (vectorised) count beats memchr's setup.
        let newlines = |b: &[u8]| b.iter().fold(0u32, |n, &c| n + (c == b'\n') as u32);
        if pos >= self.pos {
            self.line += newlines(&self.src[self.pos..pos]);
        } else {
            self.line = 1 + newlines(&self.src[..pos]);
        }
        self.pos = pos;
        self.line
    }
}

/// XML 1.0's `Char` production: what a document may hold, literally or as a character reference.
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Refuses a character XML 1.0 does not allow (NUL and the other C0 controls, U+FFFE, U+FFFF):
/// such characters must never reach libxml2 or C strings (a NUL ends them early).
fn check_chars(s: &str, line: impl FnOnce(usize) -> u32) -> Result<(), XmlError> {
    // Fast path over bytes (vectorised): in UTF-8 only C0 controls (one byte below 0x20) and
    // U+FFFE / U+FFFF (lead byte 0xEF) can fall outside `Char`; a &str holds no surrogates.
    // Whole chunks without an early exit, so the compiler vectorises the test.
    let plain = |b: u8| (b >= 0x20 && b != 0xEF) | (b == b'\t') | (b == b'\n') | (b == b'\r');
    if s.as_bytes().chunks(64).all(|c| c.iter().fold(true, |ok, &b| ok & plain(b))) {
        return Ok(());
    }
    match s.char_indices().find(|(_, c)| !is_xml_char(*c)) {
        None => Ok(()),
        Some((i, c)) => {
            Err(XmlError::Malformed { line: line(i), msg: format!("character U+{:04X} is not allowed in XML", c as u32) })
        }
    }
}

/// Parse a document into its root element, enforcing `limits`.
pub fn parse(input: &str, limits: &Limits) -> Result<Element, XmlError> {
    check_chars(input, |i| 1 + input.as_bytes()[..i].iter().filter(|&&b| b == b'\n').count() as u32)?;
    let mut reader = Reader::from_str(input);
    let cfg = reader.config_mut();
    cfg.trim_text(false);
    cfg.check_end_names = true;
    cfg.expand_empty_elements = false;
    let mut lines = LineCounter { src: input.as_bytes(), pos: 0, line: 1 };
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    static BASE_SCOPE: std::sync::LazyLock<Scope> = std::sync::LazyLock::new(Scope::default);
    let base_scope: &Scope = &BASE_SCOPE;
    loop {
        let start_pos = reader.buffer_position() as usize;
        let ev = reader
            .read_event()
            .map_err(|e| XmlError::Malformed { line: lines.at(reader.buffer_position() as usize), msg: e.to_string() })?;
        match ev {
            Event::DocType(_) => return Err(XmlError::Doctype(lines.at(start_pos))),
            Event::Start(ref e) | Event::Empty(ref e) => {
                let is_empty = matches!(ev, Event::Empty(_));
                let line = lines.at(start_pos);
                if root.is_some() {
                    return Err(XmlError::Malformed { line, msg: "content after the root element".into() });
                }
                count += 1;
                if count > limits.max_elements {
                    return Err(XmlError::TooManyElements(limits.max_elements));
                }
                if stack.len() + 1 > limits.max_depth {
                    return Err(XmlError::TooDeep(limits.max_depth, line));
                }
                let parent_scope = stack.last().map(|p| p.scope.clone()).unwrap_or_else(|| base_scope.clone());
                let el = start_element(input, e, parent_scope, line, limits)?;
                if is_empty {
                    attach(&mut stack, &mut root, el);
                } else {
                    stack.push(el);
                }
            }
            Event::End(_) => {
                let el = stack
                    .pop()
                    .ok_or_else(|| XmlError::Malformed { line: lines.at(start_pos), msg: "unexpected end tag".into() })?;
                attach(&mut stack, &mut root, el);
            }
            Event::Text(t) => {
                let line = lines.at(start_pos);
                let text = unescape(input, &t, line)?;
                match stack.last_mut() {
                    Some(top) => push_text(top, text),
                    None if text.trim().is_empty() => {}
                    None => return Err(XmlError::Malformed { line, msg: "text outside the root element".into() }),
                }
            }
            Event::CData(c) => {
                let line = lines.at(start_pos);
                let text = std::str::from_utf8(&c).map_err(|_| XmlError::NotUtf8)?;
                match stack.last_mut() {
                    Some(top) => push_text(top, std::borrow::Cow::Borrowed(text)),
                    None => return Err(XmlError::Malformed { line, msg: "CDATA outside the root element".into() }),
                }
            }
            Event::Comment(_) | Event::PI(_) | Event::Decl(_) => {}
            Event::Eof => {
                if let Some(open) = stack.last() {
                    return Err(XmlError::Malformed {
                        line: lines.at(input.len()),
                        msg: format!("unexpected end of document inside <{}>", open.name.local),
                    });
                }
                return root.ok_or(XmlError::Empty);
            }
        }
    }
}

fn push_text(top: &mut Element, text: std::borrow::Cow<'_, str>) {
    if let Some(Node::Text(prev)) = top.children.last_mut() {
        prev.push_str(&text);
    } else {
        top.children.push(Node::Text(text.into_owned()));
    }
}

fn attach(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(Node::Element(el)),
        None => *root = Some(el),
    }
}

/// `raw` (a slice quick-xml handed out of `input`) as the `&str` it is in `input`: no second
/// UTF-8 validation. Anything else (never expected) is validated.
fn in_input<'a>(input: &'a str, raw: &'a [u8]) -> &'a str {
    let off = (raw.as_ptr() as usize).wrapping_sub(input.as_ptr() as usize);
    match off.checked_add(raw.len()).filter(|&end| end <= input.len()).and_then(|end| input.get(off..end)) {
        Some(s) if s.as_ptr() == raw.as_ptr() => s,
        _ => std::str::from_utf8(raw).unwrap_or_default(),
    }
}

/// Text or an attribute value with its references resolved; one that has none is borrowed.
/// Characters that come from references are checked against XML's `Char` (the literal ones
/// were, with the whole document).
fn unescape<'a>(input: &'a str, raw: &'a [u8], line: u32) -> Result<std::borrow::Cow<'a, str>, XmlError> {
    let s = in_input(input, raw);
    if memchr::memchr(b'&', s.as_bytes()).is_none() {
        return Ok(std::borrow::Cow::Borrowed(s));
    }
    let u = quick_xml::escape::unescape(s).map_err(|e| XmlError::Malformed { line, msg: e.to_string() })?;
    check_chars(&u, |_| line)?;
    Ok(u)
}

/// Splits a name into prefix and local part. Namespaces in XML: a QName is an NCName or
/// `NCName:NCName`, so an empty side or a second ':' is refused (kept, such a name would be
/// written back as another name, or one with an undeclared prefix).
fn split_name(input: &str, raw: &[u8], line: u32) -> Result<(Name, Name), XmlError> {
    let s = in_input(input, raw);
    // ':' is one byte, so both sides of it are char boundaries. Names are short: a plain scan
    // beats memchr's setup.
    match s.bytes().position(|b| b == b':') {
        Some(i) if i > 0 && i + 1 < s.len() && !s.as_bytes()[i + 1..].contains(&b':') => {
            Ok((Name::new(&s[..i]), Name::new(&s[i + 1..])))
        }
        Some(_) => Err(XmlError::Malformed { line, msg: format!("'{s}' is not a qualified name (Namespaces in XML)") }),
        None => Ok((Name::default(), Name::new(s))),
    }
}

/// An attribute's key and raw value, or why the tag's attributes are malformed.
type ScannedAttr<'a> = Result<(&'a [u8], &'a [u8]), AttrError>;

/// The attributes of a start tag (key and raw value), scanned exactly as quick-xml's
/// `BytesStart::attributes()` iterator scans them (XML mode, duplicate check on): the same
/// attributes and, for bad ones, the same `AttrError` at the same position. It skips that
/// iterator's per-byte position counting and keeps the first keys for the duplicate check on
/// the stack instead of in a new `Vec` per element.
struct AttrScan<'a> {
    buf: &'a [u8],
    pos: usize,
    done: bool,
    /// (start, end) of the keys seen so far: the first ones here, the rest in `more`.
    keys: [(usize, usize); 8],
    nkeys: usize,
    more: Vec<(usize, usize)>,
}

impl<'a> AttrScan<'a> {
    fn new(e: &'a BytesStart<'a>) -> Self {
        let buf: &'a [u8] = e;
        AttrScan { buf, pos: e.name().as_ref().len(), done: false, keys: [(0, 0); 8], nkeys: 0, more: Vec::new() }
    }

    fn fail(&mut self, err: AttrError) -> Option<ScannedAttr<'a>> {
        self.done = true;
        Some(Err(err))
    }
}

impl<'a> Iterator for AttrScan<'a> {
    type Item = ScannedAttr<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let ws = |b: u8| matches!(b, b' ' | b'\r' | b'\n' | b'\t');
        let buf = self.buf;
        let len = buf.len();
        if self.done {
            return None;
        }
        let mut i = self.pos;
        while i < len && ws(buf[i]) {
            i += 1;
        }
        if i == len {
            self.done = true;
            return None;
        }
        // The key: its first byte, then up to `=` or white space.
        let start = i;
        i += 1;
        while i < len && buf[i] != b'=' && !ws(buf[i]) {
            i += 1;
        }
        if i == len {
            return self.fail(AttrError::ExpectedEq(len));
        }
        let end = i;
        if buf[i] != b'=' {
            i += 1;
            while i < len && ws(buf[i]) {
                i += 1;
            }
            if i == len {
                return self.fail(AttrError::ExpectedEq(len));
            }
            if buf[i] != b'=' {
                return self.fail(AttrError::ExpectedEq(i));
            }
        }
        let key = &buf[start..end];
        let seen = &self.keys[..self.nkeys.min(self.keys.len())];
        if let Some(&(prev, _)) = seen.iter().chain(self.more.iter()).find(|&&(s, e)| &buf[s..e] == key) {
            return self.fail(AttrError::Duplicated(start, prev));
        }
        if self.nkeys < self.keys.len() {
            self.keys[self.nkeys] = (start, end);
        } else {
            self.more.push((start, end));
        }
        self.nkeys += 1;
        // The value: white space, a quote, up to the same quote.
        i += 1;
        while i < len && ws(buf[i]) {
            i += 1;
        }
        if i == len {
            return self.fail(AttrError::ExpectedValue(len));
        }
        let quote = buf[i];
        if quote != b'"' && quote != b'\'' {
            return self.fail(AttrError::UnquotedValue(i));
        }
        let from = i + 1;
        match memchr::memchr(quote, &buf[from..]) {
            Some(n) => {
                self.pos = from + n + 1;
                Some(Ok((key, &buf[from..from + n])))
            }
            None => self.fail(AttrError::ExpectedQuote(len, quote)),
        }
    }
}

fn start_element(input: &str, e: &BytesStart, parent_scope: Scope, line: u32, limits: &Limits) -> Result<Element, XmlError> {
    let (prefix, local) = split_name(input, e.name().into_inner(), line)?;
    let mut decls = Vec::new();
    // Attributes get their namespace once this element's declarations are all known.
    let mut attrs: Vec<Attr> = Vec::new();
    for (i, a) in AttrScan::new(e).enumerate() {
        if i >= limits.max_attributes {
            return Err(XmlError::TooManyAttributes(limits.max_attributes, line));
        }
        let (key, value) = a.map_err(|err| XmlError::Malformed { line, msg: err.to_string() })?;
        let value = unescape(input, value, line)?;
        if key == b"xmlns" {
            decls.push((Name::default(), Ns::new(&value)));
        } else if let Some(p) = key.strip_prefix(b"xmlns:") {
            let p = Name::new(in_input(input, p));
            if p.is_empty() || p.contains(':') {
                return Err(XmlError::Malformed { line, msg: format!("'xmlns:{p}' declares no valid prefix") });
            }
            if value.is_empty() {
                return Err(XmlError::Malformed { line, msg: format!("namespace prefix '{p}' bound to empty URI") });
            }
            decls.push((p, Ns::new(&value)));
        } else {
            let (prefix, local) = split_name(input, key, line)?;
            attrs.push(Attr { name: QName { ns: Ns::EMPTY, local }, prefix, value: Name::new(&value) });
        }
    }
    let own_scope = !decls.is_empty();
    let scope = if own_scope { Arc::new(ScopeLink { parent: Some(parent_scope), decls }) } else { parent_scope };
    let lookup = |p: &str| -> Option<Ns> {
        if p == "xml" {
            return Some(Ns::from_static(XML_NS));
        }
        scope.lookup_ns(p).cloned()
    };
    let ns = if prefix.is_empty() {
        lookup("").unwrap_or_default()
    } else {
        lookup(&prefix).ok_or_else(|| XmlError::UndeclaredPrefix(prefix.to_string(), line))?
    };
    for a in attrs.iter_mut().filter(|a| !a.prefix.is_empty()) {
        a.name.ns = lookup(&a.prefix).ok_or_else(|| XmlError::UndeclaredPrefix(a.prefix.to_string(), line))?;
    }
    Ok(Element { name: QName { ns, local }, prefix, attrs, own_scope, scope, children: Vec::new(), line })
}

/// Small builder for writing XML text with namespace declarations.
pub struct Writer {
    pub out: String,
}

impl Writer {
    pub fn new() -> Self {
        Writer { out: String::with_capacity(1024) }
    }
    pub fn raw(&mut self, s: &str) -> &mut Self {
        self.out.push_str(s);
        self
    }
    pub fn text(&mut self, s: &str) -> &mut Self {
        escape_into(&mut self.out, s, false);
        self
    }
    /// `<tag attrs...>text</tag>`; `tag` is written as given (with its prefix).
    pub fn leaf(&mut self, tag: &str, attrs: &[(&str, &str)], text: &str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(tag);
        for (k, v) in attrs {
            let _ = write!(self.out, " {k}=\"");
            escape_into(&mut self.out, v, true);
            self.out.push('"');
        }
        self.out.push('>');
        escape_into(&mut self.out, text, false);
        let _ = write!(self.out, "</{tag}>");
        self
    }
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_text_and_attributes_around_non_ascii() {
        let s = "é<a&b>\"c\"\r\n\tö€";
        assert_eq!(escape(s), "é&lt;a&amp;b&gt;\"c\"&#13;\n\tö€");
        assert_eq!(escape_attr(s), "é&lt;a&amp;b&gt;&quot;c&quot;&#13;&#10;&#9;ö€");
        assert_eq!(escape("plain ascii"), "plain ascii");
        assert_eq!(escape(""), "");
        assert_eq!(escape("&"), "&amp;");
    }

    #[test]
    fn resolves_qname_text_with_prefix_declared_on_same_element() {
        let doc = r#"<a xmlns="urn:x"><b xmlns:ns1="urn:y">ns1:Foo</b></a>"#;
        let root = parse(doc, &Limits::default()).unwrap();
        assert_eq!(root.name, QName::new("urn:x", "a"));
        let b = root.first_element().unwrap();
        assert_eq!(b.name, QName::new("urn:x", "b"));
        assert_eq!(b.resolve_qname(&b.text()).unwrap(), QName::new("urn:y", "Foo"));
        assert!(root.resolve_qname("ns1:Foo").is_err());
    }

    /// Fuzzing (fuzz/, target xpath): a NUL in a namespace binding reached libxml2's C strings
    /// and panicked there. Characters outside XML 1.0's `Char` are refused, literal or escaped.
    #[test]
    fn refuses_characters_xml_does_not_allow() {
        for doc in [
            "<a xmlns:p=\"urn:\0x\">t</a>",
            "<a xmlns:p=\"urn:&#0;x\">t</a>",
            "<a>\u{1}</a>",
            "<a b=\"&#x1F;\"/>",
            "<a>&#xFFFE;</a>",
            "<a>\n\n<![CDATA[\u{8}]]></a>",
        ] {
            // (quick-xml refuses `&#0;` itself, with its own message.)
            match parse(doc, &Limits::default()) {
                Err(XmlError::Malformed { msg, .. }) => {
                    assert!(msg.contains("not allowed in XML") || msg.contains("not permitted in XML"), "{doc:?}: {msg}")
                }
                other => panic!("{doc:?} was not refused: {other:?}"),
            }
        }
        match parse("<a>\n\n<![CDATA[\u{8}]]></a>", &Limits::default()) {
            Err(XmlError::Malformed { line, msg }) => {
                assert_eq!((line, msg.as_str()), (3, "character U+0008 is not allowed in XML"))
            }
            other => panic!("{other:?}"),
        }
        let ok = parse("<a b=\"&#9;&#10;&#13;\">\t\r\n\u{D7FF}\u{E000}\u{10FFFF}</a>", &Limits::default()).unwrap();
        assert_eq!(ok.attrs[0].value, "\t\n\r");
    }

    #[test]
    fn refuses_doctype_and_entities() {
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><a>&lol;</a>"#;
        assert!(matches!(parse(bomb, &Limits::default()), Err(XmlError::Doctype(1))));
        let undeclared = "<a>&lol;</a>";
        assert!(matches!(parse(undeclared, &Limits::default()), Err(XmlError::Malformed { .. })));
    }

    #[test]
    fn enforces_depth_elements_attributes() {
        let deep = "<a>".repeat(200) + &"</a>".repeat(200);
        assert!(matches!(parse(&deep, &Limits::default()), Err(XmlError::TooDeep(128, 1))));
        let many = format!("<a>{}</a>", "<b/>".repeat(60_000));
        assert!(matches!(parse(&many, &Limits::default()), Err(XmlError::TooManyElements(_))));
        let attrs: String = (0..70).map(|i| format!(" a{i}=\"1\"")).collect();
        assert!(matches!(parse(&format!("<a{attrs}/>"), &Limits::default()), Err(XmlError::TooManyAttributes(64, 1))));
    }

    #[test]
    fn fragment_keeps_namespaces_and_lines() {
        let doc = "<r xmlns:p=\"urn:p\">\n <p:x a=\"1&amp;2\">t&lt;</p:x>\n</r>";
        let root = parse(doc, &Limits::default()).unwrap();
        let x = root.first_element().unwrap();
        assert_eq!(x.line, 2);
        let frag = x.to_fragment();
        assert_eq!(frag, "<p:x xmlns:p=\"urn:p\" a=\"1&amp;2\">t&lt;</p:x>");
        let again = parse(&frag, &Limits::default()).unwrap();
        assert_eq!(again.name, QName::new("urn:p", "x"));
    }

    #[test]
    fn malformed_and_unclosed() {
        assert!(parse("<a><b></a>", &Limits::default()).is_err());
        assert!(parse("<a>", &Limits::default()).is_err());
        assert!(parse("<p:a/>", &Limits::default()).is_err());
        assert_eq!(parse("", &Limits::default()), Err(XmlError::Empty));
    }

    /// `AttrScan` finds the attributes and errors quick-xml's own iterator finds.
    #[test]
    fn attribute_scan_matches_quick_xml() {
        let many: String = (0..12).map(|i| format!(" k{i}=\"{i}\"")).collect();
        let cases = [
            "a".to_string(),
            "a ".into(),
            "a x=\"1\" y='2'".into(),
            "a x = \"1\"  ".into(),
            "a\tx\n=\r\"v\"\ty=''".into(),
            "a x".into(),
            "a x ".into(),
            "a x y=\"1\"".into(),
            "a x=1".into(),
            "a x=".into(),
            "a x= ".into(),
            "a x==\"1\"".into(),
            "a x=\"1".into(),
            "a x='1\"".into(),
            "a x=\"1\" x=\"2\"".into(),
            "a p:x=\"1\" q:x=\"2\" p:x=\"3\"".into(),
            "a =x\"1\"".into(),
            "a x=\"1\"y=\"2\"".into(),
            "a \"x\"=\"1\"".into(),
            "a x=\"a>b&amp;\" ".into(),
            format!("a{many}"),
            format!("a{many} k10=\"again\""),
            format!("a{many} k0=\"again\""),
        ];
        for c in &cases {
            let e = BytesStart::from_content(c.as_str(), c.find([' ', '\t', '\r', '\n']).unwrap_or(c.len()));
            let mut theirs = Vec::new();
            for a in e.attributes() {
                let stop = a.is_err();
                theirs.push(a.map(|a| (a.key.into_inner().to_vec(), a.value.into_owned())));
                if stop {
                    break;
                }
            }
            let ours: Vec<_> = AttrScan::new(&e).map(|a| a.map(|(k, v)| (k.to_vec(), v.to_vec()))).collect();
            assert_eq!(ours, theirs, "{c:?}");
        }
    }

    #[test]
    fn names_that_are_not_qualified_names_are_refused() {
        // Fuzzing found ':npp:x' kept as an attribute and written back as 'npp:x', an
        // undeclared prefix.
        let bad = [
            r#"<a xmlns:p="urn:p" :npp:x="1"/>"#,
            r#"<a p:q:x="1" xmlns:p="urn:p"/>"#,
            r#"<a x:="1"/>"#,
            r#"<:a/>"#,
            r#"<p:a:b xmlns:p="urn:p"/>"#,
            r#"<a xmlns:p:q="urn:p"/>"#,
        ];
        for doc in bad {
            match parse(doc, &Limits::default()) {
                Err(XmlError::Malformed { line: 1, msg }) => {
                    assert!(msg.contains("name") || msg.contains("prefix"), "{doc}: {msg}")
                }
                other => panic!("{doc}: {other:?}"),
            }
        }
        let ok = parse(r#"<p:a xmlns:p="urn:p" p:x="1" y="2"/>"#, &Limits::default()).unwrap();
        assert_eq!(ok.name, QName::new("urn:p", "a"));
        assert_eq!(ok.attr("urn:p", "x"), Some("1"));
        assert_eq!(ok.attr("", "y"), Some("2"));
    }
}
