//! WSRF operations end to end against a real `vwsd`: one test per operation and per fault it can
//! raise (WS-ResourceProperties, WS-ResourceLifetime, WS-BaseNotification, the workspace factory,
//! SOAP-level checks, `?wsdl`), answers read with the crate's own DOM, plus one end-to-end run of
//! the `vws` command-line client.

mod common;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};
use vws::soap::xml::{parse, Element, Limits, Node, QName};
use vws::wsrf::time::{format_ms, now_ms, parse_ms};

const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
const XPATH: &str = "http://www.w3.org/TR/1999/REC-xpath-19991116";
const WSA_FAULT_ACTION: &str = "http://schemas.xmlsoap.org/ws/2004/03/addressing/fault";
const SIMPLE_TOPIC: &str = "http://docs.oasis-open.org/wsn/2004/06/TopicExpression/Simple";
const WSNT_ACTION: &str = "http://docs.oasis-open.org/wsn/2004/06/wsn-WS-BaseNotification";

const WS: &str = "WorkspaceService";

// ------------------------------------------------------------------------------------------
// Reading answers

fn big_limits() -> Limits {
    Limits { max_depth: 256, max_elements: 1_000_000, max_attributes: 256 }
}

/// The whole answer as a DOM (panics with the body when it is not XML).
fn dom(r: &HttpResponse) -> Element {
    parse(&r.body, &big_limits()).unwrap_or_else(|e| panic!("answer is not XML ({e}): HTTP {} {}", r.status, r.body))
}

fn soap_body(env: &Element) -> Element {
    assert!(env.is(SOAPENV, "Envelope"), "answer root is {}", env.name);
    env.child(SOAPENV, "Body").expect("answer has a soapenv:Body").clone()
}

fn header_text(env: &Element, local: &str) -> Option<String> {
    env.child(SOAPENV, "Header")?.child(WSA, local).map(|e| e.text().trim().to_string())
}

/// A successful answer: HTTP 200, text/xml, Body's child is `{ns}local`, wsa:Action as given.
fn ok(r: &HttpResponse, ns: &str, local: &str, action: Option<&str>) -> Element {
    assert_eq!(r.status, 200, "expected success, got HTTP {}: {}", r.status, r.body);
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/xml")), "content type {:?}", r.header("content-type"));
    let env = dom(r);
    if let Some(a) = action {
        assert_eq!(header_text(&env, "Action").as_deref(), Some(a), "response wsa:Action; {}", r.body);
        assert!(header_text(&env, "RelatesTo").is_some_and(|v| v.starts_with("uuid:test-")), "RelatesTo; {}", r.body);
    }
    let p = soap_body(&env).first_element().cloned().unwrap_or_else(|| panic!("empty Body: {}", r.body));
    assert!(p.is(ns, local), "expected {{{ns}}}{local}, got {}: {}", p.name, r.body);
    p
}

/// A SOAP fault: HTTP 500 (unless `status` says otherwise), faultcode resolving to `{soapenv}code`
/// (or a dotted sub-code of it), non-empty faultstring. Returns the Fault element.
fn soap_fault_with_status(r: &HttpResponse, code: &str, status: u16) -> Element {
    assert_eq!(r.status, status, "expected a fault with HTTP {status}, got {}: {}", r.status, r.body);
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/xml")), "content type {:?}", r.header("content-type"));
    let env = dom(r);
    let f = soap_body(&env).first_element().cloned().unwrap_or_else(|| panic!("empty Body: {}", r.body));
    assert!(f.is(SOAPENV, "Fault"), "expected soapenv:Fault, got {}: {}", f.name, r.body);
    let fc = f.child("", "faultcode").unwrap_or_else(|| panic!("no faultcode: {}", r.body));
    let q = fc.resolve_qname(&fc.text()).unwrap_or_else(|e| panic!("faultcode unreadable ({e}): {}", r.body));
    assert_eq!(q.ns, SOAPENV, "faultcode namespace: {}", r.body);
    assert!(q.local == code || q.local.starts_with(&format!("{code}.")), "faultcode {} is not {code}: {}", q.local, r.body);
    let fs = f.child("", "faultstring").unwrap_or_else(|| panic!("no faultstring: {}", r.body));
    assert!(!fs.text().trim().is_empty(), "empty faultstring: {}", r.body);
    if let Some(a) = header_text(&env, "Action") {
        assert_eq!(a, WSA_FAULT_ACTION, "fault wsa:Action: {}", r.body);
    }
    f
}

fn soap_fault(r: &HttpResponse, code: &str) -> Element {
    soap_fault_with_status(r, code, 500)
}

/// A WSRF (WS-BaseFaults) fault: a SOAP fault whose detail holds `{ns}local` with a
/// dateTime wsbf:Timestamp and a non-empty wsbf:Description. Returns the detail's fault element.
fn wsrf_fault(r: &HttpResponse, ns: &str, local: &str) -> Element {
    let f = soap_fault(r, "Server");
    let detail = f.child("", "detail").unwrap_or_else(|| panic!("no detail in {}", r.body));
    let el = detail.first_element().cloned().unwrap_or_else(|| panic!("empty detail in {}", r.body));
    assert!(el.is(ns, local), "expected fault {{{ns}}}{local}, got {}: {}", el.name, r.body);
    let ts = el.child(WSBF, "Timestamp").unwrap_or_else(|| panic!("no wsbf:Timestamp: {}", r.body)).text();
    let ts_ms = parse_ms(&ts).unwrap_or_else(|| panic!("wsbf:Timestamp '{ts}' is not a dateTime"));
    assert!((ts_ms - now_ms()).abs() < 60_000, "wsbf:Timestamp {ts} is not now");
    assert!(!description(&el).trim().is_empty(), "empty wsbf:Description: {}", r.body);
    el
}

fn description(fault_el: &Element) -> String {
    fault_el.child(WSBF, "Description").map(|d| d.text()).unwrap_or_default()
}

fn elements(e: &Element) -> Vec<Element> {
    e.elements().cloned().collect()
}

fn text_only(e: &Element) -> String {
    e.children
        .iter()
        .map(|n| match n {
            Node::Text(t) => t.clone(),
            Node::Element(_) => panic!("expected text only in {}", e.name),
        })
        .collect::<String>()
        .trim()
        .to_string()
}

// ------------------------------------------------------------------------------------------
// Requests

fn gp_action() -> String {
    format!("{WSRP_ACTION}/GetResourceProperty")
}

fn ws_call(s: &Server, key: &str, action: &str, payload: &str) -> HttpResponse {
    s.call(WS, &Server::ws_key_header(key), action, payload)
}

/// GetResourceProperty with `qname` text; prefixes w (vws), n (Nimbus), l (wsrl) declared.
fn get_rp(s: &Server, key: &str, qname: &str) -> HttpResponse {
    ws_call(s, key, &gp_action(), &get_rp_payload(qname))
}

fn get_rp_payload(qname: &str) -> String {
    format!(
        "<wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\" xmlns:w=\"{VWS}\" xmlns:n=\"{NIMBUS}\" xmlns:l=\"{WSRL}\">{qname}</wsrp:GetResourceProperty>"
    )
}

/// The values of one property (children of GetResourcePropertyResponse).
fn values(s: &Server, key: &str, qname: &str) -> Vec<Element> {
    let r = get_rp(s, key, qname);
    elements(&ok(&r, WSRP, "GetResourcePropertyResponse", Some(&format!("{}Response", gp_action()))))
}

fn comment(s: &Server, key: &str) -> Option<String> {
    let v = values(s, key, "n:Comment");
    assert!(v.len() <= 1, "Comment has {} values", v.len());
    v.first().map(|e| {
        assert!(e.is(NIMBUS, "Comment"));
        e.text()
    })
}

