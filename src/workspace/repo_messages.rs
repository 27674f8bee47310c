//! The Repository port type's messages (issue 12): `list` / `select` and their matches,
//! `clone` / `refine` and the new workspace's EPR, `register` / `images` / `gc` and the images
//! they report, the checkout lock operations (`checkout`, `renew`, `release`, `breakLock`) and
//! their `lock` answers, and `enrol` / `withdraw`, by which a Manager host using a remote site
//! Repository keeps its workspaces in the site's catalogue. One type per message, one encoder
//! and one decoder each (see [`crate::soap::message`]); `services/repository.rs` decodes the
//! requests and encodes the answers; `vws repo …` and a Manager host's remote `Checkouts` send
//! the requests with `Client::invoke` and decode the answers with the same code.

use crate::soap::epr::{Epr, WSA_DECL};
use crate::soap::message::{DecodeError, Message, Request};
use crate::soap::ns::{VWS, WSA};
use crate::soap::writer::XmlWriter;
use crate::soap::xml::Element;
use crate::workspace::description::Range;
use crate::workspace::messages::{err, expect};

/// The Repository's port type name (in its actions).
pub const REPOSITORY_PORT_TYPE: &str = "RepositoryPortType";

fn text_of(e: &Element, local: &str) -> Option<String> {
    e.child(VWS, local).map(|c| c.text().trim().to_string()).filter(|t| !t.is_empty())
}

fn action(op: &str, suffix: &str) -> String {
    format!("{VWS}/{REPOSITORY_PORT_TYPE}/{op}{suffix}")
}

/// Which workspace a Repository operation names: `<workspace>KEY</workspace>` (what this crate
/// sends) or the workspace's `wsa:EndpointReference` (kept as read; the service takes the key
/// from its reference properties).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Key(String),
    Epr(Epr),
}

impl Target {
    fn encode(&self, w: &mut XmlWriter) {
        match self {
            Target::Key(k) => {
                w.leaf("workspace", &[], k);
            }
            Target::Epr(e) => e.encode(w, "wsa:EndpointReference", &[WSA_DECL]),
        }
    }

    fn decode(e: &Element) -> Result<Option<Target>, DecodeError> {
        if let Some(k) = text_of(e, "workspace") {
            return Ok(Some(Target::Key(k)));
        }
        match e.child(WSA, "EndpointReference") {
            Some(x) => Ok(Some(Target::Epr(Epr::from_element(x).map_err(err)?))),
            None => Ok(None),
        }
    }
}

// ---- checkout lock ------------------------------------------------------------------------

/// The lock operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockOp {
    Checkout,
    Renew,
    Release,
    BreakLock,
}

impl LockOp {
    pub const ALL: [LockOp; 4] = [LockOp::Checkout, LockOp::Renew, LockOp::Release, LockOp::BreakLock];

    pub fn name(self) -> &'static str {
        match self {
            LockOp::Checkout => "checkout",
            LockOp::Renew => "renew",
            LockOp::Release => "release",
            LockOp::BreakLock => "breakLock",
        }
    }

    /// The operation of a Body element, if it is one.
    pub fn of(e: &Element) -> Option<LockOp> {
        LockOp::ALL.into_iter().find(|op| e.is(VWS, op.name()))
    }
}

/// `checkout` / `renew` / `release` / `breakLock`: the workspace, the Manager that holds (or
/// takes) the lock, the lease asked for, and — sent by a Manager host for the user it acts
/// for — the holder's DN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockRequest {
    pub op: LockOp,
    /// None only when decoding a request without one (the service faults).
    pub target: Option<Target>,
    pub manager: Option<String>,
    pub lease_secs: Option<u64>,
    pub holder: Option<String>,
}

impl LockRequest {
    pub fn new(op: LockOp, key: &str) -> LockRequest {
        LockRequest { op, target: Some(Target::Key(key.to_string())), manager: None, lease_secs: None, holder: None }
    }
}

