//! `vwsd`: the vws container. `vwsd --config conf/vwsd.toml [--http ADDR:PORT] [--data DIR]`.

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "vwsd", version, about = "Virtual Workspaces service (GT 4.0-compatible WSRF container)")]
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
}

fn main() {
    let args = Args::parse();
    // A plain level (the usual case, and the default `info`) needs no EnvFilter: a static level
    // filter costs nothing per request span, where EnvFilter looks each span up on every
    // enter/exit. Anything else (`vws::server=debug,info`) gets the EnvFilter.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let spec = std::env::var("VWS_LOG").unwrap_or_default();
    let spec = if spec.trim().is_empty() { "info" } else { spec.trim() };
    match spec.parse::<tracing_subscriber::filter::LevelFilter>() {
        Ok(level) => tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).with_ansi(ansi).init(),
        Err(_) => tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(spec))
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .init(),
    }
    let mut cfg = match vws::config::Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vwsd: {e}");
            std::process::exit(2);
        }
    };
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
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    if let Err(e) = rt.block_on(vws::app::run(cfg)) {
        eprintln!("vwsd: {e}");
        std::process::exit(1);
    }
}