fn query(s: &Server, key: &str, expr: &str) -> HttpResponse {
    query_with(s, key, XPATH, &format!(" xmlns:w=\"{VWS}\""), expr)
}

fn query_with(s: &Server, key: &str, dialect: &str, decls: &str, expr: &str) -> HttpResponse {
    let expr = vws::soap::xml::escape(expr);
    ws_call(
        s,
        key,
        &format!("{WSRP_ACTION}/QueryResourceProperties"),
        &format!(
            "<wsrp:QueryResourceProperties xmlns:wsrp=\"{WSRP}\"><wsrp:QueryExpression Dialect=\"{dialect}\"{decls}>{expr}</wsrp:QueryExpression></wsrp:QueryResourceProperties>"
        ),
    )
}

/// SetResourceProperties with `components` (prefixes wsrp, w, n, l declared on the request).
fn set_rp_on(s: &Server, service: &str, key_header: &str, components: &str) -> HttpResponse {
    s.call(
        service,
        key_header,
        &format!("{WSRP_ACTION}/SetResourceProperties"),
        &format!(
            "<wsrp:SetResourceProperties xmlns:wsrp=\"{WSRP}\" xmlns:w=\"{VWS}\" xmlns:n=\"{NIMBUS}\" xmlns:l=\"{WSRL}\" xmlns:c=\"{COUNTER}\">{components}</wsrp:SetResourceProperties>"
        ),
    )
}

fn set_rp(s: &Server, key: &str, components: &str) -> HttpResponse {
    set_rp_on(s, WS, &Server::ws_key_header(key), components)
}

fn set_ok(s: &Server, key: &str, components: &str) {
    let r = set_rp(s, key, components);
    let p = ok(&r, WSRP, "SetResourcePropertiesResponse", Some(&format!("{WSRP_ACTION}/SetResourcePropertiesResponse")));
    assert!(p.elements().next().is_none());
}

fn destroy(s: &Server, key: &str) -> HttpResponse {
    ws_call(s, key, &format!("{WSRL_ACTION}/Destroy"), &format!("<wsrl:Destroy xmlns:wsrl=\"{WSRL}\"/>"))
}

fn set_tt(s: &Server, key: &str, requested: &str) -> HttpResponse {
    ws_call(
        s,
        key,
        &format!("{WSRL_ACTION}/SetTerminationTime"),
        &format!("<wsrl:SetTerminationTime xmlns:wsrl=\"{WSRL}\">{requested}</wsrl:SetTerminationTime>"),
    )
}

fn rtt(text: &str) -> String {
    format!("<wsrl:RequestedTerminationTime>{text}</wsrl:RequestedTerminationTime>")
}

fn rtt_nil() -> String {
    format!("<wsrl:RequestedTerminationTime xmlns:xsi=\"{XSI}\" xsi:nil=\"true\"/>")
}

fn row<'a>(dump: &'a [(String, String, Option<i64>, String)], key: &str) -> Option<&'a (String, String, Option<i64>, String)> {
    dump.iter().find(|r| r.1 == key)
}

fn unlimited_policy() -> String {
    "allowed_categories = [\"vm\"]\nallowed_vmms = [\"xen\", \"kvm\", \"qemu\"]\nmax_ram_mib = 16384\nmax_disk_mib = 204800\ndefault_lifetime_secs = 86400\n".into()
}

// ------------------------------------------------------------------------------------------
// GetResourceProperty

#[test]
fn get_resource_property_returns_a_vws_property() {
    let s = Server::start();
    let key = s.create_workspace();
    let v = values(&s, &key, "w:hardware");
    assert_eq!(v.len(), 1);
    let hw = &v[0];
    assert!(hw.is(VWS, "hardware"), "{}", hw.name);
    let ram = hw.child(VWS, "ram").expect("ram");
    assert_eq!((ram.attr("", "min"), ram.attr("", "max")), (Some("256"), Some("1024")));
    let disks: Vec<_> = hw.elements().filter(|e| e.is(VWS, "disk")).map(|d| d.attr("", "name").unwrap().to_string()).collect();
    assert_eq!(disks, ["root", "scratch"]);
    // An unprefixed QName resolves against the default namespace in scope.
    let r = ws_call(
        &s,
        &key,
        &gp_action(),
        &format!("<wsrp:GetResourceProperty xmlns:wsrp=\"{WSRP}\" xmlns=\"{VWS}\">hardware</wsrp:GetResourceProperty>"),
    );
    let v = elements(&ok(&r, WSRP, "GetResourcePropertyResponse", None));
    assert_eq!(v.len(), 1);
    assert!(v[0].is(VWS, "hardware"));
    let v = values(&s, &key, "n:CurrentState");
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].text(), "Unstaged");
}

#[test]
fn get_resource_property_on_the_counter() {
    let s = Server::start();
    let key = s.create_counter("CounterService");
    let r = s.call(
        "CounterService",
        &Server::counter_key_header(&key),
        &gp_action(),
        &format!("<GetResourceProperty xmlns=\"{WSRP}\" xmlns:c=\"{COUNTER}\">c:Value</GetResourceProperty>"),
    );
    let p = ok(&r, WSRP, "GetResourcePropertyResponse", Some(&format!("{}Response", gp_action())));
    let v = elements(&p);
    assert_eq!(v.len(), 1);
    assert!(v[0].is(COUNTER, "Value"));
    assert_eq!(v[0].text(), "0");
}

#[test]
fn get_resource_property_termination_and_current_time() {
    let s = Server::start();
    let before = now_ms();
    let key = s.create_workspace();
    let after = now_ms();
    let tt = values(&s, &key, "l:TerminationTime");
    assert_eq!(tt.len(), 1);
    assert!(tt[0].is(WSRL, "TerminationTime"));
    assert!(!tt[0].is_nil());
    let t = parse_ms(&tt[0].text()).unwrap_or_else(|| panic!("TerminationTime '{}'", tt[0].text()));
    // The sample asks for lifeCycle 3600 s.
    assert!(t >= before + 3_600_000 && t <= after + 3_600_000, "TerminationTime {} not creation + 3600 s", tt[0].text());
    assert!(tt[0].text().ends_with('Z'), "not UTC: {}", tt[0].text());
    let ct = values(&s, &key, "l:CurrentTime");
    assert_eq!(ct.len(), 1);
    assert!(ct[0].is(WSRL, "CurrentTime"));
    let c = parse_ms(&ct[0].text()).unwrap_or_else(|| panic!("CurrentTime '{}'", ct[0].text()));
    assert!((c - now_ms()).abs() < 5_000, "CurrentTime {} is not now", ct[0].text());
    assert!(ct[0].text().ends_with('Z'));
    // The stored termination time is the one reported.
    assert_eq!(row(&s.db_dump(), &key).unwrap().2, Some(t));
}

#[test]
fn get_resource_property_unknown_key() {
    let s = Server::start();
    s.create_workspace();
    let f = wsrf_fault(&get_rp(&s, "no-such-key", "w:hardware"), WSRP, "ResourceUnknownFault");
    assert!(description(&f).contains("no-such-key"), "{}", description(&f));
    // Counter too.
    let r = s.call(
        "CounterService",
        &Server::counter_key_header("nope"),
        &gp_action(),
        &format!("<GetResourceProperty xmlns=\"{WSRP}\" xmlns:c=\"{COUNTER}\">c:Value</GetResourceProperty>"),
    );
    wsrf_fault(&r, WSRP, "ResourceUnknownFault");
}

#[test]
fn get_resource_property_missing_key_header() {
    let s = Server::start();
    s.create_workspace();
    let r = s.call(WS, "", &gp_action(), &get_rp_payload("w:hardware"));
    let f = wsrf_fault(&r, WSRP, "ResourceUnknownFault");
    assert!(description(&f).contains("WorkspaceKey"), "{}", description(&f));
    // A key element of the wrong QName is no key either.
    let r = s.call(WS, "<k:WorkspaceKey xmlns:k=\"urn:other\">1</k:WorkspaceKey>", &gp_action(), &get_rp_payload("w:hardware"));
    wsrf_fault(&r, WSRP, "ResourceUnknownFault");
}