impl Message for LockRequest {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        let op = self.op.name();
        w.start(op, &[("xmlns", VWS)]);
        if let Some(t) = &self.target {
            t.encode(w);
        }
        if let Some(m) = &self.manager {
            w.leaf("manager", &[], m);
        }
        if let Some(s) = self.lease_secs {
            w.leaf("leaseSeconds", &[], &s.to_string());
        }
        if let Some(h) = &self.holder {
            w.leaf("holder", &[], h);
        }
        w.end(op);
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        let op = LockOp::of(e).ok_or_else(|| err(format!("{} is not a Repository lock operation", e.name)))?;
        let lease_secs = match e.child(VWS, "leaseSeconds") {
            None => None,
            Some(l) => Some(
                l.text()
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|s| *s > 0 && *s <= 86400 * 365)
                    .ok_or_else(|| err(format!("leaseSeconds '{}' is not 1..31536000", l.text().trim())))?,
            ),
        };
        Ok(LockRequest {
            op,
            target: Target::decode(e)?,
            manager: text_of(e, "manager"),
            lease_secs,
            holder: text_of(e, "holder"),
        })
    }
}

impl Request for LockRequest {
    type Response = LockResponse;
    fn action(&self) -> String {
        action(self.op.name(), "Request")
    }
    fn response_action(&self) -> String {
        action(self.op.name(), "Response")
    }
}

/// A checkout lock as the Repository shows it (times as xsd:dateTime text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockInfo {
    pub workspace: String,
    pub holder: String,
    pub manager: String,
    pub since: String,
    pub until: String,
}

impl LockInfo {
    /// `<w:lock …/>` (also the Repository's `lock` resource property).
    pub fn encode(&self, w: &mut XmlWriter) {
        w.empty(
            "w:lock",
            &[
                ("xmlns:w", VWS),
                ("workspace", &self.workspace),
                ("holder", &self.holder),
                ("manager", &self.manager),
                ("since", &self.since),
                ("until", &self.until),
            ],
        );
    }

    pub fn to_xml(&self) -> String {
        let mut w = XmlWriter::with_capacity(256);
        self.encode(&mut w);
        w.into_string()
    }

    pub fn decode(e: &Element) -> Result<LockInfo, DecodeError> {
        let a = |n: &str| e.attr("", n).map(str::to_string).ok_or_else(|| err(format!("lock without attribute {n}")));
        Ok(LockInfo {
            workspace: a("workspace")?,
            holder: a("holder")?,
            manager: a("manager")?,
            since: a("since")?,
            until: a("until")?,
        })
    }
}

/// The lock after the operation (none when it is gone or was never there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockResponse {
    pub op: LockOp,
    pub lock: Option<LockInfo>,
}

impl Message for LockResponse {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        let tag = format!("{}Response", self.op.name());
        w.start(&tag, &[("xmlns", VWS)]);
        if let Some(l) = &self.lock {
            l.encode(w);
        }
        w.end(&tag);
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        let op = LockOp::ALL
            .into_iter()
            .find(|op| e.is(VWS, &format!("{}Response", op.name())))
            .ok_or_else(|| err(format!("{} is not a Repository lock answer", e.name)))?;
        let lock = e.child(VWS, "lock").map(LockInfo::decode).transpose()?;
        Ok(LockResponse { op, lock })
    }
}

// ---- enrol / withdraw ---------------------------------------------------------------------

/// `enrol`: a Manager host puts (or updates) one of its workspaces in the site's catalogue —
/// its EPR there, owner, state, termination time and description.
#[derive(Clone, Debug)]
pub struct Enrol {
    pub epr: Epr,
    /// Owner DN (empty: anonymous).
    pub owner: String,
    pub state: String,
    /// xsd:dateTime, when the workspace has a termination time.
    pub termination: Option<String>,
    /// The `{vws}virtualWorkspace` element.
    pub description: Element,
}

impl Enrol {
    /// The record as element `name` (`enrol`, or `describeResponse`).
    fn encode_as(&self, w: &mut XmlWriter, name: &str) {
        w.start(name, &[("xmlns", VWS)]);
        self.epr.encode(w, "wsa:EndpointReference", &[WSA_DECL]);
        w.leaf("owner", &[], &self.owner).leaf("state", &[], &self.state);
        if let Some(t) = &self.termination {
            w.leaf("terminationTime", &[], t);
        }
        w.raw(&self.description.to_fragment());
        w.end(name);
    }

