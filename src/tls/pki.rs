//! The inventory's certificate authority and the certificates pgstrap issues with it, kept in
//! `<inventory stem>.tls/` next to the inventory (like the secrets file): `ca.crt`, `ca.key`
//! (0600), per host `hosts/<name>.crt` + `hosts/<name>.key` (0600), and pgstrap's own client
//! certificate `pgstrap-client.crt` + `.key`. The CA is generated once, or supplied
//! by the user (both files put there before the first run). A certificate is reused while it is
//! signed by this CA, names exactly the wanted names and addresses, matches its key, and is not
//! within `renew_before_days` of its expiry; otherwise it is issued anew (new key, new serial).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::secret::{Generated, PendingWrite, Secret};

/// Years the generated CA is valid.
const CA_YEARS: i64 = 10;

/// A certificate and its private key (PEM).
#[derive(Clone)]
pub struct Issued {
    pub cert: String,
    pub key: Secret,
}

/// Who a certificate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// File stem and subject CN (an inventory host name, or `pgstrap` for pgstrap's own client).
    pub name: String,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// Client authentication only (pgstrap's own certificate); hosts get server and client.
    pub client_only: bool,
}

/// How long certificates live and when they are renewed.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub days: i64,
    pub renew_before_days: i64,
}

/// The CA and the certificates of one inventory.
#[derive(Clone)]
pub struct Pki {
    pub dir: PathBuf,
    /// The CA certificate (PEM) every host trusts.
    pub ca: String,
    pub issued: BTreeMap<String, Issued>,
    /// What this load issued: (name, why).
    pub changes: Vec<(String, String)>,
    /// The files this load made up, not written yet (see `Secrets::persist`).
    pub pending: Vec<PendingWrite>,
}

/// Why the certificates could not be had (never with a key in it).
#[derive(Debug)]
pub struct PkiError {
    pub message: String,
    pub hint: String,
}

fn error(message: impl Into<String>, hint: impl Into<String>) -> PkiError {
    PkiError {
        message: message.into(),
        hint: hint.into(),
    }
}

/// `<inventory stem>.tls/` next to the inventory.
pub fn store_dir(inventory: &Path) -> PathBuf {
    let stem = inventory
        .file_stem()
        .map_or_else(|| "inventory".into(), |s| s.to_string_lossy().into_owned());
    inventory.with_file_name(format!("{stem}.tls"))
}

/// Load the CA and a certificate for every `wanted`. With `generate`, a missing CA is created
/// and missing, changed or expiring certificates are issued, their files left pending (written
/// once the caller has checked the hosts); without it, what is stored is used as is and a
/// missing CA gives `None`.
pub fn load(
    dir: &Path,
    wanted: &[Wanted],
    policy: Policy,
    generate: bool,
) -> Result<Option<Pki>, PkiError> {
    let now = OffsetDateTime::now_utc();
    let mut pending = Vec::new();
    let Some((ca_pem, ca_key_pem)) = ca_files(dir, now, generate, &mut pending)? else {
        return Ok(None);
    };
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| {
        error(
            format!("{}: ca.key is not a usable private key: {e}", dir.display()),
            "a PEM PKCS#8 key (ECDSA P-256/P-384, Ed25519 or RSA)",
        )
    })?;
    let ca_der = pem_to_der(&ca_pem).ok_or_else(|| {
        error(
            format!("{}: ca.crt is not a PEM certificate", dir.display()),
            "put the CA certificate there in PEM form",
        )
    })?;
    let (_, ca_x509) = x509_parser::parse_x509_certificate(&ca_der).map_err(|e| {
        error(
            format!("{}: ca.crt does not parse: {e}", dir.display()),
            "put the CA certificate there in PEM form",
        )
    })?;
    if ca_x509.public_key().subject_public_key.data.as_ref() != ca_key.public_key_raw() {
        return Err(error(
            format!("{}: ca.key is not the key of ca.crt", dir.display()),
            "put the CA's own key next to it",
        ));
    }
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, &ca_key).map_err(|e| {
        error(
            format!("{}: ca.crt cannot issue certificates: {e}", dir.display()),
            "a CA certificate (basic constraints CA:true)",
        )
    })?;
    let ca = Ca {
        x509: &ca_x509,
        issuer: &issuer,
        not_after: ca_x509.validity().not_after.timestamp(),
    };

    let mut pki = Pki {
        dir: dir.to_owned(),
        ca: ca_pem.clone(),
        issued: BTreeMap::new(),
        changes: Vec::new(),
        pending,
    };
    for want in wanted {
        load_certificate(&mut pki, &ca, want, policy, now, generate)?;
    }
    Ok(Some(pki))
}

