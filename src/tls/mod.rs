//! TLS on every channel: the inventory's certificate authority and the certificates pgstrap
//! issues with it (`pki`), and the one client configuration pgstrap's own connections use: the
//! inventory's CA as the only trusted root, pgstrap's client certificate for etcd. It is installed
//! once per run, when the certificates are loaded with the secrets ([`install`]); every HTTP
//! client (etcd's gateway, Patroni's REST API) and PostgreSQL connection is built from it.

pub mod pki;

use std::sync::{Arc, Once, RwLock};
use std::time::Duration;

use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use rustls::ClientConfig;

pub use pki::{Issued, Pki, Policy, Wanted};

/// The name of pgstrap's own client certificate in the store.
pub const CLIENT_NAME: &str = "pgstrap";

static CLIENT: RwLock<Option<Arc<ClientConfig>>> = RwLock::new(None);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static DEFAULT: Once = Once::new();
    DEFAULT.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Build the client configuration from the inventory's CA and pgstrap's client certificate, and
/// make it the one every client of this run uses.
pub fn install(pki: &Pki) -> Result<(), String> {
    let config = client_config(&pki.ca, pki.issued.get(CLIENT_NAME))?;
    *CLIENT
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(config));
    Ok(())
}

/// This run does not use TLS (the inventory's clusters run without it).
pub fn clear() {
    *CLIENT
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
}

/// A rustls client configuration trusting only `ca`, presenting `identity` when a server asks.
pub fn client_config(ca: &str, identity: Option<&Issued>) -> Result<ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        let cert = cert.map_err(|e| format!("the CA certificate does not parse: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("the CA certificate is not usable: {e}"))?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match identity {
        Some(issued) => {
            let chain = CertificateDer::pem_slice_iter(issued.cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("pgstrap's client certificate does not parse: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(issued.key.expose().as_bytes())
                .map_err(|_| "pgstrap's client key does not parse".to_owned())?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("pgstrap's client certificate is not usable: {e}"))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The installed client configuration, if this run uses TLS.
pub fn config() -> Option<Arc<ClientConfig>> {
    CLIENT
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// `https` when this run uses TLS, else `http`.
pub fn scheme() -> &'static str {
    if config().is_some() {
        "https"
    } else {
        "http"
    }
}

/// An HTTP client with these timeouts, speaking TLS with the installed configuration.
pub fn http_client(connect: Duration, total: Duration) -> reqwest::Client {
    let _ = provider();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(connect)
        .timeout(total)
        .no_proxy();
    if let Some(config) = config() {
        builder = builder.tls_backend_preconfigured((*config).clone());
    }
    builder.build().unwrap_or_else(|_| reqwest::Client::new())
}

/// The TLS connector for PostgreSQL connections (verify-full against the inventory's CA when
/// this run uses TLS).
pub fn postgres_connector() -> (
    tokio_postgres_rustls::MakeRustlsConnect,
    tokio_postgres::config::SslMode,
) {
    match config() {
        Some(config) => (
            tokio_postgres_rustls::MakeRustlsConnect::new((*config).clone()),
            tokio_postgres::config::SslMode::Require,
        ),
        None => {
            // Never used for TLS (sslmode disable), only to satisfy the connector's type: built
            // once, not for every connection a reconnecting client makes.
            static PLAIN: std::sync::OnceLock<ClientConfig> = std::sync::OnceLock::new();
            let plain = PLAIN.get_or_init(|| {
                ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map(|b| {
                        b.with_root_certificates(rustls::RootCertStore::empty())
                            .with_no_client_auth()
                    })
                    .expect("ring supports the default protocol versions")
            });
            (
                tokio_postgres_rustls::MakeRustlsConnect::new(plain.clone()),
                tokio_postgres::config::SslMode::Disable,
            )
        }
    }
}