#[test]
fn get_resource_property_unknown_property() {
    let s = Server::start();
    let key = s.create_workspace();
    for q in ["w:noSuchProperty", "n:hardware", "hardware", "l:Destroy"] {
        let f = wsrf_fault(&get_rp(&s, &key, q), WSRP, "InvalidResourcePropertyQNameFault");
        assert!(!description(&f).is_empty(), "{q}");
    }
}

#[test]
fn get_resource_property_malformed_qname_and_undeclared_prefix() {
    let s = Server::start();
    let key = s.create_workspace();
    for q in ["w:hard:ware", "1hardware", "w:", ":hardware", "w:hard ware", ""] {
        let r = get_rp(&s, &key, q);
        wsrf_fault(&r, WSRP, "InvalidResourcePropertyQNameFault");
    }
    let f = wsrf_fault(&get_rp(&s, &key, "zz:hardware"), WSRP, "InvalidResourcePropertyQNameFault");
    assert!(description(&f).contains("zz"), "{}", description(&f));
}

// ------------------------------------------------------------------------------------------
// GetMultipleResourceProperties

fn get_multiple(s: &Server, key: &str, names: &[&str]) -> HttpResponse {
    let mut p = format!("<wsrp:GetMultipleResourceProperties xmlns:wsrp=\"{WSRP}\" xmlns:w=\"{VWS}\" xmlns:l=\"{WSRL}\">");
    for n in names {
        // Nimbus' prefix declared on the ResourceProperty element itself.
        p.push_str(&format!("<wsrp:ResourceProperty xmlns:n=\"{NIMBUS}\">{n}</wsrp:ResourceProperty>"));
    }
    p.push_str("</wsrp:GetMultipleResourceProperties>");
    ws_call(s, key, &format!("{WSRP_ACTION}/GetMultipleResourceProperties"), &p)
}

#[test]
fn get_multiple_resource_properties_keeps_request_order() {
    let s = Server::start();
    let key = s.create_workspace();
    set_ok(&s, &key, "<wsrp:Insert><n:Comment>c1</n:Comment></wsrp:Insert>");
    let order = ["l:CurrentTime", "w:hardware", "n:CurrentState", "w:category", "l:TerminationTime", "n:Comment", "w:lifeCycle"];
    let r = get_multiple(&s, &key, &order);
    let p = ok(
        &r,
        WSRP,
        "GetMultipleResourcePropertiesResponse",
        Some(&format!("{WSRP_ACTION}/GetMultipleResourcePropertiesResponse")),
    );
    let got: Vec<QName> = p.elements().map(|e| e.name.clone()).collect();
    let want = vec![
        QName::new(WSRL, "CurrentTime"),
        QName::new(VWS, "hardware"),
        QName::new(NIMBUS, "CurrentState"),
        QName::new(VWS, "category"),
        QName::new(WSRL, "TerminationTime"),
        QName::new(NIMBUS, "Comment"),
        QName::new(VWS, "lifeCycle"),
    ];
    assert_eq!(got, want, "{}", r.body);
    // Reversed request, reversed answer.
    let rev: Vec<&str> = order.iter().rev().copied().collect();
    let p = ok(&get_multiple(&s, &key, &rev), WSRP, "GetMultipleResourcePropertiesResponse", None);
    let got: Vec<QName> = p.elements().map(|e| e.name.clone()).collect();
    assert_eq!(got, want.into_iter().rev().collect::<Vec<_>>());
    // Properties without a value contribute nothing; the rest stay in order.
    set_ok(&s, &key, "<wsrp:Delete ResourceProperty=\"n:Comment\"/>");
    let p = ok(
        &get_multiple(&s, &key, &["w:lifeCycle", "n:Comment", "w:category"]),
        WSRP,
        "GetMultipleResourcePropertiesResponse",
        None,
    );
    let got: Vec<QName> = p.elements().map(|e| e.name.clone()).collect();
    assert_eq!(got, vec![QName::new(VWS, "lifeCycle"), QName::new(VWS, "category")]);
}

#[test]
fn get_multiple_resource_properties_one_bad_name_faults() {
    let s = Server::start();
    let key = s.create_workspace();
    for bad in ["w:nope", "zz:hardware", "w:a:b"] {
        let r = get_multiple(&s, &key, &["w:hardware", bad, "l:CurrentTime"]);
        wsrf_fault(&r, WSRP, "InvalidResourcePropertyQNameFault");
    }
    let r = get_multiple(&s, "nope", &["w:hardware"]);
    wsrf_fault(&r, WSRP, "ResourceUnknownFault");
}

// ------------------------------------------------------------------------------------------
// QueryResourceProperties

fn query_ok(r: &HttpResponse) -> Element {
    ok(r, WSRP, "QueryResourcePropertiesResponse", Some(&format!("{WSRP_ACTION}/QueryResourcePropertiesResponse")))
}

#[test]
fn query_node_set() {
    let s = Server::start();
    let key = s.create_workspace();
    let p = query_ok(&query(&s, &key, "/*/w:hardware/w:ram"));
    let v = elements(&p);
    assert_eq!(v.len(), 1, "{:?}", p);
    assert!(v[0].is(VWS, "ram"));
    assert_eq!(v[0].attr("", "min"), Some("256"));
    // Several nodes, document order.
    let p = query_ok(&query(&s, &key, "//w:disk"));
    let names: Vec<_> = p.elements().map(|d| (d.name.clone(), d.attr("", "name").unwrap().to_string())).collect();
    assert_eq!(names, vec![(QName::new(VWS, "disk"), "root".into()), (QName::new(VWS, "disk"), "scratch".into())]);
    // Lifetime properties are part of the document.
    let p = query_ok(&query_with(&s, &key, XPATH, &format!(" xmlns:l=\"{WSRL}\""), "//l:TerminationTime"));
    let v = elements(&p);
    assert_eq!(v.len(), 1);
    assert!(v[0].is(WSRL, "TerminationTime"));
    // Empty node-set: empty response.
    let p = query_ok(&query(&s, &key, "//w:nothing"));
    assert!(p.children.is_empty() || text_only(&p).is_empty());
}

#[test]
fn query_number_boolean_string() {
    let s = Server::start();
    let key = s.create_workspace();
    assert_eq!(text_only(&query_ok(&query(&s, &key, "count(//w:hardware/w:disk)"))), "2");
    assert_eq!(text_only(&query_ok(&query(&s, &key, "count(//w:disk) > 1"))), "true");
    assert_eq!(text_only(&query_ok(&query(&s, &key, "count(//w:disk) > 5"))), "false");
    assert_eq!(text_only(&query_ok(&query(&s, &key, "string(//w:ram/@max)"))), "1024");
    assert_eq!(text_only(&query_ok(&query(&s, &key, "//w:ram/@min + 1"))), "257");
    assert_eq!(text_only(&query_ok(&query(&s, &key, "concat(//w:category/w:name, '<&>')"))), "vm<&>");
}

#[test]
fn query_prefixes_come_from_the_query_expression() {
    let s = Server::start();
    let key = s.create_workspace();
    // Any prefix name works, as long as it is declared on (or above) QueryExpression.
    let p = query_ok(&query_with(&s, &key, XPATH, &format!(" xmlns:zz9=\"{VWS}\""), "//zz9:cpu/@arch"));
    assert_eq!(text_only(&p), "x86_64");
    let r = ws_call(
        &s,
        &key,
        &format!("{WSRP_ACTION}/QueryResourceProperties"),
        &format!(
            "<wsrp:QueryResourceProperties xmlns:wsrp=\"{WSRP}\" xmlns:up=\"{VWS}\"><wsrp:QueryExpression Dialect=\"{XPATH}\">count(//up:disk)</wsrp:QueryExpression></wsrp:QueryResourceProperties>"
        ),
    );
    assert_eq!(text_only(&query_ok(&r)), "2");
    // The same prefix bound to another namespace finds nothing.
    let p = query_ok(&query_with(&s, &key, XPATH, " xmlns:w=\"urn:elsewhere\"", "count(//w:disk)"));
    assert_eq!(text_only(&p), "0");
}

