//! `vws`: command-line client for vws (and any GT 4.0 WSRF service).
//!
//! `vws --service URL create DESCRIPTION.xml --epr-out FILE`, and for a resource
//! `vws --epr FILE get-property QNAME | get-properties QNAME... | query XPATH |
//! set-termination-time (RFC3339|+SECONDS|never) | destroy | deploy [--no-wait] | undeploy |
//! watch [PROPERTY…]`.
//! `vws stage [--streams N] [--no-dcau] [--prot C|S|P] SRC DST` copies an image between file://, http(s)://,
//! ftp:// and gsiftp:// URLs with verification and a progress bar on stderr.
//! `vws --service URL repo list|select|clone|refine|register|images|checkout|release|break-lock|gc`
//! talks to the site's Repository (URL: its RepositoryService, or any service of that vwsd).

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use vws::client::{self, Client, ClientError};
use vws::soap::epr::Epr;
use vws::soap::message::Message;
use vws::soap::ns;
use vws::soap::xml::{self, Element, Node};
use vws::workspace::description::Range;
use vws::workspace::messages::{self as wm, ManagerOp, ManagerRequest};
use vws::workspace::repo_messages::{self as rm, LockOp, LockRequest, Target};
use vws::wsrf::messages as rp;

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Output {
    Xml,
    Table,
}

#[derive(Parser)]
#[command(name = "vws", version, about = "Client for the Virtual Workspaces service")]
struct Args {
    /// Factory service URL (for create), e.g. http://127.0.0.1:8080/wsrf/services/WorkspaceFactoryService
    #[arg(long, global = true)]
    service: Option<String>,
    /// EPR file of the resource to act on.
    #[arg(long, global = true)]
    epr: Option<PathBuf>,
    #[arg(long, global = true, value_enum, default_value = "xml")]
    output: Output,
    /// GSI transport: send https:// requests with the user's proxy (X509_USER_PROXY,
    /// /tmp/x509up_u<uid>, …) and check the host against X509_CERT_DIR; plain http is refused.
    #[arg(long, global = true)]
    https: bool,
    /// GSI Secure Message: sign requests (WS-Security X.509) with the user's proxy and require
    /// signed answers; works over http:// and https://.
    #[arg(long, global = true)]
    sign: bool,
    /// Proxy file for --https, --sign and stage (default: X509_USER_PROXY, /tmp/x509up_u<uid>, …).
    #[arg(long, global = true)]
    proxy: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a workspace from a description file; prints (and optionally saves) its EPR.
    Create {
        description: PathBuf,
        #[arg(long)]
        epr_out: Option<PathBuf>,
    },
    /// Subscribe to property changes (WS-BaseNotification) and print each as it arrives
    /// (`HH:MM:SS.mmm PROPERTY OLD → NEW`, UTC) until Ctrl-C / SIGTERM, which ends the
    /// subscriptions. PROPERTY: a topic's local name, prefix:local or {ns}local; default CurrentState.
    Watch {
        properties: Vec<String>,
        /// Consumer listen address (default: this host's address towards the service, any port).
        #[arg(long)]
        listen: Option<String>,
    },
    /// One resource property ({ns}local, vws:/nimbus:/wsrl:/wsrp: prefix, or a vws local name).
    GetProperty { qname: String },
    /// Several resource properties.
    GetProperties {
        #[arg(required = true)]
        qnames: Vec<String>,
    },
    /// XPath 1.0 query over the resource property document.
    Query { xpath: String },
    /// RFC 3339 time, +SECONDS from now, or never.
    SetTerminationTime { when: String },
    /// Destroy the resource.
    Destroy,
    /// Deploy the workspace on its host: stage its images, with a progress bar, until Staged.
    Deploy {
        /// Return once the staging has started instead of following it.
        #[arg(long)]
        no_wait: bool,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
        /// Hot: boot the VM once to its ready line and pause it, so start only resumes.
        #[arg(long)]
        hot: bool,
    },
    /// Release the workspace on its host: destroy its VM, free its address, remove its images.
    Undeploy,
    /// Start the workspace's VM (boot, or resume a hot one).
    Start {
        #[arg(long)]
        no_wait: bool,
    },
    /// Stop the VM gracefully (ACPI power button; forced after the host's timeout).
    Stop {
        /// Answer as soon as the stop started (state Stopping).
        #[arg(long)]
        no_wait: bool,
    },
    /// Pause the VM.
    Pause {
        #[arg(long)]
        no_wait: bool,
    },
    /// Resume a paused VM.
    Unpause {
        #[arg(long)]
        no_wait: bool,
    },
    /// Reset the VM.
    Reboot {
        #[arg(long)]
        no_wait: bool,
    },
    /// Save the VM's memory to a file on its host (the VM is then gone; state Saved).
    Save {
        #[arg(long)]
        no_wait: bool,
    },
    /// Bring a saved VM back.
    Restore {
        #[arg(long)]
        no_wait: bool,
    },
    /// The VM's serial console.
    Console {
        /// Keep printing what the guest writes (Ctrl-C to stop).
        #[arg(long, short)]
        follow: bool,
    },
    /// State, IP, MAC, host and uptime in one table.
    Status,
    /// The site's Repository: catalogue, clones and refinements, image store, checkout locks.
    Repo {
        #[command(subcommand)]
        cmd: RepoCmd,
    },
    /// Copy an image between URLs (file://, http(s)://, ftp://, gsiftp://), verified by checksum.
    Stage {
        src: String,
        dst: String,
        /// Parallel data streams (GridFTP MODE E).
        #[arg(long, default_value_t = 1)]
        streams: usize,
        /// No data-channel authentication (GridFTP DCAU N).
        #[arg(long)]
        no_dcau: bool,
        /// GridFTP data-channel protection: C (clear, default), S (safe), P (private, TLS).
        #[arg(long, default_value = "C", value_parser = parse_prot)]
        prot: vws::transfer::Protection,
        /// Skip the server-side checksum comparison (our SHA-256 is still computed).
        #[arg(long)]
        no_verify: bool,
        /// Expected digest, ALGO:HEX (sha256, md5, adler32, sha1, sha512).
        #[arg(long)]
        expect: Option<String>,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
    },
}

