//! WS-ResourceProperties (2004/06): GetResourceProperty, GetMultipleResourceProperties,
//! QueryResourceProperties (XPath 1.0 through libxml2) and SetResourceProperties (Insert, Update,
//! Delete; all-or-nothing) over a home's resource property documents.

use super::faults::{BaseFault, FaultType};
use super::home::{Home, ResourceState, ResourceType, Source};
use crate::soap::ns;
use crate::soap::time;
use crate::soap::xml::{Element, QName};

/// Which WSRF operation a guard is asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// A dateTime-valued property element (nil when None).
fn time_xml(name: &QName, t: Option<i64>) -> String {
    match t {
        Some(t) => format!("<p:{0} xmlns:p=\"{1}\">{2}</p:{0}>", name.local, name.ns, time::format_ms(t)),
        None => format!("<p:{} xmlns:p=\"{}\" xmlns:xsi=\"{}\" xsi:nil=\"true\"/>", name.local, name.ns, ns::XSI),
    }
}

/// Append the values of property `q` to `out`.
fn write_values(rtype: &ResourceType, st: &ResourceState, q: &QName, out: &mut String) -> Result<(), BaseFault> {
    let i = rtype.index_of(q).ok_or_else(|| BaseFault::new(FaultType::InvalidResourcePropertyQName, q.clark()))?;
    write_decl(rtype, st, i, out);
    Ok(())
}

/// The serialized values of the `i`th declared property (computed ones included).
pub fn value_xml(rtype: &ResourceType, st: &ResourceState, i: usize) -> String {
    let mut out = String::new();
    write_decl(rtype, st, i, &mut out);
    out
}

fn write_decl(rtype: &ResourceType, st: &ResourceState, i: usize, out: &mut String) {
    let d = &rtype.props[i];
    match d.source {
        Source::Stored => out.push_str(&st.values[i].xml),
        Source::CurrentTime => out.push_str(&time_xml(&d.name, Some(time::now_ms()))),
        Source::TerminationTime => out.push_str(&time_xml(&d.name, st.termination_ms)),
        Source::Topics => {
            for t in rtype.topics() {
                out.push_str(&format!(
                    "<wsnt:Topic wsnt:Dialect=\"{}\" xmlns:t=\"{}\" xmlns:wsnt=\"{}\">t:{}</wsnt:Topic>",
                    ns::SIMPLE_TOPIC_DIALECT,
                    t.ns,
                    ns::WSNT,
                    t.local
                ));
            }
        }
        Source::FixedTopicSet => {
            out.push_str(&format!("<wsnt:FixedTopicSet xmlns:wsnt=\"{}\">true</wsnt:FixedTopicSet>", ns::WSNT))
        }
        Source::TopicDialects => out.push_str(&format!(
            "<wsnt:TopicExpressionDialects xmlns:wsnt=\"{}\">{}</wsnt:TopicExpressionDialects>",
            ns::WSNT,
            ns::SIMPLE_TOPIC_DIALECT
        )),
    }
}

fn qname_of(el: &Element, text: &str) -> Result<QName, BaseFault> {
    el.resolve_qname(text)
        .map_err(|e| BaseFault::new(FaultType::InvalidResourcePropertyQName, format!("invalid resource property QName: {e}")))
}

/// GetResourceProperty: the body's text is a QName.
pub async fn get(
    home: &Home,
    key: &str,
    req: &Element,
    guard: impl FnOnce(&ResourceState, Access) -> Result<(), BaseFault>,
) -> Result<String, BaseFault> {
    let q = qname_of(req, &req.text())?;
    home.read(key, FaultType::RpResourceUnknown, |st| {
        guard(st, Access::Read)?;
        let mut out = String::with_capacity(256);
        out.push_str("<GetResourcePropertyResponse xmlns=\"");
        out.push_str(ns::WSRP);
        out.push_str("\">");
        write_values(&home.rtype, st, &q, &mut out)?;
        out.push_str("</GetResourcePropertyResponse>");
        Ok(out)
    })
    .await
}