    fn decode_as(e: &Element, name: &str) -> Result<Self, DecodeError> {
        expect(e, name)?;
        let epr = e
            .child(WSA, "EndpointReference")
            .ok_or_else(|| err(format!("{name} needs the workspace's wsa:EndpointReference")))?;
        let description =
            e.child(VWS, "virtualWorkspace").ok_or_else(|| err(format!("{name} needs a {{{VWS}}}virtualWorkspace element")))?;
        Ok(Enrol {
            epr: Epr::from_element(epr).map_err(err)?,
            owner: e.child(VWS, "owner").map(|o| o.text().trim().to_string()).unwrap_or_default(),
            state: text_of(e, "state").ok_or_else(|| err(format!("{name} needs <state>")))?,
            termination: text_of(e, "terminationTime"),
            description: description.clone(),
        })
    }
}

impl Message for Enrol {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        self.encode_as(w, "enrol")
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        Enrol::decode_as(e, "enrol")
    }
}

/// describe: a Manager host asks the site for a catalogued workspace's record, to adopt it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Describe {
    pub target: Option<Target>,
}

impl Message for Describe {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        w.start("describe", &[("xmlns", VWS)]);
        if let Some(t) = &self.target {
            t.encode(w);
        }
        w.end("describe");
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        expect(e, "describe")?;
        Ok(Describe { target: Target::decode(e)? })
    }
}

impl Request for Describe {
    type Response = Described;
    fn action(&self) -> String {
        action("describe", "Request")
    }
    fn response_action(&self) -> String {
        action("describe", "Response")
    }
}

/// The record `describe` answers: the same fields as an [`Enrol`] (EPR where the workspace is
/// kept, owner, state, termination, description).
#[derive(Clone, Debug)]
pub struct Described(pub Enrol);

impl Message for Described {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        self.0.encode_as(w, "describeResponse")
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        Enrol::decode_as(e, "describeResponse").map(Described)
    }
}

impl Request for Enrol {
    type Response = EnrolResponse;
    fn action(&self) -> String {
        action("enrol", "Request")
    }
    fn response_action(&self) -> String {
        action("enrol", "Response")
    }
}

/// The key the workspace is catalogued under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrolResponse {
    pub workspace: String,
}

impl Message for EnrolResponse {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        w.empty("enrolResponse", &[("xmlns", VWS), ("workspace", &self.workspace)]);
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        expect(e, "enrolResponse")?;
        let workspace = e.attr("", "workspace").ok_or_else(|| err("enrolResponse without workspace".into()))?.to_string();
        Ok(EnrolResponse { workspace })
    }
}

/// `withdraw`: the workspace is gone from the Manager host that enrolled it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Withdraw {
    pub target: Option<Target>,
}

impl Message for Withdraw {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        w.start("withdraw", &[("xmlns", VWS)]);
        if let Some(t) = &self.target {
            t.encode(w);
        }
        w.end("withdraw");
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        expect(e, "withdraw")?;
        Ok(Withdraw { target: Target::decode(e)? })
    }
}

impl Request for Withdraw {
    type Response = WithdrawResponse;
    fn action(&self) -> String {
        action("withdraw", "Request")
    }
    fn response_action(&self) -> String {
        action("withdraw", "Response")
    }
}

/// Whether the workspace was in the catalogue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WithdrawResponse {
    pub removed: bool,
}

impl Message for WithdrawResponse {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        w.empty("withdrawResponse", &[("xmlns", VWS), ("removed", if self.removed { "true" } else { "false" })]);
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        expect(e, "withdrawResponse")?;
        Ok(WithdrawResponse { removed: e.attr("", "removed") == Some("true") })
    }
}

// ---- list / select ------------------------------------------------------------------------

/// What `select` asks for; every given constraint must hold (ranges intersect the requested one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Constraints {
    pub category: Option<String>,
    pub vmm: Option<String>,
    pub ram: Option<Range>,
    pub disk: Option<Range>,
    pub distribution: Option<String>,
    /// A kernel version or its prefix at a component boundary (`6.1` matches `6.1.0-18`).
    pub kernel: Option<String>,
    pub state: Option<String>,
    pub software: Vec<(String, Option<String>)>,
}

