//! `vws`: command-line client for vws (and any GT 4.0 WSRF service).
//!
//! `vws --service URL create DESCRIPTION.xml --epr-out FILE`, and for a resource
//! `vws --epr FILE get-property QNAME | get-properties QNAME... | query XPATH |
//! set-termination-time (RFC3339|+SECONDS|never) | destroy`.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use vws::client::{self, Client, ClientError};
use vws::soap::epr::Epr;
use vws::soap::ns;
use vws::soap::xml::{self, Element, Node};

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
                let value = if e.is_nil() { "(nil)".to_string() } else { flatten(e) };
                println!("{:<40} {}", e.name.clark(), value);
            }
            (Node::Text(t), _) if !t.trim().is_empty() => println!("{}", t.trim()),
            _ => {}
        }
    }
}

/// Text of an element, or its children as `name=value` pairs.
fn flatten(e: &Element) -> String {
    if e.elements().next().is_none() && e.attrs.is_empty() {
        return e.text().trim().to_string();
    }
    let mut parts: Vec<String> = e.attrs.iter().map(|a| format!("{}={}", a.name.local, a.value)).collect();
    for c in e.elements() {
        parts.push(format!("{}[{}]", c.name.local, flatten(c)));
    }
    parts.join(" ")
}

async fn run(args: Args) -> Result<(), ClientError> {
    let c = Client::new();
    match &args.cmd {
        Cmd::Create { description, epr_out } => {
            let service = args.service.as_deref().ok_or_else(|| ClientError::Usage("create needs --service URL".into()))?;
            let text = std::fs::read_to_string(description)
                .map_err(|e| ClientError::Usage(format!("{}: {e}", description.display())))?;
            // Check it is XML at all, then send the root element as it is (minus any declaration).
            let root = xml::parse(&text, &Default::default())
                .map_err(|e| ClientError::Usage(format!("{}: {e}", description.display())))?;
            let payload = format!("<vws:create xmlns:vws=\"{}\">{}</vws:create>", ns::VWS, root.to_fragment());
            let action = format!("{}/WorkspaceFactoryPortType/createRequest", ns::VWS);
            let resp = c.call(service, None, &action, &payload).await?;
            let epr_el = resp
                .child(ns::WSA, "EndpointReference")
                .ok_or_else(|| ClientError::BadAnswer { status: 200, msg: "createResponse without EPR".into() })?;
            let epr = Epr::from_element(epr_el).map_err(|m| ClientError::BadAnswer { status: 200, msg: m })?;
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
            let action = format!("{}/GetResourceProperty", ns::WSRP_ACTION);
            let r = c.call(&epr.address, Some(&epr), &action, &client::get_property_payload(&q)).await?;
            print_elements(args.output, &r);
        }
        Cmd::GetProperties { qnames } => {
            let epr = resource(&args)?;
            let qs = qnames.iter().map(|q| client::parse_qname_arg(q)).collect::<Result<Vec<_>, _>>()?;
            let action = format!("{}/GetMultipleResourceProperties", ns::WSRP_ACTION);
            let r = c.call(&epr.address, Some(&epr), &action, &client::get_properties_payload(&qs)).await?;
            print_elements(args.output, &r);
        }
        Cmd::Query { xpath } => {
            let epr = resource(&args)?;
            let action = format!("{}/QueryResourceProperties", ns::WSRP_ACTION);
            let r = c.call(&epr.address, Some(&epr), &action, &client::query_payload(xpath)).await?;
            print_elements(args.output, &r);
        }
        Cmd::SetTerminationTime { when } => {
            let epr = resource(&args)?;
            let t = client::parse_when(when, vws::wsrf::time::now_ms())?;
            let action = format!("{}/SetTerminationTime", ns::WSRL_ACTION);
            let r = c.call(&epr.address, Some(&epr), &action, &client::set_termination_payload(t)).await?;
            let get = |l: &str| r.child(ns::WSRL, l).map(|e| if e.is_nil() { "never".to_string() } else { e.text() });
            println!("termination time: {}", get("NewTerminationTime").unwrap_or_default());
            println!("current time:     {}", get("CurrentTime").unwrap_or_default());
        }
        Cmd::Destroy => {
            let epr = resource(&args)?;
            let action = format!("{}/Destroy", ns::WSRL_ACTION);
            c.call(&epr.address, Some(&epr), &action, &format!("<Destroy xmlns=\"{}\"/>", ns::WSRL)).await?;
            println!("destroyed");
        }
    }
    Ok(())
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("Error: {e}");
        std::process::exit(match e {
            ClientError::Usage(_) => 64,
            _ => 2,
        });
    }
}
