//! libxml2 XPath evaluation for QueryResourceProperties (libxml objects never cross an await),
//! with an operation budget and a cancellation hook; `query.rs` runs it on its own threads.

use super::faults::{BaseFault, FaultType};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Why an evaluation produced no result.
pub enum Failure {
    Fault(BaseFault),
    /// libxml2's operation limit was reached (the budget, or a cancellation lowering it).
    OpLimit,
}

impl From<BaseFault> for Failure {
    fn from(f: BaseFault) -> Self {
        Failure::Fault(f)
    }
}

/// libxml2's XPATH_OP_LIMIT_EXCEEDED as the error code libxml2 2.9.14 reports (1225: its
/// message table is one ahead of the enum), and the message, for other numberings.
fn is_op_limit(e: &libxml::xpath::XPathError) -> bool {
    e.code == 1225 || e.to_string().contains("Operation limit exceeded")
}
use crate::soap::xml::{escape, is_xml_char};
use libxml::bindings::xmlXPathObjectType_XPATH_NODESET;
use libxml::parser::Parser;
use libxml::tree::{Document, NodeType};
use libxml::xpath::{Context, Expression};

/// libxml2 XPath error codes (xmlerror.h) that mean the expression itself is malformed, as
/// opposed to failing against this document or context (undefined variable, unknown function,
/// undeclared prefix, invalid operand types).
fn is_syntax_error(code: i32) -> bool {
    matches!(code, 1201..=1204 | 1206..=1208 | 1212 | 1216 | 1220 | 1221)
}

/// Evaluates with at most `op_limit` libxml2 operations; while it runs, the context pointer
/// is in `running` (so that another thread can lower its limit to stop it).
pub fn evaluate(
    doc_xml: &str,
    expr: &str,
    scope: &[(String, String)],
    op_limit: u64,
    running: &Mutex<Option<usize>>,
    cancelled: &AtomicBool,
) -> Result<String, Failure> {
    if expr.is_empty() {
        return Err(BaseFault::new(FaultType::InvalidQueryExpression, "empty XPath expression").into());
    }
    // Expression and bindings arrived inside an XML message, so they hold only XML 1.0
    // characters; anything else is refused: a NUL would end libxml2's C strings early (and the
    // bindings' wrapper panics on one), and a string literal holding e.g. U+FFFF would come back
    // in a result no XML answer can carry.
    let bad = |s: &str| s.chars().find(|c| !is_xml_char(*c));
    let name = |c: char| if c == '\0' { "NUL (U+0000)".to_string() } else { format!("U+{:04X}", c as u32) };
    if let Some(c) = bad(expr) {
        return Err(BaseFault::new(
            FaultType::InvalidQueryExpression,
            format!("the XPath expression holds the character {}, which XML 1.0 does not allow", name(c)),
        )
        .into());
    }
    if let Some((p, u, c)) = scope.iter().find_map(|(p, u)| bad(p).or_else(|| bad(u)).map(|c| (p, u, c))) {
        return Err(BaseFault::new(
            FaultType::InvalidQueryExpression,
            format!("namespace binding {p:?} = {u:?} holds the character {}, which XML 1.0 does not allow", name(c)),
        )
        .into());
    }
    let compiled = Expression::compile(expr)
        .map_err(|e| BaseFault::new(FaultType::InvalidQueryExpression, format!("invalid XPath 1.0 expression '{expr}': {e}")))?;
    let doc = Parser::default()
        .parse_string(doc_xml)
        .map_err(|e| BaseFault::internal(format!("resource property document unreadable: {e:?}")))?;
    let ctx = Context::new(&doc).map_err(|_| BaseFault::internal("XPath context"))?;
    for (p, u) in scope {
        if !p.is_empty() {
            let _ = ctx.register_namespace(p, u);
        }
    }
    // SAFETY: ctx is a valid context owned by this function; opLimit/opCount exist in
    // libxml2 >= 2.9.11 (the bindings are generated from the installed headers).
    unsafe {
        (*ctx.as_ptr()).opLimit = op_limit as std::os::raw::c_ulong;
        (*ctx.as_ptr()).opCount = 0;
    }
    // Reachable for cancellation from here on; a cancellation that came before it was
    // reachable is seen through the flag (set before the canceller looks at `running`).
    *running.lock().unwrap_or_else(|p| p.into_inner()) = Some(ctx.as_ptr() as usize);
    let evaluated = if cancelled.load(Ordering::SeqCst) { None } else { Some(ctx.evaluate_compiled(&compiled)) };
    *running.lock().unwrap_or_else(|p| p.into_inner()) = None;
    let evaluated = evaluated.ok_or(Failure::OpLimit)?;
    let obj = evaluated.map_err(|e| {
        // libxml2 finds some malformed expressions (e.g. `count(`) only when running them.
        if is_op_limit(&e) {
            Failure::OpLimit
        } else if is_syntax_error(e.code) {
            BaseFault::new(FaultType::InvalidQueryExpression, format!("invalid XPath 1.0 expression '{expr}': {e}")).into()
        } else {
            BaseFault::new(FaultType::QueryEvaluationError, format!("XPath '{expr}' could not be evaluated: {e}")).into()
        }
    })?;
    // SAFETY: obj.ptr is a valid xmlXPathObjectPtr owned by `obj` for this scope.
    let kind = unsafe { (*obj.ptr).type_ };
    let mut out = String::new();
    if kind == xmlXPathObjectType_XPATH_NODESET {
        for node in obj.get_nodes_as_vec() {
            match node.get_type() {
                Some(NodeType::ElementNode) => {
                    // Copy into a fresh document so every namespace in use gets declared.
                    let copy = Document::dup_node_into_new_doc(&node).map_err(|_| BaseFault::internal("copying XPath result"))?;
                    let root = copy.get_root_element().ok_or_else(|| BaseFault::internal("empty copy"))?;
                    out.push_str(&copy.node_to_string(&root));
                }
                _ => out.push_str(&escape(&node.get_content())),
            }
        }
    } else {
        out.push_str(&escape(&obj.to_string()));
    }
    Ok(out)
}