#[test]
fn query_unknown_dialect() {
    let s = Server::start();
    let key = s.create_workspace();
    for d in ["urn:no-such-dialect", "http://www.w3.org/TR/1999/REC-xpath-1999111", ""] {
        let f = wsrf_fault(&query_with(&s, &key, d, "", "count(//*)"), WSRP, "UnknownQueryExpressionDialectFault");
        assert!(description(&f).contains(XPATH), "{}", description(&f));
    }
}

#[test]
fn query_syntax_error_is_invalid_query_expression() {
    let s = Server::start();
    let key = s.create_workspace();
    let mut wrong = Vec::new();
    for e in ["//w:ram[", "count(", "///", "@@x", "1 +", "", "count(//w:disk) )", "//w:ram]"] {
        let r = query(&s, &key, e);
        let f = soap_fault(&r, "Server");
        let got = f.child("", "detail").and_then(|d| d.first_element()).map(|d| d.name.clone());
        if got != Some(QName::new(WSRP, "InvalidQueryExpressionFault")) {
            wrong.push(format!("{e:?} -> {}", got.map(|q| q.clark()).unwrap_or_default()));
        } else {
            wsrf_fault(&r, WSRP, "InvalidQueryExpressionFault");
        }
    }
    assert!(wrong.is_empty(), "syntax errors not answered with InvalidQueryExpressionFault: {wrong:#?}");
}

#[test]
fn query_evaluation_errors() {
    let s = Server::start();
    let key = s.create_workspace();
    for e in ["//undeclared:ram", "frobnicate(1)", "count(//zz:disk)"] {
        let f = wsrf_fault(&query(&s, &key, e), WSRP, "QueryEvaluationErrorFault");
        assert!(description(&f).contains(e), "{e}: {}", description(&f));
    }
}

#[test]
fn query_unknown_resource() {
    let s = Server::start();
    s.create_workspace();
    wsrf_fault(&query(&s, "not-a-key", "count(//*)"), WSRP, "ResourceUnknownFault");
    let r = s.call(
        WS,
        "",
        &format!("{WSRP_ACTION}/QueryResourceProperties"),
        &format!("<wsrp:QueryResourceProperties xmlns:wsrp=\"{WSRP}\"><wsrp:QueryExpression Dialect=\"{XPATH}\">1</wsrp:QueryExpression></wsrp:QueryResourceProperties>"),
    );
    wsrf_fault(&r, WSRP, "ResourceUnknownFault");
}

// ------------------------------------------------------------------------------------------
// SetResourceProperties

#[test]
fn set_resource_properties_insert_update_delete_comment() {
    let s = Server::start();
    let key = s.create_workspace();
    assert_eq!(comment(&s, &key), None);
    let lm0 = values(&s, &key, "w:lastModified")[0].text();
    std::thread::sleep(Duration::from_millis(5));

    set_ok(&s, &key, "<wsrp:Insert><n:Comment>hello &amp; welcome</n:Comment></wsrp:Insert>");
    assert_eq!(comment(&s, &key).as_deref(), Some("hello & welcome"));
    assert!(row(&s.db_dump(), &key).unwrap().3.contains("hello &amp; welcome"), "{:?}", row(&s.db_dump(), &key));
    let lm1 = values(&s, &key, "w:lastModified")[0].text();
    assert!(parse_ms(&lm1) > parse_ms(&lm0), "lastModified not touched: {lm0} -> {lm1}");

    // Update with a Comment written in another prefix / default namespace.
    set_ok(&s, &key, &format!("<wsrp:Update><Comment xmlns=\"{NIMBUS}\">second</Comment></wsrp:Update>"));
    assert_eq!(comment(&s, &key).as_deref(), Some("second"));
    assert!(row(&s.db_dump(), &key).unwrap().3.contains("second"));

    set_ok(&s, &key, "<wsrp:Delete ResourceProperty=\"n:Comment\"/>");
    assert_eq!(comment(&s, &key), None);
    assert!(!row(&s.db_dump(), &key).unwrap().3.contains("second"));

    // Several components in one request, applied in order.
    set_ok(
        &s,
        &key,
        "<wsrp:Insert><n:Comment>a</n:Comment></wsrp:Insert><wsrp:Delete ResourceProperty=\"n:Comment\"/><wsrp:Insert><n:Comment>b</n:Comment></wsrp:Insert><wsrp:Update><n:Comment>c</n:Comment></wsrp:Update>",
    );
    assert_eq!(comment(&s, &key).as_deref(), Some("c"));
    // Survives a restart (it was stored).
    let mut s = s;
    s.restart();
    assert_eq!(comment(&s, &key).as_deref(), Some("c"));
}

#[test]
fn set_resource_properties_is_all_or_nothing() {
    let s = Server::start();
    let key = s.create_workspace();
    set_ok(&s, &key, "<wsrp:Insert><n:Comment>keep</n:Comment></wsrp:Insert>");
    let before = s.db_dump();
    let cases: [(&str, &str, &str); 4] = [
        (
            "<wsrp:Update><n:Comment>changed</n:Comment></wsrp:Update><wsrp:Update><l:CurrentTime>2030-01-01T00:00:00Z</l:CurrentTime></wsrp:Update>",
            WSRP,
            "UnableToModifyResourcePropertyFault",
        ),
        (
            "<wsrp:Delete ResourceProperty=\"n:Comment\"/><wsrp:Update><w:hardware/></wsrp:Update>",
            WSRP,
            "UnableToModifyResourcePropertyFault",
        ),
        (
            "<wsrp:Update><n:Comment>changed</n:Comment></wsrp:Update><wsrp:Insert><n:Comment>second</n:Comment></wsrp:Insert>",
            WSRP,
            "InvalidSetResourcePropertiesRequestContentFault",
        ),
        (
            "<wsrp:Update><n:Comment>changed</n:Comment></wsrp:Update><wsrp:Update><x:Undeclared xmlns:x=\"urn:x\">1</x:Undeclared></wsrp:Update>",
            WSRP,
            "InvalidResourcePropertyQNameFault",
        ),
    ];
    for (components, ns, fault) in cases {
        let r = set_rp(&s, &key, components);
        wsrf_fault(&r, ns, fault);
        assert_eq!(comment(&s, &key).as_deref(), Some("keep"), "after {components}");
        assert_eq!(s.db_dump(), before, "store changed by a failed request: {components}");
    }
}

#[test]
fn set_resource_properties_read_only_properties() {
    let s = Server::start();
    let key = s.create_workspace();
    let before = s.db_dump();
    for c in [
        "<wsrp:Update><l:CurrentTime>2030-01-01T00:00:00Z</l:CurrentTime></wsrp:Update>",
        "<wsrp:Update><l:TerminationTime>2030-01-01T00:00:00Z</l:TerminationTime></wsrp:Update>",
        "<wsrp:Update><w:hardware><w:ram min=\"1\" max=\"2\"/></w:hardware></wsrp:Update>",
        "<wsrp:Insert><w:software/></wsrp:Insert>",
        "<wsrp:Delete ResourceProperty=\"w:hardware\"/>",
        "<wsrp:Update><n:CurrentState>Running</n:CurrentState></wsrp:Update>",
    ] {
        let f = wsrf_fault(&set_rp(&s, &key, c), WSRP, "UnableToModifyResourcePropertyFault");
        assert!(!description(&f).is_empty(), "{c}");
    }
    assert_eq!(s.db_dump(), before);
    assert_eq!(values(&s, &key, "w:hardware").len(), 1);
}