/// `vws repo …`. WORKSPACE is a workspace key or an EPR file.
#[derive(Subcommand)]
enum RepoCmd {
    /// Every workspace you may read: key, one-line summary.
    List,
    /// Workspaces matching every given constraint (ranges intersect the requested one).
    Select {
        #[arg(long)]
        category: Option<String>,
        #[arg(long)]
        vmm: Option<String>,
        /// RAM range in MiB, MIN-MAX (either side may be empty).
        #[arg(long)]
        ram: Option<String>,
        /// Total disk range in MiB, MIN-MAX.
        #[arg(long)]
        disk: Option<String>,
        #[arg(long)]
        distribution: Option<String>,
        /// Kernel version or a prefix of it (6.1 matches 6.1.0-18).
        #[arg(long)]
        kernel: Option<String>,
        #[arg(long)]
        state: Option<String>,
        /// Required software, NAME or NAME=VERSION (repeatable).
        #[arg(long)]
        software: Vec<String>,
    },
    /// A new workspace with the same description and images.
    Clone {
        workspace: String,
        #[arg(long)]
        epr_out: Option<PathBuf>,
    },
    /// A new workspace with narrower ranges or other software / capability.
    Refine {
        workspace: String,
        /// RAM range in MiB, MIN-MAX (within the original's).
        #[arg(long)]
        ram: Option<String>,
        #[arg(long)]
        cpu: Option<String>,
        /// NAME=MIN-MAX (repeatable).
        #[arg(long)]
        disk: Vec<String>,
        /// A file holding a <software> element.
        #[arg(long)]
        software: Option<PathBuf>,
        /// A file holding a <capability> element.
        #[arg(long)]
        capability: Option<PathBuf>,
        #[arg(long)]
        epr_out: Option<PathBuf>,
    },
    /// Put an image into the store by content (absolute path on the service host, file:// within
    /// its roots, http(s)://, gsiftp://).
    Register {
        source: String,
        /// Expected digest, sha256:HEX.
        #[arg(long)]
        digest: Option<String>,
    },
    /// The store's images and how many workspaces reference each.
    Images,
    /// Lock a workspace to a Manager.
    Checkout {
        workspace: String,
        #[arg(long)]
        manager: Option<String>,
        #[arg(long)]
        lease: Option<u64>,
    },
    /// Give a lock back (as its Manager).
    Release {
        workspace: String,
        #[arg(long)]
        manager: Option<String>,
    },
    /// Remove anyone's lock (site administrators; logged).
    BreakLock { workspace: String },
    /// Remove unreferenced images.
    Gc {
        /// Keep images registered within the last SECS seconds.
        #[arg(long, default_value_t = 0)]
        grace: u64,
    },
}

/// `MIN-MAX` (either side may be empty: 0 / unbounded).
fn range_arg(s: &str) -> Result<Range, ClientError> {
    let (a, b) = s.split_once('-').ok_or_else(|| ClientError::Usage(format!("range '{s}': expected MIN-MAX")))?;
    let num = |v: &str, dflt: u64| -> Result<u64, ClientError> {
        let v = v.trim();
        if v.is_empty() {
            return Ok(dflt);
        }
        v.parse().map_err(|_| ClientError::Usage(format!("range '{s}': '{v}' is not a number")))
    };
    Ok(Range { min: num(a, 0)?, max: num(b, u64::MAX)? })
}

