//! The workspace description (the seed's `virtualWorkspace` schema, `xsd/workspace.xsd`): typed
//! model, strict reading from XML with errors that name the element and line, and canonical
//! writing of each section as a resource property value.

use crate::soap::ns::{VWS, XSI};
use crate::soap::time;
use crate::soap::writer::XmlWriter;
use crate::soap::xml::Element;
use serde::{Deserialize, Serialize};

/// An invalid description: where and why.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("line {line}, element {path}: {message}")]
pub struct DescriptionError {
    pub path: String,
    pub line: u32,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Vmm {
    Xen,
    Kvm,
    Qemu,
}

impl Vmm {
    pub const ALL: [Vmm; 3] = [Vmm::Xen, Vmm::Kvm, Vmm::Qemu];
    pub fn as_str(self) -> &'static str {
        match self {
            Vmm::Xen => "xen",
            Vmm::Kvm => "kvm",
            Vmm::Qemu => "qemu",
        }
    }
}

/// The seed's category: dynamic account, or VM with its VMM (the VM category extension).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Category {
    DynamicAccount,
    Vm { vmm: Vmm, vmm_version: Option<String> },
}

impl Category {
    pub fn name(&self) -> &'static str {
        match self {
            Category::DynamicAccount => "dynamic account",
            Category::Vm { .. } => "vm",
        }
    }
}

/// The seed's workspace (image) state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageState {
    Shutdown,
    Paused,
    Running,
    Corrupted,
}

impl ImageState {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageState::Shutdown => "shutdown",
            ImageState::Paused => "paused",
            ImageState::Running => "running",
            ImageState::Corrupted => "corrupted",
        }
    }
}