/// The CA's certificate and key (PEM) as stored; with `generate`, a new CA when neither file is
/// there (its files left in `pending`); `None` without. One file without the other is an error.
fn ca_files(
    dir: &Path,
    now: OffsetDateTime,
    generate: bool,
    pending: &mut Vec<PendingWrite>,
) -> Result<Option<(String, String)>, PkiError> {
    let (ca_cert_path, ca_key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    match (read(&ca_cert_path)?, read(&ca_key_path)?) {
        (Some(cert), Some(key)) => Ok(Some((cert, key))),
        (None, None) if !generate => Ok(None),
        (None, None) => {
            let (cert, key) = new_ca(dir, now)?;
            pending.push(pending_write(&ca_key_path, &key, 0o600, Generated::Ca));
            pending.push(pending_write(&ca_cert_path, &cert, 0o644, Generated::Ca));
            Ok(Some((cert, key)))
        }
        _ => Err(error(
            format!(
                "{}: only one of ca.crt and ca.key is there",
                dir.display()
            ),
            "put both the CA certificate and its key there (PEM), or neither to have pgstrap generate a CA",
        )),
    }
}

/// The CA as the certificates need it: to judge a stored one, to issue one, and its expiry (no
/// certificate outlives it).
struct Ca<'a> {
    x509: &'a x509_parser::certificate::X509Certificate<'a>,
    issuer: &'a Issuer<'a, &'a KeyPair>,
    /// Unix seconds.
    not_after: i64,
}

/// One wanted certificate into `pki`: the stored one, or (with `generate`) one issued anew when
/// it is missing, changed or expiring (its files left pending, the reason in `changes`).
fn load_certificate(
    pki: &mut Pki,
    ca: &Ca<'_>,
    want: &Wanted,
    policy: Policy,
    now: OffsetDateTime,
    generate: bool,
) -> Result<(), PkiError> {
    // Hosts in `hosts/`, pgstrap's own next to the CA: no host name can clash with them.
    let base = if want.client_only {
        pki.dir.join(format!("{}-client", want.name))
    } else {
        pki.dir.join("hosts").join(&want.name)
    };
    let path = |ext: &str| {
        let mut path = base.clone().into_os_string();
        path.push(ext);
        PathBuf::from(path)
    };
    let (cert_path, key_path) = (path(".crt"), path(".key"));
    let stored = match (read(&cert_path)?, read(&key_path)?) {
        (Some(cert), Some(key)) => Some((cert, key)),
        _ => None,
    };
    // Without `generate`, what is stored is used as is (a stale one is renewed by the next
    // apply) and a missing one stays missing.
    let why = match &stored {
        Some((cert, key)) => judge(cert, key, ca.x509, want, policy, now).err(),
        None => Some("new".to_owned()),
    };
    let issued = match (why, stored) {
        (Some(why), _) if generate => {
            let not_after = (now + Duration::days(policy.days))
                .min(OffsetDateTime::from_unix_timestamp(ca.not_after).unwrap_or(now));
            let (cert, key) = issue(ca.issuer, want, now, not_after).map_err(|e| {
                error(
                    format!("cannot issue a certificate for {}: {e}", want.name),
                    "check the host's name and address in the inventory",
                )
            })?;
            let what = || Generated::Certificate(want.name.clone());
            pki.pending
                .push(pending_write(&key_path, &key, 0o600, what()));
            pki.pending
                .push(pending_write(&cert_path, &cert, 0o644, what()));
            pki.changes.push((want.name.clone(), why));
            Some((cert, key))
        }
        (_, stored) => stored,
    };
    if let Some((cert, key)) = issued {
        pki.issued.insert(
            want.name.clone(),
            Issued {
                cert,
                key: Secret::new(key),
            },
        );
    }
    Ok(())
}

/// Why a stored certificate must be issued anew, or `Ok` to keep it.
fn judge(
    cert_pem: &str,
    key_pem: &str,
    ca: &x509_parser::certificate::X509Certificate<'_>,
    want: &Wanted,
    policy: Policy,
    now: OffsetDateTime,
) -> Result<(), String> {
    let der = pem_to_der(cert_pem).ok_or("unreadable")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|_| "unreadable")?;
    if cert.verify_signature(Some(ca.public_key())).is_err() {
        return Err("not signed by this CA".into());
    }
    let key = KeyPair::from_pem(key_pem).map_err(|_| "unreadable key")?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err("key does not match".into());
    }
    let left = cert.validity().not_after.timestamp() - now.unix_timestamp();
    if left < policy.renew_before_days * 86_400 {
        return Err(if left <= 0 {
            "expired".into()
        } else {
            format!("renewed: expires in {} days", left / 86_400)
        });
    }
    let mut have: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(format!("dns:{d}")),
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    ip_of(bytes).map(|ip| format!("ip:{ip}"))
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut wanted: Vec<String> = want
        .dns
        .iter()
        .map(|d| format!("dns:{d}"))
        .chain(want.ips.iter().map(|ip| format!("ip:{ip}")))
        .collect();
    have.sort();
    wanted.sort();
    if have != wanted {
        return Err("names or addresses changed".into());
    }
    Ok(())
}