/// A workspace argument: an EPR file, else a key.
fn workspace_arg(w: &str) -> Result<Target, ClientError> {
    let p = std::path::Path::new(w);
    if p.is_file() {
        let epr = client::read_epr(p)?;
        return epr
            .properties
            .iter()
            .find(|(q, _)| q.local == "WorkspaceKey")
            .map(|(_, v)| Target::Key(v.clone()))
            .ok_or_else(|| ClientError::Usage(format!("{w}: not a workspace EPR")));
    }
    Ok(Target::Key(w.to_string()))
}

fn element_file(p: &std::path::Path) -> Result<Element, ClientError> {
    let text = std::fs::read_to_string(p).map_err(|e| ClientError::Usage(format!("{}: {e}", p.display())))?;
    xml::parse(&text, &Default::default()).map_err(|e| ClientError::Usage(format!("{}: {e}", p.display())))
}

/// Prints a typed answer as XML (`--output xml`) or as a table.
fn print_images(r: &rm::Images, xml_out: bool) {
    if xml_out {
        println!("{}", r.to_xml());
        return;
    }
    println!("{:<64} {:>12} {:>4} {:<6} OWNER", "SHA256", "BYTES", "REFS", "NEW");
    for i in &r.images {
        println!(
            "{:<64} {:>12} {:>4} {:<6} {}",
            i.sha256,
            i.size,
            i.refs.map_or("-".into(), |r| r.to_string()),
            i.new.map_or("-", |n| if n { "true" } else { "false" }),
            i.owner.as_deref().unwrap_or("-")
        );
    }
}

fn print_lock(r: &rm::LockResponse, xml_out: bool) {
    if xml_out {
        println!("{}", r.to_xml());
        return;
    }
    println!("{:<38} {:<40} {:<24} UNTIL", "WORKSPACE", "HOLDER", "SINCE");
    if let Some(l) = &r.lock {
        println!("{:<38} {:<40} {:<24} {}", l.workspace, l.holder, l.since, l.until);
        println!("  manager {}", l.manager);
    }
}

