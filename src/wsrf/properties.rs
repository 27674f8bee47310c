//! WS-ResourceProperties (2004/06): GetResourceProperty, GetMultipleResourceProperties,
//! QueryResourceProperties (XPath 1.0 through libxml2) and SetResourceProperties (Insert, Update,
//! Delete; all-or-nothing) over a home's resource property documents.

use super::faults::{BaseFault, FaultType};
use super::home::{time_property_xml, Home, ResourceState, ResourceType, Source};
use super::messages::{
    GetMultipleResourceProperties, GetMultipleResourcePropertiesResponse, GetResourceProperty, GetResourcePropertyResponse,
    QueryResourceProperties, QueryResourcePropertiesResponse, SetComponent, SetResourceProperties, SetResourcePropertiesResponse,
};
use crate::soap::message::Message;
use crate::soap::ns;
use crate::soap::time;
use crate::soap::writer::XmlWriter;
use crate::soap::xml::{Element, QName};

/// Which WSRF operation a guard is asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
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
        Source::CurrentTime => out.push_str(&time_property_xml(&d.name, Some(time::now_ms()))),
        Source::TerminationTime => out.push_str(&time_property_xml(&d.name, st.termination_ms)),
        Source::Topics => {
            let mut w = XmlWriter::with_capacity(256);
            for t in rtype.topics() {
                w.start(
                    "wsnt:Topic",
                    &[("wsnt:Dialect", ns::SIMPLE_TOPIC_DIALECT), ("xmlns:t", &t.ns), ("xmlns:wsnt", ns::WSNT)],
                )
                .text("t:")
                .text(&t.local)
                .end("wsnt:Topic");
            }
            out.push_str(&w.into_string());
        }
        Source::FixedTopicSet => {
            let mut w = XmlWriter::with_capacity(128);
            w.leaf("wsnt:FixedTopicSet", &[("xmlns:wsnt", ns::WSNT)], "true");
            out.push_str(&w.into_string());
        }
        Source::TopicDialects => {
            let mut w = XmlWriter::with_capacity(192);
            w.leaf("wsnt:TopicExpressionDialects", &[("xmlns:wsnt", ns::WSNT)], ns::SIMPLE_TOPIC_DIALECT);
            out.push_str(&w.into_string());
        }
    }
}

/// GetResourceProperty: the values of one property.
pub async fn get_property(
    home: &Home,
    key: &str,
    req: &GetResourceProperty,
    guard: impl FnOnce(&ResourceState, Access) -> Result<(), BaseFault>,
) -> Result<GetResourcePropertyResponse, BaseFault> {
    home.read(key, FaultType::RpResourceUnknown, |st| {
        guard(st, Access::Read)?;
        let mut content = String::with_capacity(128);
        write_values(&home.rtype, st, &req.name, &mut content)?;
        Ok(GetResourcePropertyResponse { content })
    })
    .await
}

/// GetMultipleResourceProperties: values of every requested property, in request order.
pub async fn get_multiple_properties(
    home: &Home,
    key: &str,
    req: &GetMultipleResourceProperties,
    guard: impl FnOnce(&ResourceState, Access) -> Result<(), BaseFault>,
) -> Result<GetMultipleResourcePropertiesResponse, BaseFault> {
    home.read(key, FaultType::RpResourceUnknown, |st| {
        guard(st, Access::Read)?;
        let mut content = String::with_capacity(256);
        for q in &req.names {
            write_values(&home.rtype, st, q, &mut content)?;
        }
        Ok(GetMultipleResourcePropertiesResponse { content })
    })
    .await
}

/// The whole resource property document of a resource.
pub fn document(rtype: &ResourceType, st: &ResourceState) -> String {
    let tag = format!("rp:{}", rtype.rp_root.local);
    let mut values = String::with_capacity(1024);
    for i in 0..rtype.props.len() {
        write_decl(rtype, st, i, &mut values);
    }
    let mut w = XmlWriter::with_capacity(values.len() + 128);
    w.start(&tag, &[("xmlns:rp", &rtype.rp_root.ns)]).raw(&values).end(&tag);
    w.into_string()
}

/// QueryResourceProperties with the XPath 1.0 dialect, evaluated by libxml2 against the
/// resource property document. Prefixes in the expression resolve against the namespace
/// declarations in scope on the QueryExpression element.
pub async fn query_properties(
    home: &Home,
    key: &str,
    caller: &str,
    req: &QueryResourceProperties,
    guard: impl FnOnce(&ResourceState, Access) -> Result<(), BaseFault>,
) -> Result<QueryResourcePropertiesResponse, BaseFault> {
    let doc = home
        .read(key, FaultType::RpResourceUnknown, |st| {
            guard(st, Access::Read)?;
            Ok(document(&home.rtype, st))
        })
        .await?;
    // libxml2 evaluation can take a while on a hostile expression: on the query pool, within
    // its operation budget and time limit, cancelled if this future is dropped.
    let (expr, scope) = (req.expression.trim().to_string(), req.namespaces.clone());
    let content = super::query::evaluate(caller, doc, expr, scope).await?;
    Ok(QueryResourcePropertiesResponse { content })
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

fn apply(rtype: &ResourceType, st: &mut ResourceState, change: SetComponent) -> Result<(), BaseFault> {
    let q = change.name().clone();
    let i = rtype.index_of(&q).ok_or_else(|| BaseFault::new(FaultType::InvalidResourcePropertyQName, q.clark()))?;
    let decl = &rtype.props[i];
    if !decl.modifiable {
        return Err(BaseFault::new(FaultType::UnableToModifyResourceProperty, format!("{} is read-only", q.clark())));
    }
    let cur = &st.values[i];
    let (count, xml) = match change {
        SetComponent::Insert(_, v) => (cur.count as usize + v.len(), [&*cur.xml, &v.concat()].concat()),
        SetComponent::Update(_, v) => (v.len(), v.concat()),
        SetComponent::Delete(_) => (0, String::new()),
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
pub async fn set_properties(
    home: &Home,
    key: &str,
    req: SetResourceProperties,
    guard: impl FnOnce(&ResourceState, Access) -> Result<(), BaseFault>,
    touch: impl FnOnce(&mut ResourceState),
) -> Result<SetResourcePropertiesResponse, BaseFault> {
    home.update(key, FaultType::RpResourceUnknown, |st| {
        guard(st, Access::Write)?;
        for c in req.components {
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
    Ok(SetResourcePropertiesResponse)
}

/// [`set_properties`] from the request element, answering the encoded response.
pub async fn set(
    home: &Home,
    key: &str,
    req: &Element,
    guard: impl FnOnce(&ResourceState, Access) -> Result<(), BaseFault>,
    touch: impl FnOnce(&mut ResourceState),
) -> Result<String, BaseFault> {
    let req = SetResourceProperties::decode(req)?;
    Ok(set_properties(home, key, req, guard, touch).await?.to_xml())
}
