//! QueryResourceProperties input (`wsrf::properties` XPath evaluation): any expression, with
//! any namespace bindings, against a workspace-like resource property document, is a result or
//! an `InvalidQueryExpression`/`QueryEvaluationError` fault, and a result is well-formed XML
//! content.
//!
//! Input: namespace bindings as `prefix=uri` lines up to the first empty line (optional), then
//! the expression.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vws::wsrf::properties::fuzz_xpath_evaluate;

const DOC: &str = r#"<rp:WorkspaceResourceProperties xmlns:rp="http://www.globus.org/2008/06/workspace/types" xmlns:wsrl="http://docs.oasis-open.org/wsrf/2004/06/wsrf-WS-ResourceLifetime-1.2-draft-01.xsd"><wsrl:CurrentTime>2026-01-01T00:00:00Z</wsrl:CurrentTime><wsrl:TerminationTime xsi:nil="true" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/><rp:State>Unstaged</rp:State><rp:Comment>a &amp; b &lt; c</rp:Comment><rp:Hardware><rp:CPU count="2" arch="x86_64"/><rp:RAM min="128" max="512"/><rp:Disk name="root" type="image"><rp:Image>gsiftp://host:2811/img</rp:Image></rp:Disk><rp:Disk name="scratch" type="blank"/></rp:Hardware><rp:Network><rp:Nic name="eth0" method="dhcp"/></rp:Network><rp:Owner>/O=Grid/CN=Someone</rp:Owner></rp:WorkspaceResourceProperties>"#;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (scope, expr) = match text.split_once("\n\n") {
        Some((head, expr)) => {
            (head.lines().filter_map(|l| l.split_once('=')).map(|(p, u)| (p.to_string(), u.to_string())).collect(), expr)
        }
        None => (Vec::new(), text),
    };
    // What `query` passes on: the trimmed text of the QueryExpression element.
    let expr = expr.trim();
    if let Ok(out) = fuzz_xpath_evaluate(DOC, expr, &scope) {
        let wrapped = format!("<r xmlns:rp=\"http://www.globus.org/2008/06/workspace/types\">{out}</r>");
        if let Err(e) = vws::soap::xml::parse(&wrapped, &Default::default()) {
            panic!("query result is not well-formed ({e}): {out:?}");
        }
    }
});