/// `vws repo …`: each operation one typed request and answer (`workspace::repo_messages`).
async fn repo_cmd(c: &Client, args: &Args, cmd: &RepoCmd) -> Result<i32, ClientError> {
    let service = args.service.as_deref().ok_or_else(|| ClientError::Usage("repo needs --service URL".into()))?;
    let url = match service.rsplit_once("/wsrf/services/") {
        Some((base, _)) => format!("{base}/wsrf/services/RepositoryService"),
        None => format!("{}/wsrf/services/RepositoryService", service.trim_end_matches('/')),
    };
    let epr = Epr::with_key(url.clone(), vws::soap::xml::QName::new(ns::VWS, "RepositoryKey"), "site");
    // Tables unless `--output xml` is asked for explicitly.
    let xml_out = args.output == Output::Xml && std::env::args().any(|a| a.starts_with("--output"));
    let lock = |op: LockOp, workspace: &str, manager: &Option<String>, lease: Option<u64>| -> Result<LockRequest, ClientError> {
        Ok(LockRequest { op, target: Some(workspace_arg(workspace)?), manager: manager.clone(), lease_secs: lease, holder: None })
    };
    match cmd {
        RepoCmd::List | RepoCmd::Select { .. } => {
            let mut req = rm::Select { list: matches!(cmd, RepoCmd::List), ..Default::default() };
            if let RepoCmd::Select { category, vmm, ram, disk, distribution, kernel, state, software } = cmd {
                req.constraints = rm::Constraints {
                    category: category.clone(),
                    vmm: vmm.clone(),
                    ram: ram.as_deref().map(range_arg).transpose()?,
                    disk: disk.as_deref().map(range_arg).transpose()?,
                    distribution: distribution.clone(),
                    kernel: kernel.clone(),
                    state: state.clone(),
                    software: software
                        .iter()
                        .map(|sw| sw.split_once('=').map_or((sw.clone(), None), |(n, v)| (n.to_string(), Some(v.to_string()))))
                        .collect(),
                };
            }
            let r = c.invoke(&epr, &req).await?;
            if xml_out {
                println!("{}", r.to_xml());
                return Ok(0);
            }
            println!("{:<38} SUMMARY", "KEY");
            for m in &r.matches {
                println!("{:<38} {}", m.key, m.summary);
            }
        }
        RepoCmd::Clone { workspace, epr_out } | RepoCmd::Refine { workspace, epr_out, .. } => {
            let target = Some(workspace_arg(workspace)?);
            let r = match cmd {
                RepoCmd::Refine { ram, cpu, disk, software, capability, .. } => {
                    let mut disks = Vec::new();
                    for d in disk {
                        let (n, r) = d
                            .split_once('=')
                            .ok_or_else(|| ClientError::Usage(format!("--disk '{d}': expected NAME=MIN-MAX")))?;
                        disks.push((n.to_string(), range_arg(r)?));
                    }
                    let req = rm::Refine {
                        target,
                        ram: ram.as_deref().map(range_arg).transpose()?,
                        cpu: cpu.as_deref().map(range_arg).transpose()?,
                        disks,
                        software: software.as_deref().map(element_file).transpose()?,
                        capability: capability.as_deref().map(element_file).transpose()?,
                    };
                    c.invoke(&epr, &req).await?
                }
                _ => c.invoke(&epr, &rm::CloneRequest { target }).await?,
            };
            if let Some(p) = epr_out {
                std::fs::write(p, r.epr.to_file_xml()).map_err(|e| ClientError::Usage(format!("{}: {e}", p.display())))?;
            }
            if xml_out {
                print!("{}", r.epr.to_file_xml());
            } else {
                println!("{:<38} NEW", "SOURCE");
                println!("{:<38} {}", r.source, r.epr.properties.first().map(|(_, v)| v.as_str()).unwrap_or("-"));
            }
        }
        RepoCmd::Register { source, digest } => {
            let r = c.invoke(&epr, &rm::Register { source: source.clone(), digest: digest.clone() }).await?;
            print_images(&r, xml_out);
        }
        RepoCmd::Images => {
            print_images(&c.invoke(&epr, &rm::ImagesRequest { op: rm::ImagesOp::Images, grace_secs: None }).await?, xml_out)
        }
        RepoCmd::Gc { grace } => {
            print_images(&c.invoke(&epr, &rm::ImagesRequest { op: rm::ImagesOp::Gc, grace_secs: Some(*grace) }).await?, xml_out)
        }
        RepoCmd::Checkout { workspace, manager, lease } => {
            print_lock(&c.invoke(&epr, &lock(LockOp::Checkout, workspace, manager, *lease)?).await?, xml_out)
        }
        RepoCmd::Release { workspace, manager } => {
            print_lock(&c.invoke(&epr, &lock(LockOp::Release, workspace, manager, None)?).await?, xml_out)
        }
        RepoCmd::BreakLock { workspace } => {
            print_lock(&c.invoke(&epr, &lock(LockOp::BreakLock, workspace, &None, None)?).await?, xml_out)
        }
    }
    Ok(0)
}

fn parse_prot(s: &str) -> Result<vws::transfer::Protection, String> {
    vws::transfer::Protection::parse(s).ok_or_else(|| format!("{s:?}: expected C, S or P"))
}

/// `vws stage`: returns the process exit code.
#[allow(clippy::too_many_arguments)]
fn stage_cmd(
    src: &str,
    dst: &str,
    streams: usize,
    no_dcau: bool,
    prot: vws::transfer::Protection,
    no_verify: bool,
    expect: Option<&str>,
    proxy: Option<&PathBuf>,
    quiet: bool,
) -> i32 {
    use vws::transfer::{self, Digest, Options, ProgressInfo};
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let mut opts = Options {
        streams: streams.max(1),
        dcau: !no_dcau,
        protect: prot,
        verify: !no_verify,
        credential: proxy.cloned(),
        ..Default::default()
    };
    if let Some(e) = expect {
        match Digest::parse(e) {
            Ok(d) => opts.expected = Some(d),
            Err(e) => {
                eprintln!("Error: --expect: {e}");
                return 64;
            }
        }
    }
    if !quiet {
        let bar = Bar::new();
        opts.progress = Some(std::sync::Arc::new(move |p: &ProgressInfo| {
            bar.show("", p.bytes, p.total, Some(p.rate), p.eta.map(|d| d.as_secs_f64()));
            if p.done {
                bar.finish();
            }
        }));
    }
    match transfer::stage(src, dst, &opts) {
        Ok(o) => {
            let secs = o.elapsed.as_secs_f64();
            eprintln!(
                "staged {} bytes in {:.2} s ({:.1} MB/s), sha256 {}{}",
                o.bytes,
                secs,
                o.bytes as f64 / secs.max(1e-9) / 1e6,
                o.sha256,
                o.remote_checksum.map(|(a, h)| format!(", server {} {}", a.name(), h)).unwrap_or_default()
            );
            0
        }
        Err(e) => {
            eprintln!("Error: {e}");
            match e.kind() {
                "bad_url" => 64,
                "checksum_mismatch" => 3,
                _ => 2,
            }
        }
    }
}