/// `min` / `max` attributes (either may be left out: 0 / unbounded). A min above the max is
/// left to the receiver, which names the field in its fault.
pub fn range_of(e: &Element, field: &str) -> Result<Range, DecodeError> {
    let num = |a: &str, dflt: u64| -> Result<u64, DecodeError> {
        match e.attr("", a) {
            None => Ok(dflt),
            Some(v) => v.trim().parse().map_err(|_| err(format!("{field}: {a}='{v}' is not a non-negative integer"))),
        }
    };
    Ok(Range { min: num("min", 0)?, max: num("max", u64::MAX)? })
}

fn range_attrs(r: &Range) -> (String, Option<String>) {
    (r.min.to_string(), (r.max != u64::MAX).then(|| r.max.to_string()))
}

fn write_range(w: &mut XmlWriter, tag: &str, name: Option<&str>, r: &Range) {
    let (min, max) = range_attrs(r);
    let mut attrs: Vec<(&str, &str)> = Vec::with_capacity(3);
    if let Some(n) = name {
        attrs.push(("name", n));
    }
    attrs.push(("min", &min));
    if let Some(m) = &max {
        attrs.push(("max", m));
    }
    w.empty(tag, &attrs);
}

/// `list` (every workspace the caller may read) or `select` (those matching `constraints`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Select {
    /// true: `list` (no constraints).
    pub list: bool,
    pub constraints: Constraints,
}

impl Select {
    fn op(&self) -> &'static str {
        if self.list {
            "list"
        } else {
            "select"
        }
    }
}

impl Message for Select {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        let op = self.op();
        let c = &self.constraints;
        w.start(op, &[("xmlns", VWS)]);
        for (tag, v) in [("category", &c.category), ("vmm", &c.vmm)] {
            if let Some(v) = v {
                w.leaf(tag, &[], v);
            }
        }
        if let Some(r) = &c.ram {
            write_range(w, "ram", None, r);
        }
        if let Some(r) = &c.disk {
            write_range(w, "disk", None, r);
        }
        for (tag, v) in [("distribution", &c.distribution), ("kernel", &c.kernel), ("state", &c.state)] {
            if let Some(v) = v {
                w.leaf(tag, &[], v);
            }
        }
        for (n, v) in &c.software {
            match v {
                Some(v) => w.empty("software", &[("name", n), ("version", v)]),
                None => w.empty("software", &[("name", n)]),
            };
        }
        w.end(op);
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        let list = e.is(VWS, "list");
        if !list && !e.is(VWS, "select") {
            return Err(err(format!("expected {{{VWS}}}list or select, got {}", e.name)));
        }
        let mut c = Constraints::default();
        for x in e.elements() {
            if list {
                return Err(err(format!("list takes no arguments; got element {}", x.name)));
            }
            if x.name.ns != VWS {
                return Err(err(format!("select: element {} is not in the workspace namespace", x.name)));
            }
            let text = || Some(x.text().trim().to_string()).filter(|t| !t.is_empty());
            match x.name.local.as_str() {
                "category" => c.category = text(),
                "vmm" => c.vmm = text(),
                "distribution" => c.distribution = text(),
                "kernel" => c.kernel = text(),
                "state" => c.state = text(),
                "ram" => c.ram = Some(range_of(x, "select/ram")?),
                "disk" => c.disk = Some(range_of(x, "select/disk")?),
                "software" => {
                    let n = x.attr("", "name").ok_or_else(|| err("select/software needs a name attribute".into()))?;
                    c.software.push((n.to_string(), x.attr("", "version").map(str::to_string)));
                }
                other => {
                    return Err(err(format!(
                        "select: unknown constraint '{other}' (expected category, vmm, ram, disk, distribution, kernel, state, software)"
                    )))
                }
            }
        }
        Ok(Select { list, constraints: c })
    }
}

