//! Node identity: an ML-DSA-65 key pair, `PeerId = SHA-256(public key)`, and
//! the identity proof that binds that key to one QUIC/TLS session.
//!
//! TLS runs with a throw-away certificate (see `tls`); identity is proven
//! above it (ADR 0030): right after the handshake each side opens its first
//! unidirectional stream and sends a proof ([`Identity::prove`]): its public key, its session
//! epoch and an ML-DSA-65 signature over
//!
//! ```text
//! "tern-identity-v1" || role || exporter(32, "EXPORTER-tern-identity-v1", role) || epoch
//! ```
//!
//! The exporter is unique to the TLS session, so a proof cannot be replayed
//! on another connection; the role byte (client/server) stops a peer from
//! reflecting our own proof back at us. This module is pure: no I/O, no clock.

use std::fmt;

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self as sig, KeyPair as _};
use aws_lc_rs::signature::{ML_DSA_65_SIGNING, PqdsaKeyPair};

/// Length of an ML-DSA-65 public key.
pub const PUBLIC_KEY_LEN: usize = 1952;
/// Length of an ML-DSA-65 signature.
pub const SIGNATURE_LEN: usize = 3309;
/// Length of the exporter secret the proof signs.
pub const EXPORTER_LEN: usize = 32;
/// TLS exporter label.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-tern-identity-v1";
const DOMAIN: &[u8] = b"tern-identity-v1";
const PROOF_VERSION: u8 = 1;
/// Encoded proof length: version, epoch, public key, signature.
pub const PROOF_LEN: usize = 1 + 8 + PUBLIC_KEY_LEN + SIGNATURE_LEN;

/// SHA-256 of a node's ML-DSA-65 public key.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct PeerId(pub [u8; 32]);

impl PeerId {
    /// The PeerId of a public key.
    #[must_use]
    pub fn from_public_key(key: &[u8]) -> Self {
        let d = digest::digest(&digest::SHA256, key);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Self(out)
    }

    /// First 4 bytes in hex, for logs.
    #[must_use]
    pub fn short(&self) -> String {
        hex(&self.0[..4])
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Result<Self, IdentityError> {
        let s = s.trim();
        if s.len() != 64 || !s.is_ascii() {
            return Err(IdentityError::BadPeerId);
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
                .map_err(|_| IdentityError::BadPeerId)?;
        }
        Ok(Self(out))
    }
}

fn hex(b: &[u8]) -> String {
    use fmt::Write as _;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.short())
    }
}

/// Identity errors.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentityError {
    /// Key generation or parsing failed.
    #[error("invalid or unusable ML-DSA-65 key")]
    BadKey,
    /// A PeerId string is not 64 hex characters.
    #[error("malformed PeerId")]
    BadPeerId,
    /// A proof has the wrong length or version.
    #[error("malformed identity proof")]
    MalformedProof,
    /// The proof's signature does not verify for this session.
    #[error("identity proof signature invalid for this session")]
    BadSignature,
    /// The peer's key does not hash to the PeerId we dialled.
    #[error("peer identity mismatch: expected {expected}, got {actual}")]
    Mismatch {
        /// The PeerId we dialled.
        expected: PeerId,
        /// The PeerId the peer proved.
        actual: PeerId,
    },
    /// The TLS session could not export keying material.
    #[error("TLS exporter unavailable")]
    Exporter,
}

/// A node's long-term ML-DSA-65 key pair.
pub struct Identity {
    key: PqdsaKeyPair,
    public: Vec<u8>,
    id: PeerId,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("peer_id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Generates a fresh key pair from the OS RNG.
    pub fn generate() -> Result<Self, IdentityError> {
        let key = PqdsaKeyPair::generate(&ML_DSA_65_SIGNING).map_err(|_| IdentityError::BadKey)?;
        Ok(Self::from_key(key))
    }

    /// Loads a PKCS#8 DER private key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, IdentityError> {
        let key =
            PqdsaKeyPair::from_pkcs8(&ML_DSA_65_SIGNING, der).map_err(|_| IdentityError::BadKey)?;
        Ok(Self::from_key(key))
    }