#[test]
fn set_resource_properties_undeclared_property() {
    let s = Server::start();
    let key = s.create_workspace();
    let before = s.db_dump();
    for c in [
        "<wsrp:Update><x:Foo xmlns:x=\"urn:x\">1</x:Foo></wsrp:Update>",
        "<wsrp:Insert><w:Comment>wrong namespace</w:Comment></wsrp:Insert>",
        "<wsrp:Delete ResourceProperty=\"w:nothing\"/>",
        "<wsrp:Delete ResourceProperty=\"zz:Comment\"/>",
        "<wsrp:Delete ResourceProperty=\"n:Com:ment\"/>",
    ] {
        wsrf_fault(&set_rp(&s, &key, c), WSRP, "InvalidResourcePropertyQNameFault");
    }
    assert_eq!(s.db_dump(), before);
}

#[test]
fn set_resource_properties_invalid_request_content() {
    let s = Server::start();
    let key = s.create_workspace();
    set_ok(&s, &key, "<wsrp:Insert><n:Comment>one</n:Comment></wsrp:Insert>");
    let before = s.db_dump();
    for c in [
        // Mixed QNames in one component.
        "<wsrp:Update><n:Comment>a</n:Comment><n:CurrentState>x</n:CurrentState></wsrp:Update>",
        "<wsrp:Insert><n:Comment>a</n:Comment><x:Other xmlns:x=\"urn:x\"/></wsrp:Insert>",
        // Beyond maxOccurs (Comment is 0..1): a second value, or two in one Update.
        "<wsrp:Insert><n:Comment>two</n:Comment></wsrp:Insert>",
        "<wsrp:Update><n:Comment>a</n:Comment><n:Comment>b</n:Comment></wsrp:Update>",
        // Empty request, empty component, unknown component.
        "",
        "<wsrp:Update/>",
        "<wsrp:Replace><n:Comment>a</n:Comment></wsrp:Replace>",
        "<wsrp:Delete/>",
    ] {
        let r = set_rp(&s, &key, c);
        wsrf_fault(&r, WSRP, "InvalidSetResourcePropertiesRequestContentFault");
        assert_eq!(comment(&s, &key).as_deref(), Some("one"), "after {c:?}");
    }
    assert_eq!(s.db_dump(), before);
}

#[test]
fn set_resource_properties_unknown_resource() {
    let s = Server::start();
    let key = s.create_workspace();
    let before = s.db_dump();
    wsrf_fault(&set_rp(&s, "nope", "<wsrp:Insert><n:Comment>x</n:Comment></wsrp:Insert>"), WSRP, "ResourceUnknownFault");
    wsrf_fault(&set_rp_on(&s, WS, "", "<wsrp:Insert><n:Comment>x</n:Comment></wsrp:Insert>"), WSRP, "ResourceUnknownFault");
    assert_eq!(s.db_dump(), before);
    assert_eq!(comment(&s, &key), None);
}

#[test]
fn set_resource_properties_on_counters() {
    let s = Server::start();
    let rw = s.create_counter("CounterServiceRW");
    let h = Server::counter_key_header(&rw);
    let r = set_rp_on(&s, "CounterServiceRW", &h, "<wsrp:Update><c:Value>42</c:Value></wsrp:Update>");
    ok(&r, WSRP, "SetResourcePropertiesResponse", None);
    let r = s.call(
        "CounterServiceRW",
        &h,
        &gp_action(),
        &format!("<GetResourceProperty xmlns=\"{WSRP}\" xmlns:c=\"{COUNTER}\">c:Value</GetResourceProperty>"),
    );
    assert_eq!(elements(&ok(&r, WSRP, "GetResourcePropertyResponse", None))[0].text(), "42");
    // Value is 1..1: deleting it is refused.
    let r = set_rp_on(&s, "CounterServiceRW", &h, "<wsrp:Delete ResourceProperty=\"c:Value\"/>");
    wsrf_fault(&r, WSRP, "InvalidSetResourcePropertiesRequestContentFault");
    // GT 4.0's CounterService has no SetResourceProperties at all.
    let ro = s.create_counter("CounterService");
    let r = set_rp_on(&s, "CounterService", &Server::counter_key_header(&ro), "<wsrp:Update><c:Value>1</c:Value></wsrp:Update>");
    wsrf_fault(&r, VWS, "UnknownOperationFault");
}

// ------------------------------------------------------------------------------------------
// Destroy

#[test]
fn destroy_then_resource_unknown_and_destroy_twice() {
    let s = Server::start();
    let key = s.create_workspace();
    let other = s.create_workspace();
    assert!(row(&s.db_dump(), &key).is_some());
    let r = destroy(&s, &key);
    let p = ok(&r, WSRL, "DestroyResponse", Some(&format!("{WSRL_ACTION}/DestroyResponse")));
    assert!(p.children.is_empty());
    let dump = s.db_dump();
    assert!(row(&dump, &key).is_none(), "destroyed resource still stored");
    assert!(row(&dump, &other).is_some());
    // Destroy again: WS-ResourceLifetime's ResourceUnknownFault.
    let f = wsrf_fault(&destroy(&s, &key), WSRL, "ResourceUnknownFault");
    assert!(description(&f).contains(&key));
    // Property access: WS-ResourceProperties' ResourceUnknownFault.
    wsrf_fault(&get_rp(&s, &key, "w:hardware"), WSRP, "ResourceUnknownFault");
    // Never-existing key, and no key at all.
    wsrf_fault(&destroy(&s, "never-was"), WSRL, "ResourceUnknownFault");
    let r = s.call(WS, "", &format!("{WSRL_ACTION}/Destroy"), &format!("<Destroy xmlns=\"{WSRL}\"/>"));
    wsrf_fault(&r, WSRL, "ResourceUnknownFault");
    // The other one is untouched.
    assert_eq!(values(&s, &other, "w:hardware").len(), 1);
    // Counters are destroyable too.
    let c = s.create_counter("CounterService");
    let r = s.call(
        "CounterService",
        &Server::counter_key_header(&c),
        &format!("{WSRL_ACTION}/Destroy"),
        &format!("<Destroy xmlns=\"{WSRL}\"/>"),
    );
    ok(&r, WSRL, "DestroyResponse", None);
    assert!(row(&s.db_dump(), &c).is_none());
}

// ------------------------------------------------------------------------------------------
// SetTerminationTime

#[test]
fn set_termination_time_to_a_time() {
    let s = Server::start();
    let key = s.create_workspace();
    let want = now_ms() + 600_000;
    let r = set_tt(&s, &key, &rtt(&format_ms(want)));
    let p = ok(&r, WSRL, "SetTerminationTimeResponse", Some(&format!("{WSRL_ACTION}/SetTerminationTimeResponse")));
    let ntt = p.child(WSRL, "NewTerminationTime").expect("NewTerminationTime");
    assert_eq!(parse_ms(&ntt.text()), Some(want), "{}", r.body);
    let ct = p.child(WSRL, "CurrentTime").expect("CurrentTime");
    assert!((parse_ms(&ct.text()).unwrap() - now_ms()).abs() < 5_000);
    assert_eq!(parse_ms(&values(&s, &key, "l:TerminationTime")[0].text()), Some(want));
    assert_eq!(row(&s.db_dump(), &key).unwrap().2, Some(want));
    // A zone offset is honoured; the answer is in UTC.
    let want2 = now_ms() + 1_200_000;
    let local = time::OffsetDateTime::from_unix_timestamp_nanos(want2 as i128 * 1_000_000)
        .unwrap()
        .to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let r = set_tt(&s, &key, &rtt(&local));
    let p = ok(&r, WSRL, "SetTerminationTimeResponse", None);
    let ntt = p.child(WSRL, "NewTerminationTime").unwrap().text();
    assert!(ntt.ends_with('Z'), "{ntt}");
    assert_eq!(parse_ms(&ntt), Some(want2));
    assert_eq!(row(&s.db_dump(), &key).unwrap().2, Some(want2));
}