impl Request for Select {
    type Response = Matches;
    fn action(&self) -> String {
        action(self.op(), "Request")
    }
    fn response_action(&self) -> String {
        action(self.op(), "Response")
    }
}

/// One workspace found: key, one-line summary, EPR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    pub key: String,
    pub summary: String,
    pub epr: Epr,
}

/// The answer to `list` / `select`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Matches {
    pub list: bool,
    pub matches: Vec<Match>,
}

impl Message for Matches {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        let tag = if self.list { "listResponse" } else { "selectResponse" };
        w.start(tag, &[("xmlns", VWS), ("count", &self.matches.len().to_string())]);
        for m in &self.matches {
            w.start("match", &[("key", &m.key), ("summary", &m.summary)]);
            m.epr.encode(w, "wsa:EndpointReference", &[WSA_DECL]);
            w.end("match");
        }
        w.end(tag);
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        let list = e.is(VWS, "listResponse");
        if !list && !e.is(VWS, "selectResponse") {
            return Err(err(format!("expected {{{VWS}}}listResponse or selectResponse, got {}", e.name)));
        }
        let mut matches = Vec::new();
        for m in e.elements().filter(|m| m.is(VWS, "match")) {
            let a = |n: &str| m.attr("", n).map(str::to_string).ok_or_else(|| err(format!("match without {n}")));
            let epr = m.child(WSA, "EndpointReference").ok_or_else(|| err("match without an EPR".into()))?;
            matches.push(Match { key: a("key")?, summary: a("summary")?, epr: Epr::from_element(epr).map_err(err)? });
        }
        Ok(Matches { list, matches })
    }
}

// ---- clone / refine -----------------------------------------------------------------------

/// `clone`: a new workspace with the named one's description and images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloneRequest {
    pub target: Option<Target>,
}

impl Message for CloneRequest {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        w.start("clone", &[("xmlns", VWS)]);
        if let Some(t) = &self.target {
            t.encode(w);
        }
        w.end("clone");
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        expect(e, "clone")?;
        Ok(CloneRequest { target: Target::decode(e)? })
    }
}

impl Request for CloneRequest {
    type Response = NewWorkspace;
    fn action(&self) -> String {
        action("clone", "Request")
    }
    fn response_action(&self) -> String {
        action("clone", "Response")
    }
}

/// `refine`: a new workspace whose ranges lie within the named one's and whose software or
/// capability sections replace its own.
#[derive(Clone, Debug, Default)]
pub struct Refine {
    pub target: Option<Target>,
    pub ram: Option<Range>,
    pub cpu: Option<Range>,
    /// (disk name, size range)
    pub disks: Vec<(String, Range)>,
    /// A `{vws}software` element (any prefix; renamed into the description).
    pub software: Option<Element>,
    pub capability: Option<Element>,
}

impl Message for Refine {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        w.start("refine", &[("xmlns", VWS)]);
        if let Some(t) = &self.target {
            t.encode(w);
        }
        if let Some(r) = &self.ram {
            write_range(w, "ram", None, r);
        }
        if let Some(r) = &self.cpu {
            write_range(w, "cpu", None, r);
        }
        for (n, r) in &self.disks {
            write_range(w, "disk", Some(n), r);
        }
        for e in [&self.software, &self.capability].into_iter().flatten() {
            w.raw(&e.to_fragment());
        }
        w.end("refine");
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        expect(e, "refine")?;
        let mut r = Refine { target: Target::decode(e)?, ..Default::default() };
        for x in e.elements() {
            if x.name.ns != VWS {
                continue;
            }
            match x.name.local.as_str() {
                "workspace" => {}
                "ram" => r.ram = Some(range_of(x, "hardware/ram")?),
                "cpu" => r.cpu = Some(range_of(x, "hardware/cpu")?),
                "disk" => {
                    let name = x.attr("", "name").unwrap_or("").to_string();
                    let field = format!("hardware/disk[@name='{name}']");
                    r.disks.push((name, range_of(x, &field)?));
                }
                "software" => r.software = Some(x.clone()),
                "capability" => r.capability = Some(x.clone()),
                other => {
                    return Err(err(format!(
                        "refine: unknown element '{other}' (expected workspace, ram, cpu, disk, software, capability)"
                    )))
                }
            }
        }
        Ok(r)
    }
}