/// One evaluation with the default budget and no cancellation (tests and the fuzz targets).
pub fn evaluate_once(doc_xml: &str, expr: &str, scope: &[(String, String)]) -> Result<String, BaseFault> {
    let running = Mutex::new(None);
    evaluate(doc_xml, expr, scope, 10_000_000, &running, &AtomicBool::new(false)).map_err(|f| match f {
        Failure::Fault(f) => f,
        Failure::OpLimit => BaseFault::new(FaultType::QueryEvaluationError, "XPath operation budget exhausted"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzzing (fuzz/, target xpath): a namespace binding holding a NUL panicked inside the libxml
    /// crate's `register_namespace`; an expression holding one must be refused as well.
    #[test]
    fn nul_in_bindings_or_expression_is_a_fault_not_a_panic() {
        let doc = "<rp:R xmlns:rp=\"urn:rp\"><rp:State>Unstaged</rp:State></rp:R>";
        let bindings = [("\t\t\0\0ce".to_string(), "^'".to_string())];
        let e = evaluate_once(doc, "|", &bindings).unwrap_err();
        assert_eq!(e.kind, FaultType::InvalidQueryExpression);
        assert!(e.description.contains("NUL"), "{}", e.description);
        let bindings = [("rp".to_string(), "urn:\0rp".to_string())];
        assert_eq!(evaluate_once(doc, "//rp:State", &bindings).unwrap_err().kind, FaultType::InvalidQueryExpression);
        let e = evaluate_once(doc, "//rp:State\0", &[("rp".to_string(), "urn:rp".to_string())]).unwrap_err();
        assert_eq!(e.kind, FaultType::InvalidQueryExpression);
        // Fuzzing: U+FFFF in a string literal came back in a result no XML answer can carry.
        let e = evaluate_once(doc, "\"\u{ffff}\nx\"", &[]).unwrap_err();
        assert_eq!(e.kind, FaultType::InvalidQueryExpression);
        assert!(e.description.contains("U+FFFF"), "{}", e.description);
        // The bindings that are fine still work.
        assert_eq!(evaluate_once(doc, "string(//rp:State)", &[("rp".to_string(), "urn:rp".to_string())]).unwrap(), "Unstaged");
    }
}