/// stderr as indicatif's terminal, for a progress bar drawn in place on a TTY ([`Bar`] writes
/// plain lines otherwise).
#[derive(Debug)]
struct Stderr;

impl Stderr {
    fn put(&self, s: &str) -> std::io::Result<()> {
        use std::io::Write;
        std::io::stderr().lock().write_all(s.as_bytes())
    }
}

impl indicatif::TermLike for Stderr {
    fn width(&self) -> u16 {
        200
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.put(&format!("\x1b[{n}A"))?;
        }
        Ok(())
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.put(&format!("\x1b[{n}B"))?;
        }
        Ok(())
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.put(&format!("\x1b[{n}C"))?;
        }
        Ok(())
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.put(&format!("\x1b[{n}D"))?;
        }
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.put(s)?;
        self.put("\n")
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.put(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.put("\r\x1b[K")
    }
    fn flush(&self) -> std::io::Result<()> {
        use std::io::Write;
        std::io::stderr().flush()
    }
}

/// A transfer progress bar on stderr: `image 1/2 root [####      ]  45.0% 12.0/26.7 MiB
/// 300.1 MiB/s ETA 3s`, or without a known size `12.0 MiB 300.1 MiB/s`. Rate and ETA are the
/// transfer's own. On a terminal indicatif draws it in place, at most 10 times a second;
/// otherwise (a log, a pipe) it is written as plain lines, one each time what it shows changes.
struct Bar {
    pb: indicatif::ProgressBar,
    /// Not a terminal: the last line written.
    plain: Option<std::sync::Mutex<String>>,
}

const BAR_WIDTH: usize = 30;

impl Bar {
    fn new() -> Bar {
        use std::io::IsTerminal;
        let tty = std::io::stderr().is_terminal();
        let target = if tty {
            indicatif::ProgressDrawTarget::term_like_with_hz(Box::new(Stderr), 10)
        } else {
            indicatif::ProgressDrawTarget::hidden()
        };
        let pb = indicatif::ProgressBar::with_draw_target(None, target);
        pb.set_style(Self::style(false));
        Bar { pb, plain: (!tty).then(|| std::sync::Mutex::new(String::new())) }
    }

    fn style(sized: bool) -> indicatif::ProgressStyle {
        let t = if sized { "{prefix}[{bar:30}] {msg}" } else { "{prefix}{msg}" };
        indicatif::ProgressStyle::with_template(t).expect("valid template").progress_chars("# ")
    }

    /// `rate` (bytes/s) is None when nothing is being transferred (an image already staged):
    /// then neither rate nor ETA is shown.
    fn show(&self, label: &str, bytes: u64, total: Option<u64>, rate: Option<f64>, eta_s: Option<f64>) {
        let mb = bytes as f64 / 1048576.0;
        let speed = |eta: Option<String>| match (rate, eta) {
            (Some(r), Some(eta)) => format!(" {:.1} MiB/s ETA {eta}", r / 1048576.0),
            (Some(r), None) => format!(" {:.1} MiB/s", r / 1048576.0),
            (None, _) => String::new(),
        };
        if self.pb.prefix() != label {
            self.pb.set_prefix(label.to_string());
        }
        let (msg, frac) = match total {
            Some(t) if t > 0 => {
                if self.pb.length() != Some(t) {
                    self.pb.set_style(Self::style(true));
                    self.pb.set_length(t);
                }
                self.pb.set_position(bytes.min(t));
                let eta = eta_s.map(|d| format!("{d:.0}s")).unwrap_or_else(|| "?".into());
                let frac = (bytes as f64 / t as f64).min(1.0);
                let msg = format!("{:5.1}% {:.1}/{:.1} MiB{}", frac * 100.0, mb, t as f64 / 1048576.0, speed(Some(eta)));
                (msg, Some(frac))
            }
            _ => (format!("{mb:.1} MiB{}", speed(None)), None),
        };
        if let Some(last) = &self.plain {
            let bar = frac
                .map(|f| {
                    let n = ((f * BAR_WIDTH as f64) as usize).min(BAR_WIDTH);
                    format!("[{}{}] ", "#".repeat(n), " ".repeat(BAR_WIDTH - n))
                })
                .unwrap_or_default();
            let line = format!("{label}{bar}{msg}");
            let mut last = last.lock().unwrap();
            if *last != line {
                eprintln!("{line}");
                *last = line;
            }
        }
        self.pb.set_message(msg);
    }

    /// Leaves the last state drawn, on its own line.
    fn finish(&self) {
        if !self.pb.is_finished() {
            self.pb.finish();
            if self.plain.is_none() {
                eprintln!();
            }
        }
    }
}

/// What `deploy` follows: the workspace's state and its `staging` property.
struct Staging {
    state: String,
    status: String,
    error: Option<(String, String)>,
    images: Vec<ImageProgress>,
}