impl Request for Refine {
    type Response = NewWorkspace;
    fn action(&self) -> String {
        action("refine", "Request")
    }
    fn response_action(&self) -> String {
        action("refine", "Response")
    }
}

/// The answer to `clone` / `refine`: the source's key and the new workspace's EPR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewWorkspace {
    /// true: `refineResponse`; false: `cloneResponse`.
    pub refined: bool,
    pub source: String,
    pub epr: Epr,
}

impl Message for NewWorkspace {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        let tag = if self.refined { "refineResponse" } else { "cloneResponse" };
        w.start(tag, &[("xmlns", VWS), ("source", &self.source)]);
        self.epr.encode(w, "wsa:EndpointReference", &[WSA_DECL]);
        w.end(tag);
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        let refined = e.is(VWS, "refineResponse");
        if !refined && !e.is(VWS, "cloneResponse") {
            return Err(err(format!("expected {{{VWS}}}cloneResponse or refineResponse, got {}", e.name)));
        }
        let epr = e.child(WSA, "EndpointReference").ok_or_else(|| err(format!("{} without EPR", e.name.local)))?;
        Ok(NewWorkspace {
            refined,
            source: e.attr("", "source").unwrap_or_default().to_string(),
            epr: Epr::from_element(epr).map_err(err)?,
        })
    }
}

// ---- image store: register / images / gc -------------------------------------------------

/// One image of the store as an answer shows it (what the operation knows of it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageInfo {
    pub sha256: String,
    pub size: u64,
    pub owner: Option<String>,
    pub source: Option<String>,
    /// xsd:dateTime.
    pub created: Option<String>,
    /// How many workspaces reference it (`images`).
    pub refs: Option<usize>,
    /// Whether the registration stored new bytes (`register`).
    pub new: Option<bool>,
}

impl ImageInfo {
    fn encode(&self, w: &mut XmlWriter) {
        let size = self.size.to_string();
        let refs = self.refs.map(|r| r.to_string());
        let mut a: Vec<(&str, &str)> = vec![("sha256", &self.sha256), ("size", &size)];
        if let Some(o) = &self.owner {
            a.push(("owner", o));
        }
        if let Some(s) = &self.source {
            a.push(("source", s));
        }
        if let Some(c) = &self.created {
            a.push(("created", c));
        }
        if let Some(r) = &refs {
            a.push(("refs", r));
        }
        if let Some(n) = self.new {
            a.push(("new", if n { "true" } else { "false" }));
        }
        w.empty("image", &a);
    }

    fn decode(e: &Element) -> Result<ImageInfo, DecodeError> {
        let a = |n: &str| e.attr("", n).map(str::to_string);
        Ok(ImageInfo {
            sha256: a("sha256").ok_or_else(|| err("image without sha256".into()))?,
            size: a("size").and_then(|s| s.parse().ok()).ok_or_else(|| err("image without a size".into()))?,
            owner: a("owner"),
            source: a("source"),
            created: a("created"),
            refs: a("refs").and_then(|r| r.parse().ok()),
            new: a("new").map(|n| n == "true"),
        })
    }
}

/// `register`: an image into the store from a path on the service host or a URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Register {
    pub source: String,
    /// `sha256:HEX` (or bare hex) the bytes must have.
    pub digest: Option<String>,
}

impl Message for Register {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        w.start("register", &[("xmlns", VWS)]).leaf("source", &[], &self.source);
        if let Some(d) = &self.digest {
            w.leaf("digest", &[], d);
        }
        w.end("register");
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        expect(e, "register")?;
        Ok(Register {
            source: text_of(e, "source").ok_or_else(|| err("register needs <source>PATH or URL</source>".into()))?,
            digest: e.child(VWS, "digest").map(|d| d.text().trim().to_string()),
        })
    }
}

impl Request for Register {
    type Response = Images;
    fn action(&self) -> String {
        action("register", "Request")
    }
    fn response_action(&self) -> String {
        action("register", "Response")
    }
}

/// Which operation an image list answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImagesOp {
    Register,
    Images,
    Gc,
}

