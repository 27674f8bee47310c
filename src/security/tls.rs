//! OpenSSL glue for GSI over TLS (the HTTPS listener, GridFTP control and data channels).
//! OpenSSL's own chain verification knows nothing of legacy/draft proxies, signing policies or
//! Globus' rules, so the contexts built here request the peer's certificate with a verify
//! callback that lets OpenSSL's verdict through (logging it) and keeps the handshake going;
//! OpenSSL retains the chain exactly as the peer presented it, and [`verify_peer`] then runs the
//! GSI validation of [`super::proxy`] on it. The handshake alone authenticates nothing: callers
//! MUST call [`verify_peer`] (or `security::authenticate_peer`) before trusting the connection,
//! and treat every error — including "no certificate" — as a refusal.

use openssl::ssl::{
    SslAcceptor, SslAcceptorBuilder, SslConnector, SslConnectorBuilder, SslContextBuilder, SslMethod, SslRef, SslVerifyMode,
};
use openssl::x509::{X509Ref, X509StoreContextRef, X509};
use std::net::IpAddr;

use super::certdir::CertDir;
use super::credential::Credential;
use super::proxy::{validate_chain, validate_chain_at, Validated};
use super::x509 as xu;
use super::GsiError;

fn install_credential(b: &mut SslContextBuilder, cred: &Credential) -> Result<(), GsiError> {
    b.set_certificate(&cred.cert)?;
    b.set_private_key(&cred.key)?;
    for c in &cred.chain {
        b.add_extra_chain_cert(c.clone())?;
    }
    b.check_private_key()?;
    Ok(())
}

/// The verify callback: OpenSSL's (proxy-unaware) result is logged, never decisive.
fn pass_through(preverify_ok: bool, ctx: &mut X509StoreContextRef) -> bool {
    if !preverify_ok {
        let subject = ctx.current_cert().map(xu::subject).unwrap_or_default();
        tracing::debug!(
            depth = ctx.error_depth(),
            error = %ctx.error(),
            %subject,
            "OpenSSL chain verification deferred to GSI validation"
        );
    }
    true
}

/// A server context presenting `cred` (e.g. the host credential) that requests a client
/// certificate chain. Anonymous clients still complete the handshake; [`verify_peer`] refuses
/// them, so a listener can choose to serve some paths (WSDL) anonymously.
pub fn acceptor(cred: &Credential) -> Result<SslAcceptorBuilder, GsiError> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    install_credential(&mut b, cred)?;
    b.set_verify_callback(SslVerifyMode::PEER, pass_through);
    // Required when client certificates are requested and sessions are cached.
    b.set_session_id_context(b"vws-gsi")?;
    Ok(b)
}

/// A client context presenting `cred` (a proxy chain, usually) when given. The server's chain
/// is accepted by OpenSSL whatever it is: call [`verify_peer`] and [`check_host`] after the
/// handshake.
pub fn connector(cred: Option<&Credential>) -> Result<SslConnectorBuilder, GsiError> {
    let mut b = SslConnector::builder(SslMethod::tls_client())?;
    if let Some(c) = cred {
        install_credential(&mut b, c)?;
    }
    b.set_verify_callback(SslVerifyMode::PEER, pass_through);
    Ok(b)
}

/// The chain the peer presented, leaf first (empty when it presented none).
pub fn peer_chain(ssl: &SslRef) -> Vec<X509> {
    let Some(leaf) = ssl.peer_certificate() else { return Vec::new() };
    let leaf_der = leaf.to_der().ok();
    let mut out = vec![leaf];
    if let Some(st) = ssl.peer_cert_chain() {
        for (i, c) in st.iter().enumerate() {
            // On the client side OpenSSL's peer chain includes the leaf; on the server side not.
            if i == 0 && leaf_der.is_some() && c.to_der().ok() == leaf_der {
                continue;
            }
            out.push(c.to_owned());
        }
    }
    out
}

/// Runs the GSI validation on the peer's chain after the handshake. Fails closed.
pub fn verify_peer(ssl: &SslRef, dir: &CertDir) -> Result<Validated, GsiError> {
    let chain = peer_chain(ssl);
    if chain.is_empty() {
        return Err(GsiError::NoPeerCertificate);
    }
    validate_chain(&chain, dir)
}

/// [`verify_peer`] as of `at` (Unix seconds).
pub fn verify_peer_at(ssl: &SslRef, dir: &CertDir, at: i64) -> Result<Validated, GsiError> {
    let chain = peer_chain(ssl);
    if chain.is_empty() {
        return Err(GsiError::NoPeerCertificate);
    }
    validate_chain_at(&chain, dir, at)
}

/// Checks that a (host) certificate names `host`: a subjectAltName dNSName (a leading `*.`
/// label matches one label) or iPAddress when it has any; otherwise the last CN, either `host`
/// or Globus' `host/<host>`.
pub fn check_host(cert: &X509Ref, host: &str) -> Result<(), GsiError> {
    let host_l = host.trim_end_matches('.').to_ascii_lowercase();
    let ip: Option<IpAddr> = host.trim_start_matches('[').trim_end_matches(']').parse().ok();
    let fail = |why: &str| GsiError::Rejected { subject: xu::subject(cert), reason: format!("{why} {host}") };
    if let Some(sans) = cert.subject_alt_names() {
        let mut any_dns = false;
        for n in sans.iter() {
            if let (Some(ip), Some(b)) = (ip, n.ipaddress()) {
                let m = match ip {
                    IpAddr::V4(v) => b == v.octets(),
                    IpAddr::V6(v) => b == v.octets(),
                };
                if m {
                    return Ok(());
                }
            }
            if let Some(d) = n.dnsname() {
                any_dns = true;
                if ip.is_none() && dns_match(&d.to_ascii_lowercase(), &host_l) {
                    return Ok(());
                }
            }
        }
        if any_dns || ip.is_some() {
            return Err(fail("no subjectAltName of the certificate matches"));
        }
    }
    let cn = cert
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .last()
        .and_then(|e| e.data().to_string().ok().map(|s| s.to_ascii_lowercase()));
    match cn {
        Some(cn) if cn == host_l || cn == format!("host/{host_l}") => Ok(()),
        _ => Err(fail("the certificate's common name does not match")),
    }
}

fn dns_match(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(rest) => host.split_once('.').map(|(first, tail)| !first.is_empty() && tail == rest).unwrap_or(false),
        None => pattern == host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_names() {
        assert!(dns_match("*.example.org", "a.example.org"));
        assert!(!dns_match("*.example.org", "a.b.example.org"));
        assert!(!dns_match("*.example.org", "example.org"));
        assert!(dns_match("localhost", "localhost"));
    }
}