fn ip_of(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

fn new_ca(dir: &Path, now: OffsetDateTime) -> Result<(String, String), PkiError> {
    let failed = |e: rcgen::Error| error(format!("cannot create a CA: {e}"), "");
    let key = KeyPair::generate().map_err(failed)?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    let label = dir
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    name.push(
        DnType::CommonName,
        format!("pgstrap CA {}", label.trim_end_matches(".tls")),
    );
    name.push(DnType::OrganizationName, "pgstrap");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(365 * CA_YEARS);
    params.serial_number = Some(serial());
    let cert = params.self_signed(&key).map_err(failed)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn issue(
    issuer: &Issuer<'_, &KeyPair>,
    want: &Wanted,
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, want.name.clone());
    params.distinguished_name = name;
    params.subject_alt_names = want
        .dns
        .iter()
        .map(|d| Ok(SanType::DnsName(d.clone().try_into()?)))
        .chain(want.ips.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
        .collect::<Result<_, rcgen::Error>>()?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = if want.client_only {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    } else {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    };
    params.not_before = now - Duration::hours(1);
    params.not_after = not_after;
    params.serial_number = Some(serial());
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A random positive 128-bit serial (Patroni reloads its REST certificate when the serial on
/// disk changes).
fn serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// The DER of the first PEM block.
pub fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    Some(block.contents)
}

fn read(path: &Path) -> Result<Option<String>, PkiError> {
    match crate::secret::read_user_file(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(error(
            format!("cannot read `{}`: {e}", path.display()),
            "check its owner and mode (pgstrap writes keys 0600)",
        )),
    }
}

fn pending_write(path: &Path, text: &str, mode: u32, what: Generated) -> PendingWrite {
    PendingWrite {
        path: path.to_owned(),
        content: Secret::new(text.to_owned()),
        mode,
        what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(name: &str, ip: &str) -> Wanted {
        Wanted {
            name: name.into(),
            dns: vec![name.into(), "localhost".into()],
            ips: vec![ip.parse().unwrap(), "127.0.0.1".parse().unwrap()],
            client_only: false,
        }
    }

    const POLICY: Policy = Policy {
        days: 365,
        renew_before_days: 30,
    };

    /// Load with `generate` and write what it made up, as a command does once the hosts agree.
    fn stored(dir: &Path, wanted: &[Wanted], policy: Policy) -> Pki {
        let pki = load(dir, wanted, policy, true).unwrap().unwrap();
        crate::secret::persist(&pki.pending).unwrap();
        pki
    }

    #[test]
    fn a_ca_is_generated_once_and_certificates_are_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("inv.tls");
        assert!(load(&dir, &[want("n1", "10.0.0.1")], POLICY, false)
            .unwrap()
            .is_none());
        let first = load(&dir, &[want("n1", "10.0.0.1")], POLICY, true)
            .unwrap()
            .unwrap();
        // Nothing is written before the caller persists it.
        assert!(!dir.exists());
        let first = {
            crate::secret::persist(&first.pending).unwrap();
            first
        };
        assert_eq!(first.changes, vec![("n1".into(), "new".into())]);
        use std::os::unix::fs::PermissionsExt;
        for (file, mode) in [
            ("ca.key", 0o600),
            ("hosts/n1.key", 0o600),
            ("ca.crt", 0o644),
        ] {
            let meta = std::fs::metadata(dir.join(file)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
        }
        let again = stored(&dir, &[want("n1", "10.0.0.1")], POLICY);
        assert!(again.changes.is_empty());
        assert_eq!(again.ca, first.ca);
        assert_eq!(again.issued["n1"].cert, first.issued["n1"].cert);
    }

    #[test]
    fn a_changed_address_an_expiring_certificate_or_another_ca_means_a_new_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("inv.tls");
        stored(&dir, &[want("n1", "10.0.0.1")], POLICY);
        let moved = stored(&dir, &[want("n1", "10.0.0.2")], POLICY);
        assert_eq!(moved.changes[0].1, "names or addresses changed");
        // A renewal window longer than the certificate's life renews it.
        let long = Policy {
            days: 365,
            renew_before_days: 400,
        };
        let renewed = stored(&dir, &[want("n1", "10.0.0.2")], long);
        assert!(renewed.changes[0].1.starts_with("renewed: expires in 36"));
        // A CA replaced by the user: every certificate is issued again by the new one.
        std::fs::remove_file(dir.join("ca.crt")).unwrap();
        std::fs::remove_file(dir.join("ca.key")).unwrap();
        let other = stored(&dir, &[want("n1", "10.0.0.2")], POLICY);
        assert_eq!(other.changes[0].1, "not signed by this CA");
    }

    #[test]
    fn half_a_ca_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("inv.tls");
        stored(&dir, &[], POLICY);
        std::fs::remove_file(dir.join("ca.key")).unwrap();
        let e = load(&dir, &[], POLICY, true).err().unwrap();
        assert!(e.message.contains("only one of ca.crt and ca.key"));
    }
}