impl ImagesOp {
    fn name(self) -> &'static str {
        match self {
            ImagesOp::Register => "register",
            ImagesOp::Images => "images",
            ImagesOp::Gc => "gc",
        }
    }
}

/// `images` (every image with its reference count) and `gc` (unreferenced images older than
/// `grace_secs` removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImagesRequest {
    pub op: ImagesOp,
    pub grace_secs: Option<u64>,
}

impl Message for ImagesRequest {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        let op = self.op.name();
        match self.grace_secs {
            Some(g) if self.op == ImagesOp::Gc => {
                w.start(op, &[("xmlns", VWS)]).leaf("graceSeconds", &[], &g.to_string()).end(op);
            }
            _ => {
                w.empty(op, &[("xmlns", VWS)]);
            }
        }
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        let op = if e.is(VWS, "images") {
            ImagesOp::Images
        } else if e.is(VWS, "gc") {
            ImagesOp::Gc
        } else {
            return Err(err(format!("expected {{{VWS}}}images or gc, got {}", e.name)));
        };
        let grace_secs = match e.child(VWS, "graceSeconds") {
            None => None,
            Some(g) => Some(
                g.text().trim().parse::<u64>().map_err(|_| err(format!("graceSeconds '{}' is not a number", g.text().trim())))?,
            ),
        };
        Ok(ImagesRequest { op, grace_secs })
    }
}

impl Request for ImagesRequest {
    type Response = Images;
    fn action(&self) -> String {
        action(self.op.name(), "Request")
    }
    fn response_action(&self) -> String {
        action(self.op.name(), "Response")
    }
}

/// The images an image-store operation reports (`registerResponse`: the one registered;
/// `imagesResponse count=`; `gcResponse removed=`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    pub op: ImagesOp,
    pub images: Vec<ImageInfo>,
}