#[test]
fn set_termination_time_nil_means_never_without_max_lifetime() {
    // [policy] without max_lifetime_secs: conf/vwsd.toml says that means unlimited.
    let s = Server::start_with(Conf { policy: unlimited_policy(), ..Default::default() });
    let key = s.create_workspace();
    let r = set_tt(&s, &key, &rtt_nil());
    let p = ok(&r, WSRL, "SetTerminationTimeResponse", None);
    assert!(p.child(WSRL, "NewTerminationTime").expect("NewTerminationTime").is_nil(), "{}", r.body);
    let tt = values(&s, &key, "l:TerminationTime");
    assert_eq!(tt.len(), 1);
    assert!(tt[0].is_nil(), "TerminationTime not nil: {:?}", tt[0]);
    assert_eq!(row(&s.db_dump(), &key).unwrap().2, None);
    // And a time far in the future is fine too.
    let far = now_ms() + 400 * 24 * 3_600_000;
    ok(&set_tt(&s, &key, &rtt(&format_ms(far))), WSRL, "SetTerminationTimeResponse", None);
}

#[test]
fn set_termination_time_beyond_max_lifetime_is_rejected() {
    let s = Server::start(); // max_lifetime_secs = 1209600 (14 days)
    let key = s.create_workspace();
    let before = s.db_dump();
    let too_far = now_ms() + 15 * 24 * 3_600_000;
    let f = wsrf_fault(&set_tt(&s, &key, &rtt(&format_ms(too_far))), WSRL, "TerminationTimeChangeRejectedFault");
    assert!(description(&f).contains("1209600"), "{}", description(&f));
    // nil (never) while a maximum exists.
    wsrf_fault(&set_tt(&s, &key, &rtt_nil()), WSRL, "TerminationTimeChangeRejectedFault");
    assert_eq!(s.db_dump(), before);
    // Just inside the maximum is accepted.
    let inside = now_ms() + 13 * 24 * 3_600_000;
    ok(&set_tt(&s, &key, &rtt(&format_ms(inside))), WSRL, "SetTerminationTimeResponse", None);
}

#[test]
fn set_termination_time_not_a_date_time() {
    let s = Server::start();
    let key = s.create_workspace();
    let before = s.db_dump();
    for t in ["tomorrow", "", "2026-13-40T25:61:00Z", "1700000000"] {
        let f = wsrf_fault(&set_tt(&s, &key, &rtt(t)), WSRL, "UnableToSetTerminationTimeFault");
        assert!(!description(&f).is_empty());
    }
    // No RequestedTerminationTime at all.
    wsrf_fault(&set_tt(&s, &key, ""), WSRL, "UnableToSetTerminationTimeFault");
    assert_eq!(s.db_dump(), before);
    // Unknown resource: WS-ResourceLifetime's ResourceUnknownFault.
    wsrf_fault(&set_tt(&s, "nope", &rtt(&format_ms(now_ms() + 60_000))), WSRL, "ResourceUnknownFault");
}

#[test]
fn set_termination_time_in_the_past_destroys_soon() {
    let s = Server::start();
    let key = s.create_workspace();
    let keep = s.create_workspace();
    let r = set_tt(&s, &key, &rtt(&format_ms(now_ms() - 60_000)));
    ok(&r, WSRL, "SetTerminationTimeResponse", None);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let r = get_rp(&s, &key, "l:TerminationTime");
        if r.status != 200 {
            wsrf_fault(&r, WSRP, "ResourceUnknownFault");
            break;
        }
        assert!(Instant::now() < deadline, "resource past its termination time still alive after 3 s");
        std::thread::sleep(Duration::from_millis(25));
    }
    let dump = s.db_dump();
    assert!(row(&dump, &key).is_none());
    assert!(row(&dump, &keep).is_some());
    wsrf_fault(&destroy(&s, &key), WSRL, "ResourceUnknownFault");
}

// ------------------------------------------------------------------------------------------
// WS-BaseNotification

#[test]
fn notification_requests_name_unknown_topics_and_answer_current_messages() {
    let s = Server::start();
    let key = s.create_workspace();
    // A declared property is a topic: its current value is the current message.
    let gcm = |topic: &str| {
        format!(
            "<wsnt:GetCurrentMessage xmlns:wsnt=\"{WSNT}\" xmlns:w=\"{VWS}\" xmlns:n=\"{NIMBUS}\"><wsnt:Topic Dialect=\"{SIMPLE_TOPIC}\">{topic}</wsnt:Topic></wsnt:GetCurrentMessage>"
        )
    };
    let r = ws_call(&s, &key, &format!("{WSNT_ACTION}/GetCurrentMessage"), &gcm("n:CurrentState"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains(">Unstaged</"), "{}", r.body);
    let f = wsrf_fault(
        &ws_call(&s, &key, &format!("{WSNT_ACTION}/GetCurrentMessage"), &gcm("w:nosuch")),
        WSNT,
        "TopicNotSupportedFault",
    );
    assert!(description(&f).contains(&format!("{{{VWS}}}nosuch")), "{}", description(&f));
    let sub = format!(
        "<wsnt:Subscribe xmlns:wsnt=\"{WSNT}\" xmlns:wsa=\"{WSA}\" xmlns:n=\"{NIMBUS}\">\
<wsnt:ConsumerReference><wsa:Address>http://127.0.0.1:1/consumer</wsa:Address></wsnt:ConsumerReference>\
<wsnt:TopicExpression Dialect=\"{SIMPLE_TOPIC}\">n:NoSuchState</wsnt:TopicExpression><wsnt:UseNotify>true</wsnt:UseNotify></wsnt:Subscribe>"
    );
    let f = wsrf_fault(&ws_call(&s, &key, &format!("{WSNT_ACTION}/Subscribe"), &sub), WSNT, "TopicNotSupportedFault");
    assert!(description(&f).contains(&format!("{{{NIMBUS}}}NoSuchState")), "{}", description(&f));
    // Unknown resource: WS-BaseNotification's ResourceUnknownFault.
    wsrf_fault(&ws_call(&s, "nope", &format!("{WSNT_ACTION}/Subscribe"), &sub), WSNT, "ResourceUnknownFault");
    // Counters too.
    let c = s.create_counter("CounterService");
    let r = s.call("CounterService", &Server::counter_key_header(&c), &format!("{WSNT_ACTION}/Subscribe"), &sub);
    wsrf_fault(&r, WSNT, "TopicNotSupportedFault");
}

// ------------------------------------------------------------------------------------------
// Factory

#[test]
fn factory_create_returns_an_epr() {
    let s = Server::start();
    let r = s.factory_create(&sample_description());
    let p = ok(&r, VWS, "createResponse", Some(&format!("{VWS}/WorkspaceFactoryPortType/createResponse")));
    let epr = p.child(WSA, "EndpointReference").expect("wsa:EndpointReference");
    assert_eq!(epr.child(WSA, "Address").expect("Address").text().trim(), s.url(WS));
    let rp = epr.child(WSA, "ReferenceProperties").expect("ReferenceProperties");
    let keys = elements(rp);
    assert_eq!(keys.len(), 1);
    assert!(keys[0].is(VWS, "WorkspaceKey"));
    let key = keys[0].text().trim().to_string();
    assert!(!key.is_empty());
    let dump = s.db_dump();
    assert_eq!(dump.len(), 1);
    assert_eq!((dump[0].0.as_str(), dump[0].1.as_str()), (WS, key.as_str()));
    // The EPR works, and the {vws}EPR property holds the same address and key.
    let e = values(&s, &key, "w:EPR");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].child(WSA, "Address").map(|a| a.text()), Some(s.url(WS)));
    // Two creates, two keys.
    let k2 = s.create_workspace();
    assert_ne!(k2, key);
}

