//! SCRAM-SHA-256 verifiers (RFC 5802/7677), to tell whether a role's stored password already
//! matches a secret without changing it (and so without reporting a change on every run).

use sha2::{Digest, Sha256};

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password.as_bytes(), &first);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password.as_bytes(), &u);
        for (o, x) in out.iter_mut().zip(u.iter()) {
            *o ^= x;
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// A new verifier of `password` (random salt, 4096 iterations, PostgreSQL's default), in
/// pg_authid's format: what `ALTER ROLE … PASSWORD` is given, so that the password itself never
/// reaches the server, its logs or `pg_stat_statements`. Passwords are taken as they are (no
/// SASLprep: pgstrap's generated ones are ASCII, where SASLprep changes nothing).
pub fn verifier(password: &str) -> String {
    use base64::Engine;
    use rand::RngExt;
    const ITERATIONS: u32 = 4096;
    let mut salt = [0u8; 16];
    rand::rng().fill(&mut salt);
    let salted = salted_password(password, &salt, ITERATIONS);
    let client_key = hmac(&salted, b"Client Key");
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    let server_key = hmac(&salted, b"Server Key");
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    format!(
        "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
        b64(&salt),
        b64(&stored_key),
        b64(&server_key)
    )
}

/// Whether `verifier` (`SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`, as in pg_authid)
/// was made from `password`.
pub fn matches(verifier: &str, password: &str) -> bool {
    let Some(rest) = verifier.strip_prefix("SCRAM-SHA-256$") else {
        return false;
    };
    let Some((params, keys)) = rest.split_once('$') else {
        return false;
    };
    let Some((iterations, salt)) = params.split_once(':') else {
        return false;
    };
    let Some((stored, server)) = keys.split_once(':') else {
        return false;
    };
    let (Ok(iterations), Some(salt), Some(stored), Some(server)) = (
        iterations.parse::<u32>(),
        base64_decode(salt),
        base64_decode(stored),
        base64_decode(server),
    ) else {
        return false;
    };
    if iterations == 0 || iterations > 1_000_000 {
        return false;
    }
    let salted = salted_password(password, &salt, iterations);
    let client_key = hmac(&salted, b"Client Key");
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    let server_key = hmac(&salted, b"Server Key");
    stored_key.as_slice() == stored.as_slice() && server_key.as_slice() == server.as_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verifier of `secret` with this salt, made by an independent implementation (Python's
    /// hashlib.pbkdf2_hmac and hmac), in PostgreSQL's pg_authid format.
    const VERIFIER: &str = "SCRAM-SHA-256$4096:LfbY3ZwpSpO6Q4+ziwrTSw==$7zrDG6/Cnqq5tFL/RZuVjpHCfdpdQ/KXHqiqC2PTWWk=:PeLo2O1ciF5nmekRBUv1dMED5OYPq09IhNp3uTmlgWs=";

    #[test]
    fn a_verifier_matches_its_password_only() {
        assert!(matches(VERIFIER, "secret"));
        assert!(!matches(VERIFIER, "Secret"));
        assert!(!matches("md5abc", "secret"));
    }

    #[test]
    fn a_new_verifier_matches_its_password_and_is_salted() {
        let (one, two) = (verifier("Pw-1"), verifier("Pw-1"));
        assert!(matches(&one, "Pw-1") && matches(&two, "Pw-1"));
        assert!(!matches(&one, "Pw-2"));
        assert_ne!(one, two);
        assert!(one.starts_with("SCRAM-SHA-256$4096:"));
    }
}
