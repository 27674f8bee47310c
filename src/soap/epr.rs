//! WS-Addressing 2004/03 endpoint references: the (Address, ReferenceProperties) pairs GT 4.0
//! returns from factories and reads from EPR files.

use super::ns;
use super::writer::XmlWriter;
use super::xml::{Element, QName};

/// Declaration of the `wsa` prefix, for [`Epr::encode`].
pub const WSA_DECL: (&str, &str) = ("xmlns:wsa", ns::WSA);

/// An endpoint reference whose reference properties are simple text elements (resource keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Epr {
    pub address: String,
    pub properties: Vec<(QName, String)>,
}

impl Epr {
    pub fn new(address: impl Into<String>) -> Self {
        Epr { address: address.into(), properties: Vec::new() }
    }
    pub fn with_key(address: impl Into<String>, key: QName, value: impl Into<String>) -> Self {
        Epr { address: address.into(), properties: vec![(key, value.into())] }
    }

    /// Write the EPR as an element named `tag` with `wsa:`-prefixed children; `decls` are
    /// written into its start tag (namespace declarations, e.g. [`WSA_DECL`]).
    pub fn encode(&self, w: &mut XmlWriter, tag: &str, decls: &[(&str, &str)]) {
        w.start(tag, decls).leaf("wsa:Address", &[], &self.address).start("wsa:ReferenceProperties", &[]);
        for (i, (q, v)) in self.properties.iter().enumerate() {
            let (t, d) = (format!("k{i}:{}", q.local), format!("xmlns:k{i}"));
            w.leaf(&t, &[(&d, &q.ns)], v);
        }
        w.end("wsa:ReferenceProperties").empty("wsa:ReferenceParameters", &[]).end(tag);
    }

    /// [`Epr::encode`] into a string.
    pub fn to_xml(&self, tag: &str, decls: &[(&str, &str)]) -> String {
        let mut w = XmlWriter::with_capacity(512);
        self.encode(&mut w, tag, decls);
        w.into_string()
    }

    /// An EPR file as GT 4.0's ObjectSerializer writes it (readable by `wsrf-*` clients' `-e`).
    pub fn to_file_xml(&self) -> String {
        let mut body = self.to_xml("wsa:EndpointReference", &[WSA_DECL]);
        body.push('\n');
        body
    }

    /// Read an EPR from any element of type `wsa:EndpointReferenceType`.
    pub fn from_element(e: &Element) -> Result<Epr, String> {
        let address =
            e.child(ns::WSA, "Address").ok_or_else(|| format!("{} has no wsa:Address", e.name))?.text().trim().to_string();
        let mut properties = Vec::new();
        for holder in ["ReferenceProperties", "ReferenceParameters"] {
            if let Some(rp) = e.child(ns::WSA, holder) {
                for p in rp.elements() {
                    properties.push((p.name.clone(), p.text().trim().to_string()));
                }
            }
        }
        Ok(Epr { address, properties })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soap::xml::{parse, Limits};

    #[test]
    fn reads_the_gt4_epr_file_form() {
        let f = r#"<ns00:EndpointReferenceType xmlns:ns00="http://schemas.xmlsoap.org/ws/2004/03/addressing">
 <ns00:Address>http://127.0.0.1:18081/wsrf/services/WorkspaceService</ns00:Address>
 <ns00:ReferenceProperties>
  <ns:WorkspaceKey xmlns:ns="http://www.globus.org/2008/06/workspace">42</ns:WorkspaceKey>
 </ns00:ReferenceProperties>
 <ns00:ReferenceParameters/>
</ns00:EndpointReferenceType>"#;
        let epr = Epr::from_element(&parse(f, &Limits::default()).unwrap()).unwrap();
        assert_eq!(epr.address, "http://127.0.0.1:18081/wsrf/services/WorkspaceService");
        assert_eq!(epr.properties, vec![(QName::new(ns::NIMBUS, "WorkspaceKey"), "42".to_string())]);
        let again = Epr::from_element(&parse(&epr.to_file_xml(), &Limits::default()).unwrap()).unwrap();
        assert_eq!(again, epr);
    }
}