    /// Serialises the private key as PKCS#8 DER.
    pub fn to_pkcs8(&self) -> Result<Vec<u8>, IdentityError> {
        self.key
            .to_pkcs8v1()
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| IdentityError::BadKey)
    }

    fn from_key(key: PqdsaKeyPair) -> Self {
        let public = key.public_key().as_ref().to_vec();
        let id = PeerId::from_public_key(&public);
        Self { key, public, id }
    }

    /// This node's PeerId.
    #[must_use]
    pub fn peer_id(&self) -> PeerId {
        self.id
    }

    /// The raw public key.
    #[must_use]
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    /// Signs an arbitrary message (ML-DSA-65, pure mode, empty context).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, IdentityError> {
        let mut out = vec![0u8; SIGNATURE_LEN];
        let n = self
            .key
            .sign(msg, &mut out)
            .map_err(|_| IdentityError::BadKey)?;
        out.truncate(n);
        Ok(out)
    }

    /// Builds this side's proof for a session whose exporter is `exporter`.
    pub fn prove(
        &self,
        role: Role,
        exporter: &[u8; EXPORTER_LEN],
        epoch: u64,
    ) -> Result<Vec<u8>, IdentityError> {
        let msg = signed_message(role, exporter, epoch);
        let signature = self.sign(&msg)?;
        if signature.len() != SIGNATURE_LEN || self.public.len() != PUBLIC_KEY_LEN {
            return Err(IdentityError::BadKey);
        }
        let mut out = Vec::with_capacity(PROOF_LEN);
        out.push(PROOF_VERSION);
        out.extend_from_slice(&epoch.to_be_bytes());
        out.extend_from_slice(&self.public);
        out.extend_from_slice(&signature);
        Ok(out)
    }
}

/// Which end of the TLS session signed a proof.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The dialling side.
    Client,
    /// The accepting side.
    Server,
}

impl Role {
    fn byte(self) -> u8 {
        match self {
            Self::Client => b'c',
            Self::Server => b's',
        }
    }
    /// The exporter context for this role.
    #[must_use]
    pub fn context(self) -> &'static [u8] {
        match self {
            Self::Client => b"client",
            Self::Server => b"server",
        }
    }
}

fn signed_message(role: Role, exporter: &[u8; EXPORTER_LEN], epoch: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 1 + EXPORTER_LEN + 8);
    m.extend_from_slice(DOMAIN);
    m.push(role.byte());
    m.extend_from_slice(exporter);
    m.extend_from_slice(&epoch.to_be_bytes());
    m
}

/// A verified proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The proven PeerId.
    pub peer: PeerId,
    /// The peer's session epoch (changes when the peer restarts).
    pub epoch: u64,
}

/// Verifies a proof received from the peer whose role is `role`, for the
/// session with exporter `exporter` (computed with `role`'s context).
pub fn verify_proof(
    bytes: &[u8],
    role: Role,
    exporter: &[u8; EXPORTER_LEN],
) -> Result<Verified, IdentityError> {
    if bytes.len() != PROOF_LEN || bytes[0] != PROOF_VERSION {
        return Err(IdentityError::MalformedProof);
    }
    let mut e = [0u8; 8];
    e.copy_from_slice(&bytes[1..9]);
    let epoch = u64::from_be_bytes(e);
    let public = &bytes[9..9 + PUBLIC_KEY_LEN];
    let signature = &bytes[9 + PUBLIC_KEY_LEN..];
    let msg = signed_message(role, exporter, epoch);
    sig::UnparsedPublicKey::new(&sig::ML_DSA_65, public)
        .verify(&msg, signature)
        .map_err(|_| IdentityError::BadSignature)?;
    Ok(Verified {
        peer: PeerId::from_public_key(public),
        epoch,
    })
}

/// Checks an ML-DSA-65 `signature` by the holder of `public_key` over `msg`
/// (as made by [`Identity::sign`]). A key that does not parse counts as a bad
/// signature.
pub fn verify_signature(public_key: &[u8], msg: &[u8], signature: &[u8]) -> bool {
    sig::UnparsedPublicKey::new(&sig::ML_DSA_65, public_key)
        .verify(msg, signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_roundtrip_and_binding() {
        let id = Identity::generate().unwrap();
        let ex = [7u8; EXPORTER_LEN];
        let p = id.prove(Role::Client, &ex, 42).unwrap();
        let v = verify_proof(&p, Role::Client, &ex).unwrap();
        assert_eq!(
            v,
            Verified {
                peer: id.peer_id(),
                epoch: 42
            }
        );
        // Another session (exporter), a reflected role, or a flipped bit fail.
        assert_eq!(
            verify_proof(&p, Role::Client, &[8u8; EXPORTER_LEN]),
            Err(IdentityError::BadSignature)
        );
        assert_eq!(
            verify_proof(&p, Role::Server, &ex),
            Err(IdentityError::BadSignature)
        );
        let mut bad = p.clone();
        bad[5] ^= 1;
        assert_eq!(
            verify_proof(&bad, Role::Client, &ex),
            Err(IdentityError::BadSignature)
        );
        assert_eq!(
            verify_proof(&p[..10], Role::Client, &ex),
            Err(IdentityError::MalformedProof)
        );
    }

    #[test]
    fn peer_id_hex_roundtrip_and_pkcs8() {
        let id = Identity::generate().unwrap();
        let s = id.peer_id().to_string();
        assert_eq!(PeerId::from_hex(&s).unwrap(), id.peer_id());
        assert!(PeerId::from_hex("zz").is_err());
        let again = Identity::from_pkcs8(&id.to_pkcs8().unwrap()).unwrap();
        assert_eq!(again.peer_id(), id.peer_id());
    }
}