/// One image of a staging as the `staging` property reports it.
struct ImageProgress {
    name: String,
    status: String,
    bytes: u64,
    total: Option<u64>,
    /// Bytes/s while it is being transferred (the server reports none otherwise).
    rate: Option<f64>,
    eta: Option<f64>,
}

async fn poll_staging(c: &Client, epr: &Epr) -> Result<Staging, ClientError> {
    let qs = [client::parse_qname_arg("nimbus:CurrentState")?, client::parse_qname_arg("staging")?];
    let r = c.invoke(epr, &rp::GetMultipleResourceProperties { names: qs.to_vec() }).await?;
    let r = client::values_element(&r.content)?;
    let state = r.child(ns::NIMBUS, "CurrentState").map(|e| e.text().trim().to_string()).unwrap_or_default();
    let mut out = Staging { state, status: String::new(), error: None, images: Vec::new() };
    if let Some(s) = r.child(ns::VWS, "staging") {
        out.status = s.attr("", "status").unwrap_or_default().to_string();
        out.error = s.child(ns::VWS, "error").map(|e| (e.attr("", "kind").unwrap_or_default().to_string(), e.text()));
        for i in s.elements().filter(|e| e.is(ns::VWS, "image")) {
            let num = |n: &str| i.attr("", n).and_then(|v| v.parse::<u64>().ok());
            out.images.push(ImageProgress {
                name: i.attr("", "name").unwrap_or_default().to_string(),
                status: i.attr("", "status").unwrap_or_default().to_string(),
                bytes: num("bytes").unwrap_or(0),
                total: num("total"),
                rate: num("rate").map(|r| r as f64),
                eta: num("eta").map(|v| v as f64),
            });
        }
    }
    Ok(out)
}