impl Message for Images {
    type Error = DecodeError;
    fn encode(&self, w: &mut XmlWriter) {
        let tag = format!("{}Response", self.op.name());
        let n = self.images.len().to_string();
        match self.op {
            ImagesOp::Register => w.start(&tag, &[("xmlns", VWS)]),
            ImagesOp::Images => w.start(&tag, &[("xmlns", VWS), ("count", &n)]),
            ImagesOp::Gc => w.start(&tag, &[("xmlns", VWS), ("removed", &n)]),
        };
        for i in &self.images {
            i.encode(w);
        }
        w.end(&tag);
    }
    fn decode(e: &Element) -> Result<Self, DecodeError> {
        let op = [ImagesOp::Register, ImagesOp::Images, ImagesOp::Gc]
            .into_iter()
            .find(|op| e.is(VWS, &format!("{}Response", op.name())))
            .ok_or_else(|| err(format!("{} is not an image store answer", e.name)))?;
        let images = e.elements().filter(|i| i.is(VWS, "image")).map(ImageInfo::decode).collect::<Result<_, _>>()?;
        Ok(Images { op, images })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round<M: Message + std::fmt::Debug>(m: &M) -> M {
        let xml = m.to_xml();
        let e = crate::soap::xml::parse(&xml, &Default::default()).unwrap();
        M::decode(&e).unwrap_or_else(|e| panic!("{xml}: {e}"))
    }

    #[test]
    fn lock_messages_round_trip_with_escaping() {
        let mut r = LockRequest::new(LockOp::Checkout, "k<&\"é");
        r.manager = Some("https://h:8443/wsrf/services/WorkspaceService?a=1&b=<2>".into());
        r.lease_secs = Some(60);
        r.holder = Some("/O=Grid/CN=Jürgen \"<&>\"".into());
        assert_eq!(round(&r), r);
        let l = LockInfo {
            workspace: "k&".into(),
            holder: "/CN=a<b".into(),
            manager: "m\"".into(),
            since: "2026-12-02T10:00:00.000Z".into(),
            until: "2026-12-02T10:10:00.000Z".into(),
        };
        for op in LockOp::ALL {
            let resp = LockResponse { op, lock: Some(l.clone()) };
            assert_eq!(round(&resp), resp);
        }
        assert_eq!(round(&LockResponse { op: LockOp::Release, lock: None }).lock, None);
    }

    #[test]
    fn enrol_and_withdraw_round_trip() {
        let d = crate::soap::xml::parse(
            &format!("<virtualWorkspace xmlns=\"{VWS}\"><state>Prepared</state></virtualWorkspace>"),
            &Default::default(),
        )
        .unwrap();
        let epr = Epr::with_key("http://b:1/wsrf/services/WorkspaceService", QName::new(VWS, "WorkspaceKey"), "k&1");
        let m = Enrol { epr: epr.clone(), owner: "/CN=ö<".into(), state: "Unstaged".into(), termination: None, description: d };
        let back = round(&m);
        assert_eq!((back.epr, back.owner, back.state), (epr, m.owner.clone(), m.state.clone()));
        assert_eq!(back.description.child(VWS, "state").unwrap().text(), "Prepared");
        assert_eq!(round(&EnrolResponse { workspace: "k".into() }).workspace, "k");
        let w = Withdraw { target: Some(Target::Key("k<".into())) };
        assert_eq!(round(&w), w);
        let q = Describe { target: Some(Target::Key("k&ü".into())) };
        assert_eq!(round(&q), q);
        let back = round(&Described(m.clone())).0;
        assert_eq!((back.epr, back.owner, back.state, back.termination), (m.epr.clone(), m.owner.clone(), m.state.clone(), None));
        assert_eq!(back.description.child(VWS, "state").unwrap().text(), "Prepared");
        assert!(round(&WithdrawResponse { removed: true }).removed);
    }

    #[test]
    fn catalogue_and_image_messages_round_trip_with_escaping() {
        let sel = Select {
            list: false,
            constraints: Constraints {
                category: Some("vm".into()),
                vmm: Some("q<&>".into()),
                ram: Some(Range { min: 1, max: u64::MAX }),
                disk: Some(Range { min: 0, max: 9 }),
                distribution: Some("débian".into()),
                kernel: Some("6.1".into()),
                state: None,
                software: vec![("a\"b".into(), Some("1&2".into())), ("c".into(), None)],
            },
        };
        assert_eq!(round(&sel), sel);
        assert_eq!(round(&Select { list: true, ..Default::default() }), Select { list: true, ..Default::default() });
        let epr = Epr::with_key("http://h/wsrf/services/WorkspaceService", QName::new(VWS, "WorkspaceKey"), "k<1>");
        let m = Matches {
            list: true,
            matches: vec![Match { key: "k<1>".into(), summary: "vm/qemu ram 1-2 MiB \"ü\"".into(), epr: epr.clone() }],
        };
        assert_eq!(round(&m), m);
        let c = CloneRequest { target: Some(Target::Key("k&".into())) };
        assert_eq!(round(&c), c);
        let r = Refine {
            target: Some(Target::Epr(epr.clone())),
            ram: Some(Range { min: 64, max: 128 }),
            disks: vec![("root<".into(), Range { min: 1, max: 2 })],
            ..Default::default()
        };
        let back = round(&r);
        assert_eq!((back.target, back.ram, back.disks), (r.target.clone(), r.ram, r.disks.clone()));
        let n = NewWorkspace { refined: true, source: "s&".into(), epr };
        assert_eq!(round(&n), n);
        let reg = Register { source: "/srv/images/ä b&c.img".into(), digest: Some("sha256:ab".into()) };
        assert_eq!(round(&reg), reg);
        let g = ImagesRequest { op: ImagesOp::Gc, grace_secs: Some(5) };
        assert_eq!(round(&g), g);
        let img = ImageInfo {
            sha256: "ab".into(),
            size: 7,
            owner: Some("/CN=ö<".into()),
            source: Some("file:///a&b".into()),
            created: Some("2026-12-02T10:00:00.000Z".into()),
            refs: Some(2),
            new: Some(true),
        };
        for op in [ImagesOp::Register, ImagesOp::Images, ImagesOp::Gc] {
            let i = Images { op, images: vec![img.clone()] };
            assert_eq!(round(&i), i);
        }
    }

    use crate::soap::xml::QName;
}