#[test]
fn factory_invalid_description_names_path_and_line() {
    let s = Server::start();
    let desc = sample_description().replace("<ram min=\"256\" max=\"1024\"/>", "<ram min=\"2048\" max=\"1024\"/>");
    let line = desc.lines().position(|l| l.contains("<ram ")).unwrap() + 1;
    let f = wsrf_fault(&s.factory_create(&desc), VWS, "InvalidDescriptionFault");
    let d = description(&f);
    assert!(d.contains("/virtualWorkspace/hardware/ram"), "{d}");
    assert!(d.contains(&format!("line {line}")), "expected line {line}: {d}");
    let desc = sample_description().replace("<vmm>xen</vmm>", "<vmm>vmware</vmm>");
    let line = desc.lines().position(|l| l.contains("<vmm>")).unwrap() + 1;
    let d = description(&wsrf_fault(&s.factory_create(&desc), VWS, "InvalidDescriptionFault"));
    assert!(d.contains("/virtualWorkspace/category/vmm") && d.contains(&format!("line {line}")), "{d}");
    let desc = sample_description().replace("<state>shutdown</state>", "<stat>shutdown</stat>");
    let line = desc.lines().position(|l| l.contains("<stat>")).unwrap() + 1;
    let d = description(&wsrf_fault(&s.factory_create(&desc), VWS, "InvalidDescriptionFault"));
    assert!(d.contains("/virtualWorkspace/stat") && d.contains(&format!("line {line}")), "{d}");
    // No description at all.
    wsrf_fault(&s.factory_create(""), VWS, "InvalidDescriptionFault");
    assert!(s.db_dump().is_empty());
}

fn check_rejection(s: &Server, desc: &str, rule: &str) {
    let f = wsrf_fault(&s.factory_create(desc), VWS, "PolicyRejectedFault");
    let d = description(&f);
    assert!(d.contains(rule), "rejection does not name rule {rule}: {d}");
    let code = f.child(WSBF, "ErrorCode").map(|c| c.text());
    assert_eq!(code.as_deref(), Some(rule), "ErrorCode");
    assert!(s.db_dump().is_empty(), "rejected workspace was stored");
}

#[test]
fn factory_policy_rejections_name_the_rule() {
    let s = Server::start();
    let base = sample_description();
    check_rejection(&s, &base.replace("<ram min=\"256\" max=\"1024\"/>", "<ram min=\"32768\" max=\"65536\"/>"), "max_ram_mib");
    check_rejection(&s, &base.replace("min=\"512\" max=\"2048\"", "min=\"300000\" max=\"400000\""), "max_disk_mib");
    check_rejection(&s, &base.replace("<lifeCycle>3600</lifeCycle>", "<lifeCycle>2000000</lifeCycle>"), "max_lifetime_secs");
    let da =
        base.replace("<name>vm</name>\n    <vmm>xen</vmm>\n    <vmmVersion>4.17</vmmVersion>", "<name>dynamic account</name>");
    assert!(da.contains("dynamic account"));
    check_rejection(&s, &da, "allowed_categories");
    let s = Server::start_with(Conf { policy: "allowed_vmms = [\"kvm\"]\n".into(), ..Default::default() });
    check_rejection(&s, &base, "allowed_vmms");
    s.create_workspace_from(&base.replace("<vmm>xen</vmm>", "<vmm>kvm</vmm>"));
}

// ------------------------------------------------------------------------------------------
// SOAP-level checks

#[test]
fn unknown_operation_fault() {
    let s = Server::start();
    let key = s.create_workspace();
    let r = ws_call(&s, &key, "urn:frob", "<f:Frobnicate xmlns:f=\"urn:frob\"/>");
    let f = wsrf_fault(&r, VWS, "UnknownOperationFault");
    assert!(description(&f).contains("Frobnicate"), "{}", description(&f));
    // A WSRF-namespace element no port type has.
    let r = ws_call(&s, &key, &format!("{WSRP_ACTION}/Frob"), &format!("<wsrp:Frob xmlns:wsrp=\"{WSRP}\"/>"));
    wsrf_fault(&r, VWS, "UnknownOperationFault");
    // The factory, and a counter operation that does not exist.
    let action = format!("{VWS}/WorkspaceFactoryPortType/destroyRequest");
    let body = envelope(&s.url("WorkspaceFactoryService"), &action, "", &format!("<destroy xmlns=\"{VWS}\"/>"));
    wsrf_fault(&s.post("WorkspaceFactoryService", &action, &body), VWS, "UnknownOperationFault");
    let c = s.create_counter("CounterService");
    let r = s.call(
        "CounterService",
        &Server::counter_key_header(&c),
        "http://counter.com/CounterPortType/subtractRequest",
        "<subtract xmlns=\"http://counter.com\">1</subtract>",
    );
    wsrf_fault(&r, VWS, "UnknownOperationFault");
}

#[test]
fn soap_action_disagreeing_with_wsa_action_is_a_client_fault() {
    let s = Server::start();
    let key = s.create_workspace();
    let body = envelope(&s.url(WS), &gp_action(), &Server::ws_key_header(&key), &get_rp_payload("w:hardware"));
    let r = s.post(WS, &format!("{WSRL_ACTION}/Destroy"), &body);
    let f = soap_fault(&r, "Client");
    assert!(f.child("", "faultstring").unwrap().text().contains("disagree"), "{}", r.body);
    // Nothing happened.
    assert_eq!(values(&s, &key, "w:hardware").len(), 1);
    // Agreeing (or missing / empty) SOAPAction is fine.
    ok(&s.post(WS, &gp_action(), &body), WSRP, "GetResourcePropertyResponse", None);
    ok(&s.post(WS, "", &body), WSRP, "GetResourcePropertyResponse", None);
    let raw = format!(
        "POST /wsrf/services/{WS} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        s.addr,
        body.len()
    );
    ok(&s.raw(raw.as_bytes()), WSRP, "GetResourcePropertyResponse", None);
}

#[test]
fn must_understand_on_an_unknown_header() {
    let s = Server::start();
    let key = s.create_workspace();
    let hdr = format!(
        "{}<x:Security xmlns:x=\"urn:unknown\" soapenv:mustUnderstand=\"1\">secret</x:Security>",
        Server::ws_key_header(&key)
    );
    let r = ws_call_headers(&s, &hdr);
    let f = soap_fault(&r, "MustUnderstand");
    assert!(f.child("", "faultstring").unwrap().text().contains("urn:unknown"), "{}", r.body);
    // mustUnderstand="0" on the same header, or "1" on the key header, is fine.
    let hdr = format!(
        "{}<x:Security xmlns:x=\"urn:unknown\" soapenv:mustUnderstand=\"0\">secret</x:Security>",
        Server::ws_key_header(&key)
    );
    ok(&ws_call_headers(&s, &hdr), WSRP, "GetResourcePropertyResponse", None);
    let hdr = format!("<k:WorkspaceKey xmlns:k=\"{VWS}\" soapenv:mustUnderstand=\"1\">{key}</k:WorkspaceKey>");
    ok(&ws_call_headers(&s, &hdr), WSRP, "GetResourcePropertyResponse", None);
}

fn ws_call_headers(s: &Server, headers: &str) -> HttpResponse {
    s.call(WS, headers, &gp_action(), &get_rp_payload("w:hardware"))
}