/// An inclusive min–max requirement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub min: u64,
    pub max: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Ro,
    Rw,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskType {
    /// An image staged from a URL.
    Image,
    /// A blank disk created at deploy time.
    Blank,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    pub name: String,
    pub kind: DiskType,
    pub access: Access,
    /// Size in MiB.
    pub size: Option<Range>,
    pub image: Option<String>,
    /// The digest the image must have, `algo:hex` (lower-case algorithm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cdrom {
    pub name: String,
    pub image: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Hardware {
    /// RAM in MiB.
    pub ram: Option<Range>,
    pub cpus: Option<Range>,
    pub arch: Option<String>,
    pub disks: Vec<Disk>,
    pub cdroms: Vec<Cdrom>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpMethod {
    Dhcp,
    Static,
    Allocate,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Nic {
    pub name: String,
    pub method: IpMethod,
    pub address: Option<String>,
    pub network: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub nics: Vec<Nic>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Software {
    pub kernel: Option<String>,
    pub distribution: Option<String>,
    pub os_version: Option<String>,
    /// (name, signature)
    pub libraries: Vec<(String, Option<String>)>,
    /// (name, version)
    pub programs: Vec<(String, Option<String>)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Port {
    pub name: String,
    pub port: u16,
    pub protocol: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Capability {
    pub startup: Vec<String>,
    pub services: Vec<Port>,
}

/// A workspace description.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Description {
    pub category: Category,
    pub state: ImageState,
    /// Requested lifetime in seconds.
    pub life_cycle: Option<u64>,
    pub hardware: Option<Hardware>,
    pub network: Option<Network>,
    pub software: Option<Software>,
    pub capability: Option<Capability>,
}

// ---------------------------------------------------------------------------------------------
// Reading

/// Trim XML whitespace (space, tab, CR, LF) only, as xs:token / xs:collapse do.
fn xml_trim(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
}

struct Cx<'a> {
    el: &'a Element,
    path: String,
}

impl<'a> Cx<'a> {
    fn root(el: &'a Element) -> Self {
        Cx { el, path: format!("/{}", el.name.local) }
    }
    fn err(&self, msg: impl Into<String>) -> DescriptionError {
        DescriptionError { path: self.path.clone(), line: self.el.line, message: msg.into() }
    }
    fn sub(&self, el: &'a Element) -> Cx<'a> {
        Cx { el, path: format!("{}/{}", self.path, el.name.local) }
    }
    /// Children, all of which must be in the vws namespace and among `allowed`, in the order of
    /// `allowed` (the schema's xs:sequence; an entry may repeat). Text beside them is refused.
    fn children(&self, allowed: &[&str]) -> Result<Vec<Cx<'a>>, DescriptionError> {
        self.no_text()?;
        let mut out = Vec::new();
        let mut last = 0;
        for c in self.el.elements() {
            let cx = self.sub(c);
            if c.name.ns != VWS {
                return Err(cx.err(format!("element {} is not in the workspace namespace {VWS}", c.name)));
            }
            let Some(pos) = allowed.iter().position(|a| *a == c.name.local) else {
                return Err(if allowed.is_empty() {
                    cx.err("no child elements are allowed here")
                } else {
                    cx.err(format!("unknown element '{}' (expected one of: {})", c.name.local, allowed.join(", ")))
                });
            };
            if pos < last {
                return Err(cx.err(format!("element '{}' is out of order (the order is: {})", c.name.local, allowed.join(", "))));
            }
            last = pos;
            out.push(cx);
        }
        Ok(out)
    }
    /// No text content other than XML whitespace.
    fn no_text(&self) -> Result<(), DescriptionError> {
        let stray = self.el.children.iter().any(|n| matches!(n, crate::soap::xml::Node::Text(t) if !xml_trim(t).is_empty()));
        if stray {
            Err(self.err("unexpected text content"))
        } else {
            Ok(())
        }
    }
    /// An element that must be empty: attributes only.
    fn empty(&self) -> Result<(), DescriptionError> {
        self.children(&[]).map(|_| ())
    }
    fn text(&self) -> Result<String, DescriptionError> {
        if let Some(c) = self.el.elements().next() {
            return Err(self.sub(c).err("expected text, found a child element"));
        }
        Ok(xml_trim(&self.el.text()).to_string())
    }
    /// Attributes, all of which must be among `allowed`; `xsi:schemaLocation` and
    /// `xsi:noNamespaceSchemaLocation` are allowed anywhere, `xsi:type` on any element whose
    /// value names the type xsd/workspace.xsd declares the element with, or a type derived from
    /// it (gSOAP sends one on every typed element). Errors name attributes as written, prefix
    /// included (`xsi:type`).
    fn check_attrs(&self, allowed: &[&str]) -> Result<(), DescriptionError> {
        for a in &self.el.attrs {
            let written = if a.prefix.is_empty() { a.name.local.to_string() } else { format!("{}:{}", a.prefix, a.name.local) };
            if a.name.ns == XSI && matches!(a.name.local.as_str(), "schemaLocation" | "noNamespaceSchemaLocation") {
                continue;
            }
            if a.name.ns == XSI && a.name.local == "type" {
                let Some(types) = declared_types(&self.path) else {
                    return Err(self.err(format!("attribute '{written}' is not allowed on this element")));
                };
                match self.el.resolve_qname(xml_trim(&a.value)) {
                    Ok(q) if types.iter().any(|(ns, local)| q.ns == *ns && q.local == *local) => continue,
                    _ => {
                        let names: Vec<String> = types.iter().map(|(ns, l)| format!("{{{ns}}}{l}")).collect();
                        return Err(self.err(format!(
                            "{written} '{}' is not the element's declared type nor derived from it (expected {})",
                            a.value,
                            names.join(" or ")
                        )));
                    }
                }
            }
            if !a.name.ns.is_empty() || !allowed.contains(&a.name.local.as_str()) {
                return Err(self.err(format!("unknown attribute '{written}'")));
            }
        }
        Ok(())
    }
    fn attr(&self, name: &str) -> Option<String> {
        self.el.attr("", name).map(|s| xml_trim(s).to_string())
    }
    fn req_attr(&self, name: &str) -> Result<String, DescriptionError> {
        self.attr(name).filter(|s| !s.is_empty()).ok_or_else(|| self.err(format!("attribute '{name}' is required")))
    }
    fn num_attr(&self, name: &str) -> Result<Option<u64>, DescriptionError> {
        match self.attr(name) {
            None => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| self.err(format!("attribute '{name}' must be a non-negative integer, not '{v}'"))),
        }
    }
    /// `min` / `max` attributes: at least one required; a missing bound equals the other.
    fn range(&self) -> Result<Range, DescriptionError> {
        let (min, max) = (self.num_attr("min")?, self.num_attr("max")?);
        let r = match (min, max) {
            (Some(a), Some(b)) => Range { min: a, max: b },
            (Some(a), None) => Range { min: a, max: a },
            (None, Some(b)) => Range { min: b, max: b },
            (None, None) => return Err(self.err("a range needs 'min' and/or 'max'")),
        };
        if r.min > r.max {
            return Err(self.err(format!("max ({}) is below min ({})", r.max, r.min)));
        }
        Ok(r)
    }
    fn once<T>(&self, slot: &mut Option<T>, v: T) -> Result<(), DescriptionError> {
        if slot.is_some() {
            return Err(self.err("may appear only once"));
        }
        *slot = Some(v);
        Ok(())
    }
}

const XS: &str = "http://www.w3.org/2001/XMLSchema";
const XS_STRING: &[(&str, &str)] = &[(XS, "string"), (XS, "normalizedString"), (XS, "token")];

/// The types an `xsi:type` may name on the element at `path` (a description path such as
/// `/virtualWorkspace/hardware/ram`): the type xsd/workspace.xsd declares it with and the types
/// derived from that one (for category, the declared `vmCategoryType`; for `xs:string`, the
/// built-in types derived from it that gSOAP or Axis may name). None: no declared type here.
fn declared_types(path: &str) -> Option<&'static [(&'static str, &'static str)]> {
    let rest = path.strip_prefix("/virtualWorkspace")?;
    Some(match rest {
        "" => &[(VWS, "virtualWorkspaceType")],
        "/category" => &[(VWS, "vmCategoryType")],
        "/category/name" => &[(VWS, "categoryNameType")],
        "/category/vmm" => &[(VWS, "vmmType")],
        "/category/vmmVersion" => XS_STRING,
        "/state" => &[(VWS, "stateType")],
        "/creationTime" | "/lastModified" => &[(XS, "dateTime")],
        "/lifeCycle" => &[(XS, "positiveInteger")],
        "/hardware" => &[(VWS, "hardwareType")],
        "/hardware/ram" => &[(VWS, "ramType")],
        "/hardware/cpu" => &[(VWS, "cpuType")],
        "/hardware/disk" => &[(VWS, "diskType")],
        "/hardware/disk/image" => &[(VWS, "imageType")],
        "/hardware/cdrom" => &[(VWS, "cdromType")],
        "/network" => &[(VWS, "networkType")],
        "/network/nic" => &[(VWS, "nicType")],
        "/software" => &[(VWS, "softwareType")],
        "/software/os" => &[(VWS, "osType")],
        "/software/library" => &[(VWS, "libraryType")],
        "/software/program" => &[(VWS, "programType")],
        "/capability" => &[(VWS, "capabilityType")],
        "/capability/startup" => &[(VWS, "startupType")],
        "/capability/service" => &[(VWS, "serviceType")],
        _ => return None,
    })
}

fn parse_enum<T: Copy>(cx: &Cx, value: &str, options: &[(&str, T)]) -> Result<T, DescriptionError> {
    options.iter().find(|(n, _)| *n == value).map(|(_, v)| *v).ok_or_else(|| {
        cx.err(format!("'{value}' is not one of: {}", options.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")))
    })
}

const VMMS: [(&str, Vmm); 3] = [("xen", Vmm::Xen), ("kvm", Vmm::Kvm), ("qemu", Vmm::Qemu)];

fn read_category(cx: &Cx) -> Result<Category, DescriptionError> {
    cx.check_attrs(&[])?;
    if cx.el.elements().next().is_none() {
        let t = xml_trim(&cx.el.text()).to_string();
        return Err(cx.err(format!(
            "category needs a <name> (vm or dynamic account) and, for vm, a <vmm>; the text form '<category>{t}</category>' is not enough"
        )));
    }
    let (mut name, mut vmm, mut version) = (None, None, None);
    for c in cx.children(&["name", "vmm", "vmmVersion"])? {
        c.check_attrs(&[])?;
        match c.el.name.local.as_str() {
            "name" => cx.once(&mut name, (c.text()?, c.el.line))?,
            "vmm" => {
                let v = parse_enum(&c, &c.text()?, &VMMS)?;
                c.once(&mut vmm, v)?
            }
            _ => c.once(&mut version, c.text()?)?,
        }
    }
    let (name, _) = name.ok_or_else(|| cx.err("category needs a <name> (vm or dynamic account)"))?;
    match name.as_str() {
        "vm" => {
            let vmm = vmm.ok_or_else(|| cx.err("a vm category needs <vmm> (xen, kvm or qemu)"))?;
            Ok(Category::Vm { vmm, vmm_version: version })
        }
        "dynamic account" => {
            if vmm.is_some() || version.is_some() {
                return Err(cx.err("<vmm> belongs to the vm category only"));
            }
            Ok(Category::DynamicAccount)
        }
        other => Err(cx.err(format!("category '{other}' is not one of: vm, dynamic account"))),
    }
}

fn read_hardware(cx: &Cx) -> Result<Hardware, DescriptionError> {
    cx.check_attrs(&[])?;
    let mut hw = Hardware::default();
    for c in cx.children(&["ram", "cpu", "disk", "cdrom"])? {
        match c.el.name.local.as_str() {
            "ram" => {
                c.empty()?;
                c.check_attrs(&["min", "max"])?;
                let r = c.range()?;
                c.once(&mut hw.ram, r)?
            }
            "cpu" => {
                c.empty()?;
                c.check_attrs(&["min", "max", "arch"])?;
                let r = c.range()?;
                if r.min == 0 {
                    return Err(c.err("a workspace needs at least one CPU"));
                }
                c.once(&mut hw.cpus, r)?;
                hw.arch = c.attr("arch");
            }
            "disk" => {
                c.check_attrs(&["name", "type", "access", "min", "max"])?;
                let kind = parse_enum(
                    &c,
                    &c.attr("type").unwrap_or_else(|| "image".into()),
                    &[("image", DiskType::Image), ("blank", DiskType::Blank)],
                )?;
                let access =
                    parse_enum(&c, &c.attr("access").unwrap_or_else(|| "rw".into()), &[("ro", Access::Ro), ("rw", Access::Rw)])?;
                let size = if c.attr("min").is_some() || c.attr("max").is_some() { Some(c.range()?) } else { None };
                let mut image = None;
                let mut digest = None;
                for i in c.children(&["image"])? {
                    i.check_attrs(&["digest"])?;
                    let u = i.text()?;
                    check_url(&i, &u)?;
                    i.once(&mut image, u)?;
                    if let Some(d) = i.attr("digest") {
                        digest = Some(check_digest(&i, &d)?);
                    }
                }
                match (kind, &image, size) {
                    (DiskType::Image, None, _) => return Err(c.err("an image disk needs an <image> URL")),
                    (DiskType::Blank, Some(_), _) => return Err(c.err("a blank disk has no <image>")),
                    (DiskType::Blank, None, None) => return Err(c.err("a blank disk needs a size (min/max)")),
                    _ => {}
                }
                let name = c.req_attr("name")?;
                if hw.disks.iter().any(|d| d.name == name) {
                    return Err(c.err(format!("disk name '{name}' is used twice")));
                }
                hw.disks.push(Disk { name, kind, access, size, image, digest });
            }
            _ => {
                c.empty()?;
                c.check_attrs(&["name", "image"])?;
                let image = c.req_attr("image")?;
                check_url(&c, &image)?;
                hw.cdroms.push(Cdrom { name: c.req_attr("name")?, image });
            }
        }
    }
    Ok(hw)
}

/// `algo:hex` with a known algorithm and a digest of its length; returned normalised.
fn check_digest(cx: &Cx, d: &str) -> Result<String, DescriptionError> {
    const ALGOS: [(&str, usize); 5] = [("sha256", 64), ("sha512", 128), ("sha1", 40), ("md5", 32), ("adler32", 8)];
    let ok = d.split_once(':').and_then(|(a, h)| {
        let len = ALGOS.iter().find(|(n, _)| *n == a)?.1;
        (h.len() == len && h.bytes().all(|b| b.is_ascii_hexdigit())).then(|| format!("{a}:{}", h.to_ascii_lowercase()))
    });
    ok.ok_or_else(|| {
        cx.err(format!("digest '{d}' is not ALGO:HEX (sha256, sha512, sha1, md5 or adler32, with a digest of that length)"))
    })
}

fn check_url(cx: &Cx, u: &str) -> Result<(), DescriptionError> {
    const SCHEMES: [&str; 5] = ["file://", "gsiftp://", "http://", "https://", "ftp://"];
    if SCHEMES.iter().any(|s| u.starts_with(s) && u.len() > s.len()) {
        Ok(())
    } else if let Some(rel) = u.strip_prefix("file:").filter(|r| !r.is_empty() && !r.starts_with('/')) {
        // A path relative to the service's data directory (the demo guest's images).
        if rel.split('/').any(|c| c == ".." || c.is_empty()) {
            Err(cx.err(format!("'{u}': a relative file: URL may not contain '..' or empty segments")))
        } else {
            Ok(())
        }
    } else {
        Err(cx.err(format!("'{u}' is not a file://, gsiftp://, http(s):// or ftp:// URL")))
    }
}

fn read_network(cx: &Cx) -> Result<Network, DescriptionError> {
    cx.check_attrs(&[])?;
    let mut net = Network::default();
    for c in cx.children(&["nic"])? {
        c.empty()?;
        c.check_attrs(&["name", "ipMethod", "address", "network"])?;
        let method = parse_enum(
            &c,
            &c.attr("ipMethod").unwrap_or_else(|| "dhcp".into()),
            &[("dhcp", IpMethod::Dhcp), ("static", IpMethod::Static), ("allocate", IpMethod::Allocate)],
        )?;
        let address = c.attr("address");
        match &address {
            Some(a) if a.parse::<std::net::IpAddr>().is_err() => return Err(c.err(format!("'{a}' is not an IP address"))),
            None if method == IpMethod::Static => return Err(c.err("a static NIC needs an 'address'")),
            _ => {}
        }
        net.nics.push(Nic { name: c.req_attr("name")?, method, address, network: c.attr("network") });
    }
    Ok(net)
}

fn read_software(cx: &Cx) -> Result<Software, DescriptionError> {
    cx.check_attrs(&[])?;
    let mut sw = Software::default();
    let mut os_seen = None;
    for c in cx.children(&["os", "library", "program"])? {
        c.empty()?;
        match c.el.name.local.as_str() {
            "os" => {
                c.check_attrs(&["kernel", "distribution", "version"])?;
                c.once(&mut os_seen, ())?;
                sw.kernel = c.attr("kernel");
                sw.distribution = c.attr("distribution");
                sw.os_version = c.attr("version");
            }
            "library" => {
                c.check_attrs(&["name", "signature"])?;
                sw.libraries.push((c.req_attr("name")?, c.attr("signature")));
            }
            _ => {
                c.check_attrs(&["name", "version"])?;
                sw.programs.push((c.req_attr("name")?, c.attr("version")));
            }
        }
    }
    Ok(sw)
}

fn read_capability(cx: &Cx) -> Result<Capability, DescriptionError> {
    cx.check_attrs(&[])?;
    let mut cap = Capability::default();
    for c in cx.children(&["startup", "service"])? {
        c.empty()?;
        match c.el.name.local.as_str() {
            "startup" => {
                c.check_attrs(&["program"])?;
                cap.startup.push(c.req_attr("program")?);
            }
            _ => {
                c.check_attrs(&["name", "port", "protocol"])?;
                let port = c.req_attr("port")?;
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| c.err(format!("port '{port}' is not in 1..65535")))?;
                let protocol =
                    parse_enum(&c, &c.attr("protocol").unwrap_or_else(|| "tcp".into()), &[("tcp", "tcp"), ("udp", "udp")])?;
                cap.services.push(Port { name: c.req_attr("name")?, port, protocol: protocol.to_string() });
            }
        }
    }
    Ok(cap)
}

impl Description {
    /// Read and validate a `virtualWorkspace` element.
    pub fn from_element(el: &Element) -> Result<Description, DescriptionError> {
        let cx = Cx::root(el);
        if !el.is(VWS, "virtualWorkspace") {
            return Err(cx.err(format!("expected {{{VWS}}}virtualWorkspace, found {}", el.name)));
        }
        cx.check_attrs(&[])?;
        let (mut category, mut state, mut life_cycle) = (None, None, None);
        let (mut hardware, mut network, mut software, mut capability) = (None, None, None, None);
        let (mut epr, mut created, mut modified) = (None, None, None);
        for c in cx.children(&[
            "category",
            "state",
            "EPR",
            "creationTime",
            "lifeCycle",
            "lastModified",
            "hardware",
            "network",
            "software",
            "capability",
        ])? {
            match c.el.name.local.as_str() {
                "category" => {
                    let v = read_category(&c)?;
                    c.once(&mut category, v)?
                }
                "state" => {
                    c.check_attrs(&[])?;
                    let v = parse_enum(
                        &c,
                        &c.text()?,
                        &[
                            ("shutdown", ImageState::Shutdown),
                            ("paused", ImageState::Paused),
                            ("running", ImageState::Running),
                            ("corrupted", ImageState::Corrupted),
                        ],
                    )?;
                    c.once(&mut state, v)?
                }
                // Assigned by the service; accepted (and replaced) so that a description read
                // back from a workspace can be submitted again.
                "EPR" => {
                    if c.el.child(crate::soap::ns::WSA, "Address").is_none() {
                        return Err(c.err("an EPR needs a wsa:Address"));
                    }
                    c.once(&mut epr, ())?
                }
                "creationTime" | "lastModified" => {
                    c.check_attrs(&[])?;
                    let t = c.text()?;
                    if time::parse_ms(&t).is_none() {
                        return Err(c.err(format!("'{t}' is not an xsd:dateTime")));
                    }
                    let slot = if c.el.name.local == "creationTime" { &mut created } else { &mut modified };
                    c.once(slot, ())?
                }
                "lifeCycle" => {
                    c.check_attrs(&[])?;
                    let t = c.text()?;
                    let v = t
                        .parse::<u64>()
                        .ok()
                        .filter(|v| *v > 0)
                        .ok_or_else(|| c.err(format!("lifeCycle must be a positive number of seconds, not '{t}'")))?;
                    c.once(&mut life_cycle, v)?
                }
                "hardware" => {
                    let v = read_hardware(&c)?;
                    c.once(&mut hardware, v)?
                }
                "network" => {
                    let v = read_network(&c)?;
                    c.once(&mut network, v)?
                }
                "software" => {
                    let v = read_software(&c)?;
                    c.once(&mut software, v)?
                }
                _ => {
                    let v = read_capability(&c)?;
                    c.once(&mut capability, v)?
                }
            }
        }
        Ok(Description {
            // Schema defaults: category vm is meaningless without a VMM, so category is required.
            category: category.ok_or_else(|| cx.err("<category> is required"))?,
            state: state.unwrap_or(ImageState::Shutdown),
            life_cycle,
            hardware,
            network,
            software,
            capability,
        })
    }

    // -----------------------------------------------------------------------------------------
    // Writing: each section as a self-contained element in the vws namespace.

    pub fn category_xml(&self) -> String {
        let mut w = XmlWriter::with_capacity(128);
        w.start("w:category", &[("xmlns:w", VWS)]).leaf("w:name", &[], self.category.name());
        if let Category::Vm { vmm, vmm_version } = &self.category {
            w.leaf("w:vmm", &[], vmm.as_str());
            if let Some(v) = vmm_version {
                w.leaf("w:vmmVersion", &[], v);
            }
        }
        w.end("w:category");
        w.into_string()
    }

    pub fn hardware_xml(&self) -> Option<String> {
        let hw = self.hardware.as_ref()?;
        let mut w = XmlWriter::with_capacity(256);
        w.start("w:hardware", &[("xmlns:w", VWS)]);
        if let Some(r) = hw.ram {
            w.empty("w:ram", &[("min", &r.min.to_string()), ("max", &r.max.to_string())]);
        }
        if let Some(r) = hw.cpus {
            let (min, max) = (r.min.to_string(), r.max.to_string());
            let mut a = vec![("min", min.as_str()), ("max", max.as_str())];
            a.extend(hw.arch.as_deref().map(|v| ("arch", v)));
            w.empty("w:cpu", &a);
        }
        for d in &hw.disks {
            let kind = if d.kind == DiskType::Image { "image" } else { "blank" };
            let access = if d.access == Access::Rw { "rw" } else { "ro" };
            let size = d.size.map(|r| (r.min.to_string(), r.max.to_string()));
            let mut a = vec![("name", d.name.as_str()), ("type", kind), ("access", access)];
            if let Some((min, max)) = &size {
                a.extend([("min", min.as_str()), ("max", max.as_str())]);
            }
            match &d.image {
                Some(i) => {
                    let digest: Vec<(&str, &str)> = d.digest.as_deref().map(|v| ("digest", v)).into_iter().collect();
                    w.start("w:disk", &a).leaf("w:image", &digest, i).end("w:disk");
                }
                None => {
                    w.empty("w:disk", &a);
                }
            }
        }
        for c in &hw.cdroms {
            w.empty("w:cdrom", &[("name", &c.name), ("image", &c.image)]);
        }
        w.end("w:hardware");
        Some(w.into_string())
    }

    pub fn network_xml(&self) -> Option<String> {
        let net = self.network.as_ref()?;
        let mut w = XmlWriter::with_capacity(128);
        w.start("w:network", &[("xmlns:w", VWS)]);
        for n in &net.nics {
            let m = match n.method {
                IpMethod::Dhcp => "dhcp",
                IpMethod::Static => "static",
                IpMethod::Allocate => "allocate",
            };
            let mut a = vec![("name", n.name.as_str()), ("ipMethod", m)];
            a.extend(n.address.as_deref().map(|v| ("address", v)));
            a.extend(n.network.as_deref().map(|v| ("network", v)));
            w.empty("w:nic", &a);
        }
        w.end("w:network");
        Some(w.into_string())
    }

    pub fn software_xml(&self) -> Option<String> {
        let sw = self.software.as_ref()?;
        let mut w = XmlWriter::with_capacity(128);
        w.start("w:software", &[("xmlns:w", VWS)]);
        if sw.kernel.is_some() || sw.distribution.is_some() || sw.os_version.is_some() {
            let mut a = Vec::new();
            a.extend(sw.kernel.as_deref().map(|v| ("kernel", v)));
            a.extend(sw.distribution.as_deref().map(|v| ("distribution", v)));
            a.extend(sw.os_version.as_deref().map(|v| ("version", v)));
            w.empty("w:os", &a);
        }
        for (n, sig) in &sw.libraries {
            let mut a = vec![("name", n.as_str())];
            a.extend(sig.as_deref().map(|v| ("signature", v)));
            w.empty("w:library", &a);
        }
        for (n, v) in &sw.programs {
            let mut a = vec![("name", n.as_str())];
            a.extend(v.as_deref().map(|v| ("version", v)));
            w.empty("w:program", &a);
        }
        w.end("w:software");
        Some(w.into_string())
    }

    pub fn capability_xml(&self) -> Option<String> {
        let cap = self.capability.as_ref()?;
        let mut w = XmlWriter::with_capacity(128);
        w.start("w:capability", &[("xmlns:w", VWS)]);
        for p in &cap.startup {
            w.empty("w:startup", &[("program", p)]);
        }
        for p in &cap.services {
            w.empty("w:service", &[("name", &p.name), ("port", &p.port.to_string()), ("protocol", &p.protocol)]);
        }
        w.end("w:capability");
        Some(w.into_string())
    }

    /// Largest RAM the workspace may be given (MiB).
    pub fn max_ram(&self) -> Option<u64> {
        self.hardware.as_ref()?.ram.map(|r| r.max)
    }

    /// Sum of the smallest sizes of all sized disks (MiB): what the site must at least provide.
    pub fn min_disk(&self) -> u64 {
        self.hardware.as_ref().map_or(0, |h| h.disks.iter().filter_map(|d| d.size).map(|r| r.min).sum())
    }
}

/// Simple text-valued property element in the vws namespace.
pub fn text_property(local: &str, text: &str) -> String {
    let tag = format!("w:{local}");
    let mut w = XmlWriter::with_capacity(64 + text.len());
    w.leaf(&tag, &[("xmlns:w", VWS)], text);
    w.into_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soap::xml::{parse, Limits};

    fn read(s: &str) -> Result<Description, DescriptionError> {
        Description::from_element(&parse(s, &Limits::default()).unwrap())
    }

    const GOOD: &str = r#"<virtualWorkspace xmlns="http://vws.dev/2026/11/workspace">
  <category><name>vm</name><vmm>xen</vmm><vmmVersion>4.17</vmmVersion></category>
  <state>shutdown</state>
  <lifeCycle>3600</lifeCycle>
  <hardware>
    <ram min="256" max="1024"/>
    <cpu min="1" max="2" arch="x86_64"/>
    <disk name="root" type="image" access="rw" min="512" max="2048"><image>gsiftp://h/p.img</image></disk>
    <disk name="scratch" type="blank" min="100"/>
  </hardware>
  <network><nic name="eth0" ipMethod="dhcp"/></network>
  <software><os kernel="6.1" distribution="debian"/><program name="emboss" version="6.6"/></software>
  <capability><startup program="/bin/run"/><service name="http" port="80"/></capability>
</virtualWorkspace>"#;

    #[test]
    fn reads_a_full_description_and_writes_it_back() {
        let d = read(GOOD).unwrap();
        assert_eq!(d.category, Category::Vm { vmm: Vmm::Xen, vmm_version: Some("4.17".into()) });
        assert_eq!(d.life_cycle, Some(3600));
        assert_eq!(d.max_ram(), Some(1024));
        assert_eq!(d.min_disk(), 612);
        let hw = d.hardware_xml().unwrap();
        let back = parse(&hw, &Limits::default()).unwrap();
        assert_eq!(back.elements().count(), 4);
        assert!(d.category_xml().contains("<w:vmm>xen</w:vmm>"));
    }

    #[test]
    fn errors_name_element_and_line() {
        let bad = GOOD.replace(r#"<ram min="256" max="1024"/>"#, r#"<ram min="2048" max="1024"/>"#);
        let e = read(&bad).unwrap_err();
        assert_eq!(e.path, "/virtualWorkspace/hardware/ram");
        assert_eq!(e.line, 6);
        assert!(e.message.contains("below min"), "{e}");

        let e = read(&GOOD.replace("<vmm>xen</vmm>", "<vmm>vmware</vmm>")).unwrap_err();
        assert_eq!(e.path, "/virtualWorkspace/category/vmm");
        assert!(e.message.contains("xen, kvm, qemu"));

        let e = read(&GOOD.replace("<state>shutdown</state>", "<stat>shutdown</stat>")).unwrap_err();
        assert!(e.message.contains("unknown element 'stat'"), "{e}");
        assert_eq!(e.line, 3);

        let e = read(&GOOD.replace(r#"ipMethod="dhcp""#, r#"ipMethod="static""#)).unwrap_err();
        assert!(e.message.contains("needs an 'address'"));

        let e = read(&GOOD.replace("<image>gsiftp://h/p.img</image>", "<image>ssh:x</image>")).unwrap_err();
        assert_eq!(e.path, "/virtualWorkspace/hardware/disk/image");
    }
}