/// `vws deploy`: asks for the deploy, then follows the staging with a progress bar until the
/// workspace is Staged (exit 0) or the staging failed (exit 3 for a checksum mismatch, else 2).
async fn deploy_cmd(c: &Client, epr: &Epr, wait: bool, quiet: bool, hot: bool) -> Result<i32, ClientError> {
    let state = c.invoke(epr, &ManagerRequest { op: ManagerOp::Deploy, hot }).await?.state;
    if !wait {
        println!("{state}");
        return Ok(0);
    }
    let start = std::time::Instant::now();
    let bar = (!quiet).then(Bar::new);
    loop {
        let s = poll_staging(c, epr).await?;
        let n = s.images.len();
        if let Some(bar) = &bar {
            let at = |st: &str| s.images.iter().position(|i| i.status == st);
            if let Some(k) = at("staging").or_else(|| at("pending")).or(n.checked_sub(1)) {
                let i = &s.images[k];
                bar.show(&format!("image {}/{n} {} ", k + 1, i.name), i.bytes, i.total, i.rate, i.eta);
            }
        }
        if s.state != "Staging" {
            if let Some(bar) = &bar {
                bar.finish();
            }
            let bytes: u64 = s.images.iter().map(|i| i.bytes).sum();
            return Ok(match (s.state.as_str(), s.error) {
                ("Staged", _) => {
                    eprintln!("deployed: {n} image(s), {bytes} bytes in {:.1} s", start.elapsed().as_secs_f64());
                    println!("{}", s.state);
                    0
                }
                (st, Some((kind, msg))) => {
                    eprintln!("Error: staging failed ({kind}): {msg}");
                    println!("{st}");
                    if kind == "checksum_mismatch" {
                        3
                    } else {
                        2
                    }
                }
                (st, None) => {
                    eprintln!("Error: the workspace went to {st} while staging");
                    2
                }
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// A VM operation; with `wait`, follows a transitional state (Stopping, Saving, Restoring)
/// with a spinner until the final one. Exit 0, or 2 when the workspace ended Corrupted or the
/// operation failed (its cause printed).
async fn vm_op_cmd(c: &Client, epr: &Epr, op: ManagerOp, wait: bool) -> Result<i32, ClientError> {
    let mut state = c.invoke(epr, &ManagerRequest::new(op)).await?.state;
    let op = op.name();
    let transitional = |s: &str| matches!(s, "Stopping" | "Saving" | "Restoring" | "Staging");
    if wait && transitional(&state) {
        // A spinner on a terminal only (indicatif's stderr target hides itself otherwise).
        let spinner = indicatif::ProgressBar::new_spinner();
        spinner.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template").tick_chars("|/-\\ "),
        );
        spinner.enable_steady_tick(std::time::Duration::from_millis(100));
        while transitional(&state) {
            spinner.set_message(state.clone());
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            state = poll_staging(c, epr).await?.state;
        }
        spinner.finish_and_clear();
        let cause = client_cause(c, epr).await?;
        let failed = state == "Corrupted" || (op == "save" && state != "Saved") || (op == "restore" && state != "Running");
        if let Some(cause) = cause.filter(|c| !c.is_empty()) {
            eprintln!("{}: {cause}", if failed { "Error" } else { "note" });
        }
        println!("{state}");
        return Ok(if failed { 2 } else { 0 });
    }
    println!("{state}");
    Ok(0)
}

async fn client_cause(c: &Client, epr: &Epr) -> Result<Option<String>, ClientError> {
    let r = c.invoke(epr, &rp::GetResourceProperty { name: client::parse_qname_arg("cause")? }).await?;
    let r = client::values_element(&r.content)?;
    Ok(r.child(ns::VWS, "cause").map(|e| e.text().trim().to_string()))
}

fn resource(args: &Args) -> Result<Epr, ClientError> {
    let path = args.epr.as_ref().ok_or_else(|| ClientError::Usage("this command needs --epr FILE".into()))?;
    client::read_epr(path)
}

fn print_elements(out: Output, parent: &Element) {
    for c in &parent.children {
        match (c, out) {
            (Node::Element(e), Output::Xml) => println!("{}", e.to_fragment()),
            (Node::Element(e), Output::Table) => {
                let value = client::watch::flatten(e);
                println!("{:<40} {}", e.name.clark(), value);
            }
            (Node::Text(t), _) if !t.trim().is_empty() => println!("{}", t.trim()),
            _ => {}
        }
    }
}

async fn run(args: Args) -> Result<i32, ClientError> {
    let mut c = if args.https { Client::with_gsi(args.proxy.as_deref())? } else { Client::new() };
    if args.sign {
        c = c.sign_with(args.proxy.as_deref())?;
    }
    if args.https {
        let target = args.service.clone().or_else(|| args.epr.as_ref().and_then(|p| client::read_epr(p).ok()).map(|e| e.address));
        if let Some(t) = target.filter(|t| !t.starts_with("https://")) {
            return Err(ClientError::Usage(format!("--https given but {t} is not an https:// URL")));
        }
    }
    match &args.cmd {
        Cmd::Create { description, epr_out } => {
            let service = args.service.as_deref().ok_or_else(|| ClientError::Usage("create needs --service URL".into()))?;
            let text = std::fs::read_to_string(description)
                .map_err(|e| ClientError::Usage(format!("{}: {e}", description.display())))?;
            // Check it is XML at all, then send the root element as it is (minus any declaration).
            let root = xml::parse(&text, &Default::default())
                .map_err(|e| ClientError::Usage(format!("{}: {e}", description.display())))?;
            let epr = c.invoke_at(service, None, &wm::Create { description: root }).await?.epr;
            if let Some(p) = epr_out {
                std::fs::write(p, epr.to_file_xml()).map_err(|e| ClientError::Usage(format!("{}: {e}", p.display())))?;
            }
            match args.output {
                Output::Xml => print!("{}", epr.to_file_xml()),
                Output::Table => {
                    println!("{:<40} {}", "address", epr.address);
                    for (q, v) in &epr.properties {
                        println!("{:<40} {}", q.clark(), v);
                    }
                }
            }
        }
        Cmd::GetProperty { qname } => {
            let epr = resource(&args)?;
            let q = client::parse_qname_arg(qname)?;
            let r = c.invoke(&epr, &rp::GetResourceProperty { name: q }).await?;
            print_elements(args.output, &client::values_element(&r.content)?);
        }
        Cmd::GetProperties { qnames } => {
            let epr = resource(&args)?;
            let qs = qnames.iter().map(|q| client::parse_qname_arg(q)).collect::<Result<Vec<_>, _>>()?;
            let r = c.invoke(&epr, &rp::GetMultipleResourceProperties { names: qs }).await?;
            print_elements(args.output, &client::values_element(&r.content)?);
        }
        Cmd::Query { xpath } => {
            let epr = resource(&args)?;
            let q = rp::QueryResourceProperties { expression: xpath.clone(), namespaces: Vec::new() };
            let r = c.invoke(&epr, &q).await?;
            print_elements(args.output, &client::values_element(&r.content)?);
        }
        Cmd::SetTerminationTime { when } => {
            let epr = resource(&args)?;
            let t = client::parse_when(when, vws::wsrf::time::now_ms())?;
            let r = c.invoke(&epr, &rp::SetTerminationTime { requested: t }).await?;
            let fmt = vws::wsrf::time::format_ms;
            println!("termination time: {}", r.new_termination_time.map(fmt).unwrap_or_else(|| "never".into()));
            println!("current time:     {}", fmt(r.current_time));
        }
        Cmd::Destroy => {
            let epr = resource(&args)?;
            c.invoke(&epr, &rp::Destroy).await?;
            println!("destroyed");
        }
        Cmd::Deploy { no_wait, quiet, hot } => {
            let epr = resource(&args)?;
            return deploy_cmd(&c, &epr, !no_wait, *quiet, *hot).await;
        }
        Cmd::Start { no_wait }
        | Cmd::Stop { no_wait }
        | Cmd::Pause { no_wait }
        | Cmd::Unpause { no_wait }
        | Cmd::Reboot { no_wait }
        | Cmd::Save { no_wait }
        | Cmd::Restore { no_wait } => {
            let op = match &args.cmd {
                Cmd::Start { .. } => ManagerOp::Start,
                Cmd::Stop { .. } => ManagerOp::Stop,
                Cmd::Pause { .. } => ManagerOp::Pause,
                Cmd::Unpause { .. } => ManagerOp::Unpause,
                Cmd::Reboot { .. } => ManagerOp::Reboot,
                Cmd::Save { .. } => ManagerOp::Save,
                _ => ManagerOp::Restore,
            };
            let epr = resource(&args)?;
            return vm_op_cmd(&c, &epr, op, !no_wait).await;
        }
        Cmd::Console { follow } => {
            let epr = resource(&args)?;
            let mut offset = 0u64;
            loop {
                let r = c.invoke(&epr, &wm::Console { offset }).await?;
                let (text, next) = (r.text, r.offset);
                use std::io::Write;
                print!("{text}");
                let _ = std::io::stdout().flush();
                if next == offset && !follow {
                    break;
                }
                if next == offset {
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
                offset = next;
            }
        }
        Cmd::Status => {
            let epr = resource(&args)?;
            let names = ["nimbus:CurrentState", "ip", "mac", "host", "startTime", "cause"];
            let qs = names.iter().map(|q| client::parse_qname_arg(q)).collect::<Result<Vec<_>, _>>()?;
            let r = c.invoke(&epr, &rp::GetMultipleResourceProperties { names: qs }).await?;
            let r = client::values_element(&r.content)?;
            let get = |n: &str, l: &str| r.child(n, l).map(|e| e.text().trim().to_string()).unwrap_or_else(|| "-".into());
            let state = get(ns::NIMBUS, "CurrentState");
            let uptime = match (state.as_str(), r.child(ns::VWS, "startTime")) {
                ("Running" | "Paused", Some(t)) => vws::wsrf::time::parse_ms(t.text().trim())
                    .map(|ms| format!("{}s", ((vws::wsrf::time::now_ms() - ms).max(0) / 1000)))
                    .unwrap_or_else(|| "-".into()),
                _ => "-".into(),
            };
            println!("{:<10} {:<16} {:<18} {:<24} UPTIME", "STATE", "IP", "MAC", "HOST");
            println!(
                "{:<10} {:<16} {:<18} {:<24} {}",
                state,
                get(ns::VWS, "ip"),
                get(ns::VWS, "mac"),
                get(ns::VWS, "host"),
                uptime
            );
            if let Some(c) = r.child(ns::VWS, "cause") {
                println!("cause: {}", c.text().trim());
            }
        }
        Cmd::Undeploy => {
            let epr = resource(&args)?;
            println!("{}", c.invoke(&epr, &ManagerRequest::new(ManagerOp::Undeploy)).await?.state);
        }
        Cmd::Watch { properties, listen } => {
            let epr = resource(&args)?;
            return client::watch::watch(&c, &epr, properties, listen.as_deref()).await;
        }
        Cmd::Repo { cmd } => return repo_cmd(&c, &args, cmd).await,
        Cmd::Stage { .. } => return Err(ClientError::Usage("stage runs outside the SOAP client".into())),
    }
    Ok(0)
}

fn main() {
    // Packaging (`make man`): the manual page vws(1), generated from these arguments.
    if std::env::var_os("VWS_MANPAGE").is_some() {
        use clap::CommandFactory;
        if let Err(e) = clap_mangen::Man::new(Args::command()).render(&mut std::io::stdout()) {
            eprintln!("vws: {e}");
            std::process::exit(1);
        }
        return;
    }
    let args = Args::parse();
    if let Cmd::Stage { src, dst, streams, no_dcau, prot, no_verify, expect, quiet } = &args.cmd {
        std::process::exit(stage_cmd(
            src,
            dst,
            *streams,
            *no_dcau,
            *prot,
            *no_verify,
            expect.as_deref(),
            args.proxy.as_ref(),
            *quiet,
        ));
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    match rt.block_on(run(args)) {
        Ok(0) => {}
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::exit(match e {
                ClientError::Usage(_) => 64,
                _ => 2,
            });
        }
    }
}