/// GetMultipleResourceProperties: values of every requested property, in request order.
pub async fn get_multiple(
    home: &Home,
    key: &str,
    req: &Element,
    guard: impl FnOnce(&ResourceState, Access) -> Result<(), BaseFault>,
) -> Result<String, BaseFault> {
    let mut names = Vec::new();
    for rp in req.elements() {
        if !rp.is(ns::WSRP, "ResourceProperty") {
            return Err(BaseFault::new(
                FaultType::InvalidResourcePropertyQName,
                format!("unexpected element {} in GetMultipleResourceProperties", rp.name),
            ));
        }
        names.push(qname_of(rp, &rp.text())?);
    }
    if names.is_empty() {
        return Err(BaseFault::new(FaultType::InvalidResourcePropertyQName, "no ResourceProperty requested"));
    }
    home.read(key, FaultType::RpResourceUnknown, |st| {
        guard(st, Access::Read)?;
        let mut out = format!("<GetMultipleResourcePropertiesResponse xmlns=\"{}\">", ns::WSRP);
        for q in &names {
            write_values(&home.rtype, st, q, &mut out)?;
        }
        out.push_str("</GetMultipleResourcePropertiesResponse>");
        Ok(out)
    })
    .await
}

/// The whole resource property document of a resource.
pub fn document(rtype: &ResourceType, st: &ResourceState) -> String {
    let mut out = format!("<rp:{} xmlns:rp=\"{}\">", rtype.rp_root.local, rtype.rp_root.ns);
    for i in 0..rtype.props.len() {
        write_decl(rtype, st, i, &mut out);
    }
    out.push_str(&format!("</rp:{}>", rtype.rp_root.local));
    out
}

/// QueryResourceProperties with the XPath 1.0 dialect, evaluated by libxml2 against the
/// resource property document. Prefixes in the expression resolve against the namespace
/// declarations in scope on the QueryExpression element.
pub async fn query(
    home: &Home,
    key: &str,
    caller: &str,
    req: &Element,
    guard: impl FnOnce(&ResourceState, Access) -> Result<(), BaseFault>,
) -> Result<String, BaseFault> {
    let qe = req
        .child(ns::WSRP, "QueryExpression")
        .ok_or_else(|| BaseFault::new(FaultType::InvalidQueryExpression, "QueryResourceProperties has no QueryExpression"))?;
    let dialect = qe.attr("", "Dialect").unwrap_or("").trim();
    if dialect != ns::XPATH_DIALECT {
        return Err(BaseFault::new(
            FaultType::UnknownQueryExpressionDialect,
            format!("query dialect '{dialect}' is not supported; use {}", ns::XPATH_DIALECT),
        ));
    }
    let expr = qe.text();
    let doc = home
        .read(key, FaultType::RpResourceUnknown, |st| {
            guard(st, Access::Read)?;
            Ok(document(&home.rtype, st))
        })
        .await?;
    // libxml2 evaluation can take a while on a hostile expression: on the query pool, within
    // its operation budget and time limit, cancelled if this future is dropped.
    let (expr, scope) = (expr.trim().to_string(), qe.scope.bindings());
    let results = super::query::evaluate(caller, doc, expr, scope).await?;
    Ok(format!("<QueryResourcePropertiesResponse xmlns=\"{}\">{results}</QueryResourcePropertiesResponse>", ns::WSRP))
}

/// The XPath evaluator, for the fuzz targets in `fuzz/`.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use super::xpath::evaluate_once as fuzz_xpath_evaluate;

static MAX_PROPERTY_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1024 * 1024);

/// Set the largest value (serialized, all values of one property) SetResourceProperties may
/// write (`[limits] max_property_bytes`).
pub fn set_max_property_bytes(bytes: usize) {
    MAX_PROPERTY_BYTES.store(bytes, std::sync::atomic::Ordering::Relaxed);
}

fn max_property_bytes() -> usize {
    MAX_PROPERTY_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}

/// One component of a SetResourceProperties request.
enum Change {
    Insert(QName, Vec<String>),
    Update(QName, Vec<String>),
    Delete(QName),
}

fn same_qname(kind: &str, children: &[&Element]) -> Result<QName, BaseFault> {
    let first = children.first().ok_or_else(|| {
        BaseFault::new(FaultType::InvalidSetResourcePropertiesRequestContent, format!("{kind} holds no property element"))
    })?;
    if children.iter().any(|c| c.name != first.name) {
        return Err(BaseFault::new(
            FaultType::InvalidSetResourcePropertiesRequestContent,
            format!("{kind} mixes different properties; one {kind} may hold values of one property only"),
        ));
    }
    Ok(first.name.clone())
}