#[test]
fn wsdl_is_served_for_every_service() {
    let s = Server::start();
    for svc in ["WorkspaceFactoryService", "WorkspaceService", "CounterService", "CounterServiceRW"] {
        let r =
            s.raw(format!("GET /wsrf/services/{svc}?wsdl HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", s.addr).as_bytes());
        assert_eq!(r.status, 200, "{svc}: {}", r.body);
        let ct = r.header("content-type").unwrap_or_default();
        assert!(ct.starts_with("text/xml"), "{svc}: content type {ct}");
        // (WSDL content is checked where the WSDL files are written.)
    }
    let r = s.raw(
        format!("GET /wsrf/services/NoSuchService?wsdl HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", s.addr).as_bytes(),
    );
    assert_eq!(r.status, 404);
}

// ------------------------------------------------------------------------------------------
// The vws command-line client

fn vws_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vws")).args(args).output().expect("run vws");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cli_ok(args: &[&str]) -> String {
    let (code, out, err) = vws_cli(args);
    assert_eq!(code, 0, "vws {args:?} failed: {err}{out}");
    out
}

#[test]
fn vws_cli_end_to_end() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let epr_path = dir.path().join("ws.epr");
    let epr_file = epr_path.to_str().unwrap();
    let desc = repo_dir().join("conf/samples/workspace.xml");
    let factory = s.url("WorkspaceFactoryService");

    let out = cli_ok(&["--service", &factory, "create", desc.to_str().unwrap(), "--epr-out", epr_file]);
    // The EPR file: GT4 form, root element in the wsa namespace, Address + ReferenceProperties.
    let text = std::fs::read_to_string(&epr_path).expect("EPR file written");
    let root = parse(&text, &Limits::default()).expect("EPR file is XML");
    assert_eq!(root.name.ns, WSA, "EPR root {}", root.name);
    assert_eq!(root.child(WSA, "Address").map(|a| a.text().trim().to_string()), Some(s.url(WS)));
    let rp = root.child(WSA, "ReferenceProperties").expect("wsa:ReferenceProperties");
    let keys = elements(rp);
    assert_eq!(keys.len(), 1);
    assert!(keys[0].is(VWS, "WorkspaceKey"));
    let key = keys[0].text().trim().to_string();
    assert!(out.contains(&key), "create output does not show the key: {out}");
    assert_eq!(s.db_dump().len(), 1);
    assert_eq!(s.db_dump()[0].1, key);

    // get-property: the hardware element.
    let out = cli_ok(&["--epr", epr_file, "get-property", "hardware"]);
    let hw = parse(out.trim(), &Limits::default()).unwrap_or_else(|e| panic!("get-property output not XML ({e}): {out}"));
    assert!(hw.is(VWS, "hardware"));
    assert_eq!(hw.child(VWS, "ram").and_then(|r| r.attr("", "min")), Some("256"));

    // get-properties: several, in order.
    let out = cli_ok(&["--epr", epr_file, "get-properties", "wsrl:TerminationTime", "category", "nimbus:CurrentState"]);
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 3, "{out}");
    let names: Vec<QName> = lines.iter().map(|l| parse(l, &Limits::default()).unwrap().name).collect();
    assert_eq!(names, vec![QName::new(WSRL, "TerminationTime"), QName::new(VWS, "category"), QName::new(NIMBUS, "CurrentState")]);

    // query: a string result and a node-set.
    let out = cli_ok(&["--epr", epr_file, "query", "count(//*[local-name()='disk'])"]);
    assert_eq!(out.trim(), "2");
    let out = cli_ok(&["--epr", epr_file, "query", "//*[local-name()='ram']"]);
    assert!(parse(out.trim(), &Limits::default()).unwrap().is(VWS, "ram"), "{out}");

    // set-termination-time +600.
    let before = now_ms();
    let out = cli_ok(&["--epr", epr_file, "set-termination-time", "+600"]);
    let tt_line = out.lines().find(|l| l.starts_with("termination time:")).unwrap_or_else(|| panic!("{out}"));
    let tt = parse_ms(tt_line.trim_start_matches("termination time:").trim()).unwrap_or_else(|| panic!("{out}"));
    assert!(tt >= before + 600_000 - 1000 && tt <= now_ms() + 600_000 + 1000, "{out}");
    assert_eq!(s.db_dump()[0].2, Some(tt));

    // --output table.
    let out = cli_ok(&["--epr", epr_file, "--output", "table", "get-property", "hardware"]);
    let line = out.lines().next().unwrap_or_default();
    assert!(line.starts_with(&format!("{{{VWS}}}hardware")), "{out}");
    assert!(line.contains("ram[min=256 max=1024]"), "{out}");
    let out = cli_ok(&["--epr", epr_file, "--output", "table", "get-properties", "wsrl:TerminationTime", "nimbus:CurrentState"]);
    assert!(
        out.lines().any(|l| l.starts_with(&format!("{{{NIMBUS}}}CurrentState")) && l.trim_end().ends_with("Unstaged")),
        "{out}"
    );

    // destroy, then the resource is gone (the client reports the fault and exits non-zero).
    let out = cli_ok(&["--epr", epr_file, "destroy"]);
    assert!(out.contains("destroyed"), "{out}");
    assert!(s.db_dump().is_empty());
    let (code, _, err) = vws_cli(&["--epr", epr_file, "get-property", "hardware"]);
    assert_ne!(code, 0);
    assert!(err.starts_with("Error: ") && err.contains("ResourceUnknownFault"), "{err}");
}

// ------------------------------------------------------------------------------------------
// Issue 9, defect 5: large property values

/// Resident set size of a process, in bytes.
fn rss(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: usize =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches("kB").trim().parse().unwrap();
    kb * 1024
}

/// A value over `max_property_bytes` (default 1 MiB) is refused with a clear fault and changes
/// nothing; values under it that are replaced, or whose resource is destroyed, are freed (today:
/// the 1.2 MB value is taken, and every 1 MB Comment ever written stays in memory).
///
/// vwsd runs here with mimalloc told to give freed memory back at once
/// (`MIMALLOC_PURGE_DELAY=0`), so RSS shows what vwsd still holds. With the default delay,
/// memory a worker thread freed stays resident until that thread allocates again, and an idle
/// server right after a burst of 1 MB requests kept 15–46 MB of it: the assertion measured the
/// allocator's timing, not vwsd (a CI run failed at +46 MB).
#[test]
fn large_property_values_are_bounded_and_freed() {
    let s = Server::start_with(Conf { env: vec![("MIMALLOC_PURGE_DELAY".into(), "0".into())], ..Conf::default() });
    let key = s.create_workspace();
    set_ok(&s, &key, "<wsrp:Update><n:Comment>small</n:Comment></wsrp:Update>");
    let before = s.db_dump();
    let too_big = "x".repeat(1_200_000);
    let r = set_rp(&s, &key, &format!("<wsrp:Update><n:Comment>{too_big}</n:Comment></wsrp:Update>"));
    let f = wsrf_fault(&r, WSRP, "InvalidSetResourcePropertiesRequestContentFault");
    let d = description(&f);
    assert!(d.contains("Comment") && d.contains("at most 1048576 bytes"), "{d}");
    assert_eq!(s.db_dump(), before, "a refused value changed the store");
    assert_eq!(comment(&s, &key).as_deref(), Some("small"));

    let pid = s.child.as_ref().unwrap().id();
    let base = rss(pid);
    for i in 0..100 {
        let v = format!("{i:04}{}", "y".repeat(1_000_000));
        set_ok(&s, &key, &format!("<wsrp:Update><n:Comment>{v}</n:Comment></wsrp:Update>"));
    }
    assert!(comment(&s, &key).unwrap().starts_with("0099"));
    let r = destroy(&s, &key);
    assert_eq!(r.status, 200, "{}", r.body);
    std::thread::sleep(Duration::from_millis(500));
    let after = rss(pid);
    assert!(
        after < base + 40 * 1024 * 1024,
        "RSS grew from {} MB to {} MB after 100 updates of a 1 MB Comment and its destruction",
        base >> 20,
        after >> 20
    );
}
