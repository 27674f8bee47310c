//! `vwsd`: the vws container. `vwsd --config conf/vwsd.toml [--http ADDR:PORT] [--data DIR]
//! [--log-format text|json] [--check]`.

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "vwsd",
    version,
    about = "Virtual Workspaces service (GT 4.0-compatible WSRF container)",
    long_about = "vwsd serves the Virtual Workspaces factory, workspace and manager port types over SOAP/WSRF \
(GT 4.0 wire format), with GSI transport and message security when [security] https is set. \
SIGTERM/SIGINT stop it gracefully; SIGHUP re-reads the trust directory, grid-mapfile and vomsdir."
)]
struct Args {
    /// Configuration file.
    #[arg(long, default_value = "conf/vwsd.toml")]
    config: PathBuf,
    /// Plain HTTP listener ADDR:PORT (overrides server.http).
    #[arg(long)]
    http: Option<String>,
    /// Store directory (overrides server.data).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Base URL for EPRs and WSDL (overrides server.public_url).
    #[arg(long)]
    public_url: Option<String>,
    /// GSI HTTPS listener ADDR:PORT (overrides security.https; turns security on).
    #[arg(long)]
    https: Option<String>,
    /// Host certificate (overrides security.host_cert).
    #[arg(long)]
    host_cert: Option<PathBuf>,
    /// Host key (overrides security.host_key).
    #[arg(long)]
    host_key: Option<PathBuf>,
    /// Trusted CA directory (overrides security.cert_dir).
    #[arg(long)]
    cert_dir: Option<PathBuf>,
    /// grid-mapfile (overrides security.gridmap).
    #[arg(long)]
    gridmap: Option<PathBuf>,
    /// VOMS trust directory (overrides security.vomsdir).
    #[arg(long)]
    vomsdir: Option<PathBuf>,
    /// Log format: `text` (human) or `json` (one object per line; overrides log.format).
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// Validate the configuration (and the trust files, credentials and paths it names when
    /// security is on), print the verdict, and exit: 0 valid, 2 invalid.
    #[arg(long)]
    check: bool,
}

fn main() {
    // Packaging (`make man`): the manual page vwsd(8), generated from these arguments.
    if std::env::var_os("VWS_MANPAGE").is_some() {
        use clap::CommandFactory;
        let man = clap_mangen::Man::new(Args::command()).section("8");
        if let Err(e) = man.render(&mut std::io::stdout()) {
            eprintln!("vwsd: {e}");
            std::process::exit(1);
        }
        return;
    }
    let args = Args::parse();
    let mut cfg = match vws::config::Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vwsd: {e}");
            std::process::exit(2);
        }
    };
    init_logging(&cfg.log, args.log_format.as_deref());
    if let Some(h) = args.http {
        cfg.server.http = Some(h);
    }
    if let Some(d) = args.data {
        cfg.server.data = d;
    }
    if let Some(u) = args.public_url {
        cfg.server.public_url = Some(u);
    }
    let sec = &mut cfg.security;
    if args.https.is_some() {
        sec.https = args.https;
    }
    if let Some(p) = args.host_cert {
        sec.host_cert = p;
    }
    if let Some(p) = args.host_key {
        sec.host_key = p;
    }
    if let Some(p) = args.cert_dir {
        sec.cert_dir = p;
    }
    if args.gridmap.is_some() {
        sec.gridmap = args.gridmap;
    }
    if let Some(p) = args.vomsdir {
        sec.vomsdir = p;
    }
    if args.check {
        match vws::app::check(&cfg) {
            Ok(summary) => {
                println!("vwsd: {} is valid: {summary}", args.config.display());
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("vwsd: {}: {e}", args.config.display());
                std::process::exit(2);
            }
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    if let Err(e) = rt.block_on(vws::app::run(cfg)) {
        eprintln!("vwsd: {e}");
        std::process::exit(1);
    }
}

/// The log subscriber: `VWS_LOG` (an EnvFilter string) wins over `[log] level` + `modules`; the
/// format is `--log-format`, else `[log] format`. JSON lines carry the request span's fields
/// (peer, dn, service, action, operation, key, outcome, duration_ms) flattened beside the event's.
fn init_logging(log: &vws::config::LogConfig, format: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let from_env = std::env::var("VWS_LOG").ok().filter(|v| !v.trim().is_empty());
    let filter = from_env
        .and_then(|v| EnvFilter::builder().parse(v).ok())
        .unwrap_or_else(|| EnvFilter::builder().parse(log.directives()).unwrap_or_else(|_| EnvFilter::new("info")));
    let json = format.unwrap_or(&log.format) == "json";
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // Each line written inside a request carries its context (peer, service, DN, action, key)
    // where a `request` span would be: vws::server::reqlog.
    use vws::server::reqlog::{RequestJson, RequestText};
    if json {
        let f = tracing_subscriber::fmt::format().json().flatten_event(true).with_current_span(true).with_span_list(false);
        b.json().event_format(RequestJson(f)).init();
    } else {
        // PlainFields: DefaultFields' output, cheaper.
        b.fmt_fields(vws::server::logfields::PlainFields)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .event_format(RequestText::new(true))
            .init();
    }
}