fn parse_changes(req: &Element) -> Result<Vec<Change>, BaseFault> {
    let mut changes = Vec::new();
    for c in req.elements() {
        let kids: Vec<&Element> = c.elements().collect();
        let values = || kids.iter().map(|k| k.to_fragment()).collect::<Vec<_>>();
        match (c.name.ns.as_str(), c.name.local.as_str()) {
            (ns::WSRP, "Insert") => changes.push(Change::Insert(same_qname("Insert", &kids)?, values())),
            (ns::WSRP, "Update") => changes.push(Change::Update(same_qname("Update", &kids)?, values())),
            (ns::WSRP, "Delete") => {
                let text = c.attr("", "ResourceProperty").ok_or_else(|| {
                    BaseFault::new(
                        FaultType::InvalidSetResourcePropertiesRequestContent,
                        "Delete without ResourceProperty attribute",
                    )
                })?;
                changes.push(Change::Delete(qname_of(c, text)?));
            }
            _ => {
                return Err(BaseFault::new(
                    FaultType::InvalidSetResourcePropertiesRequestContent,
                    format!("unexpected element {} in SetResourceProperties (expected Insert, Update or Delete)", c.name),
                ))
            }
        }
    }
    if changes.is_empty() {
        return Err(BaseFault::new(FaultType::InvalidSetResourcePropertiesRequestContent, "SetResourceProperties is empty"));
    }
    Ok(changes)
}

fn apply(rtype: &ResourceType, st: &mut ResourceState, change: Change) -> Result<(), BaseFault> {
    let q = match &change {
        Change::Insert(q, _) | Change::Update(q, _) | Change::Delete(q) => q.clone(),
    };
    let i = rtype.index_of(&q).ok_or_else(|| BaseFault::new(FaultType::InvalidResourcePropertyQName, q.clark()))?;
    let decl = &rtype.props[i];
    if !decl.modifiable {
        return Err(BaseFault::new(FaultType::UnableToModifyResourceProperty, format!("{} is read-only", q.clark())));
    }
    let cur = &st.values[i];
    let (count, xml) = match change {
        Change::Insert(_, v) => (cur.count as usize + v.len(), format!("{}{}", cur.xml, v.concat())),
        Change::Update(_, v) => (v.len(), v.concat()),
        Change::Delete(_) => (0, String::new()),
    };
    let max_bytes = max_property_bytes();
    if xml.len() > max_bytes {
        return Err(BaseFault::new(
            FaultType::InvalidSetResourcePropertiesRequestContent,
            format!("the value of {} would be {} bytes; at most {max_bytes} bytes are accepted", q.clark(), xml.len()),
        ));
    }
    if count < decl.min_occurs || decl.max_occurs.is_some_and(|m| count > m) {
        return Err(BaseFault::new(
            FaultType::InvalidSetResourcePropertiesRequestContent,
            format!(
                "{} would have {} values; it takes {}..{}",
                q.clark(),
                count,
                decl.min_occurs,
                decl.max_occurs.map_or("unbounded".to_string(), |m| m.to_string())
            ),
        ));
    }
    st.values[i] = super::home::Values { count: count as u32, xml: super::intern::intern(&xml) };
    Ok(())
}

/// SetResourceProperties: every component applies, or none does; `touch` then lets the service
/// record the change (e.g. a lastModified property).
pub async fn set(
    home: &Home,
    key: &str,
    req: &Element,
    guard: impl FnOnce(&ResourceState, Access) -> Result<(), BaseFault>,
    touch: impl FnOnce(&mut ResourceState),
) -> Result<String, BaseFault> {
    let changes = parse_changes(req)?;
    home.update(key, FaultType::RpResourceUnknown, |st| {
        guard(st, Access::Write)?;
        for c in changes {
            apply(&home.rtype, st, c)?;
        }
        touch(st);
        Ok(())
    })
    .await
    .map_err(|e| match e.kind {
        // The request was fine but could not be carried out (e.g. the store failed).
        FaultType::Internal => {
            BaseFault::new(FaultType::SetResourcePropertyRequestFailed, "the property changes were not applied").caused_by(e)
        }
        _ => e,
    })?;
    Ok(format!("<SetResourcePropertiesResponse xmlns=\"{}\"/>", ns::WSRP))
}
