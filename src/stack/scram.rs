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
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|c| *c != b'=') {
        let value = ALPHABET.iter().position(|a| *a == c)? as u32;
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
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
}
