//! The text log's field formatter: [`PlainFields`] writes exactly what tracing-subscriber's
//! `DefaultFields` writes (`name=value` pairs, strings quoted as `Debug` quotes them), but
//! without ANSI colours it skips `DefaultFields`' per-field styling machinery (an empty
//! `nu_ansi_term` style painted around every name and `=`) and quotes plain strings without
//! `Debug`'s per-character escaping (the request context of [`super::reqlog`] writes its
//! strings the same way). With colours on,
//! and for the fields `DefaultFields` treats specially (`message`, `r#…` names, errors), it
//! hands over to `DefaultFields`' own visitor.

use std::fmt;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};

/// `DefaultFields`' output, cheaper (see the module documentation).
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainFields;

impl<'a> MakeVisitor<Writer<'a>> for PlainFields {
    type Visitor = PlainVisitor<'a>;
    fn make_visitor(&self, target: Writer<'a>) -> Self::Visitor {
        let ansi = target.has_ansi_escapes();
        PlainVisitor { writer: target, first: true, ansi, result: Ok(()) }
    }
}

pub struct PlainVisitor<'a> {
    writer: Writer<'a>,
    first: bool,
    ansi: bool,
    result: fmt::Result,
}

/// Whether `Debug` would write `s` as it is between the quotes.
pub(super) fn debug_is_verbatim(s: &str) -> bool {
    // Whole chunks without an early exit, so the test vectorises.
    let plain = |b: u8| (0x20..0x7f).contains(&b) & (b != b'"') & (b != b'\\');
    s.as_bytes().chunks(32).all(|c| c.iter().fold(true, |ok, &b| ok & plain(b)))
}

impl PlainVisitor<'_> {
    /// `DefaultVisitor` does it: `log.` fields are metadata already shown, `message`, `r#` names
    /// and errors have their own forms, and with colours on every name is styled.
    fn special(&self, name: &str) -> bool {
        self.ansi || name == "message" || name.starts_with("r#") || name.starts_with("log.")
    }

    /// Runs `DefaultVisitor` for one field, after the separating space it would have written.
    fn delegate(&mut self, field: &Field, f: impl FnOnce(&mut DefaultVisitor<'_>, &Field)) {
        if field.name().starts_with("log.") {
            return;
        }
        self.pad();
        let mut v = DefaultVisitor::new(self.writer.by_ref(), true);
        f(&mut v, field);
        self.result = self.result.and(v.finish());
    }

    fn pad(&mut self) {
        if self.first {
            self.first = false;
        } else {
            self.result = self.result.and(self.writer.write_char(' '));
        }
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        if self.special(field.name()) {
            return self.delegate(field, |v, f| v.record_str(f, value));
        }
        self.pad();
        let w = &mut self.writer;
        self.result = if debug_is_verbatim(value) {
            w.write_str(field.name()).and(w.write_str("=\"")).and(w.write_str(value)).and(w.write_char('"'))
        } else {
            write!(w, "{}={:?}", field.name(), value)
        };
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.result.is_err() {
            return;
        }
        self.delegate(field, |v, f| v.record_error(f, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        if self.special(field.name()) {
            return self.delegate(field, |v, f| v.record_debug(f, value));
        }
        self.pad();
        let w = &mut self.writer;
        self.result = w.write_str(field.name()).and(w.write_char('=')).and(write!(w, "{value:?}"));
    }
}

impl VisitOutput<fmt::Result> for PlainVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for PlainVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

/// A log writer into memory, for the tests of the log formatters.
#[cfg(test)]
pub(super) mod test_writer {
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    pub struct Buf(pub Arc<Mutex<Vec<u8>>>);

    impl Buf {
        /// What was written, as text.
        pub fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_writer::Buf;
    use super::*;

    fn emit() {
        let peer: std::net::SocketAddr = "[::1]:8443".parse().unwrap();
        let span = tracing::info_span!(
            "request",
            peer = %peer,
            service = "WorkspaceService",
            action = tracing::field::Empty,
            dn = "/O=Grid/CN=\"quoted\" \\ é\tx",
            key = tracing::field::Empty,
            n = 3u64,
            r#type = "t",
        );
        let _g = span.enter();
        span.record("action", "http://docs.oasis-open.org/wsrf/GetResourceProperty");
        span.record("key", "a\nb");
        let err = std::io::Error::other("disk on fire");
        tracing::info!(count = -4i64, ok = true, ratio = 0.5, error = &err as &dyn std::error::Error, "done: {}", "x\u{1b}[31m");
        tracing::warn!(what = ?Some("dbg"), plain = "p", "second \"line\"");
        tracing::info!("");
    }

    fn output(plain: bool, ansi: bool) -> String {
        let buf = Buf::default();
        let b = tracing_subscriber::fmt().without_time().with_ansi(ansi).with_writer(buf.clone());
        if plain {
            tracing::subscriber::with_default(b.fmt_fields(PlainFields).finish(), emit);
        } else {
            tracing::subscriber::with_default(b.finish(), emit);
        }
        buf.text()
    }

    #[test]
    fn writes_what_default_fields_writes() {
        for ansi in [false, true] {
            let (default, plain) = (output(false, ansi), output(true, ansi));
            assert!(default.contains("WorkspaceService") && default.lines().count() == 3, "{default}");
            assert_eq!(plain, default, "ansi {ansi}");
        }
    }
}
