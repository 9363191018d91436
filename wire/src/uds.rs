//! Unix-socket helpers shared by the daemons and `nodectl`.
//!
//! * **Paths** — [`socket_path`] picks, in order: an explicit path (a CLI
//!   flag), the environment variable the daemon documents (e.g.
//!   `TERN_VERIFYD_SOCKET`), or `<runtime dir>/<name>.sock` where the runtime
//!   dir is `$TERN_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/tern`, else
//!   `/run/tern`. Tests point `TERN_RUNTIME_DIR` or the flag at a temporary
//!   directory, so they need no root.
//! * **Binding** — [`bind`] creates the directory (0750), removes a stale
//!   socket left by a dead process ([`remove_stale`]: only if the path is a
//!   socket and nobody accepts a connection on it), binds under a temporary
//!   name, sets mode 0660 and renames it into place, so the socket is never
//!   reachable with a wider mode than 0660.
//! * **Peers** — [`peer_credentials`] reads `SO_PEERCRED`; a [`PeerPolicy`]
//!   accepts our own effective uid plus an explicit allow list;
//!   [`accept_checked`] does both and tells a rejected peer why with an error
//!   frame before closing.
//!
//! Blocking functions take `std::os::unix::net` types; with feature `tokio`,
//! [`bind_tokio`] and [`accept_checked_tokio`] are the async equivalents.

use std::ffi::OsString;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use crate::error::WireError;
use crate::frame::{self, FrameWriter, MIN_MAX_FRAME};
use crate::generated::error::ErrorCode;

/// Mode of every bound socket: owner and group may connect.
pub const SOCKET_MODE: u32 = 0o660;

/// Mode of a runtime directory created by [`bind`].
pub const DIR_MODE: u32 = 0o750;

/// Environment variable overriding the runtime directory for all sockets.
pub const RUNTIME_DIR_ENV: &str = "TERN_RUNTIME_DIR";

/// Fallback runtime directory when neither env variable is set.
pub const SYSTEM_RUNTIME_DIR: &str = "/run/tern";

/// The directory sockets live in, from the given environment lookup.
pub fn runtime_dir_from(env: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    if let Some(dir) = env(RUNTIME_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(xdg) = env("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(xdg).join("tern");
    }
    PathBuf::from(SYSTEM_RUNTIME_DIR)
}

/// [`socket_path`] with an injected environment lookup (for tests).
pub fn socket_path_from(
    flag: Option<&Path>,
    env_var: &str,
    name: &str,
    env: impl Fn(&str) -> Option<OsString>,
) -> PathBuf {
    if let Some(p) = flag {
        return p.to_owned();
    }
    if let Some(p) = env(env_var).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    runtime_dir_from(env).join(format!("{name}.sock"))
}

/// The socket path for `name` (e.g. `"verifyd"`): `flag`, else `$env_var`,
/// else `<runtime dir>/<name>.sock`.
pub fn socket_path(flag: Option<&Path>, env_var: &str, name: &str) -> PathBuf {
    socket_path_from(flag, env_var, name, |k| std::env::var_os(k))
}

/// What [`remove_stale`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleSocket {
    /// Nothing was at the path.
    Absent,
    /// A socket nobody listens on was removed.
    Removed,
}

/// Removes a socket left behind by a dead process. Refuses (with
/// [`WireError::SocketInUse`]) when the path is not a socket or a listener
/// accepts connections on it.
pub fn remove_stale(path: &Path) -> Result<StaleSocket, WireError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(StaleSocket::Absent),
        Err(e) => return Err(e.into()),
    };
    if !meta.file_type().is_socket() {
        return Err(WireError::SocketInUse {
            path: path.to_owned(),
            why: "the path exists and is not a socket",
        });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(WireError::SocketInUse {
            path: path.to_owned(),
            why: "a live process accepts connections on it",
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            match std::fs::remove_file(path) {
                Ok(()) => Ok(StaleSocket::Removed),
                // Someone else cleaned it up first: same outcome.
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(StaleSocket::Removed),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Binds a listener at `path` with mode 0660, creating its directory and
/// removing a stale socket first.
pub fn bind(path: &Path) -> Result<UnixListener, WireError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)?;
    }
    remove_stale(path)?;
    // Bind under a private name, fix the mode, then rename into place: the
    // public path never exists with the umask's (possibly wider) mode.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(SOCKET_MODE))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    tracing::debug!(path = %path.display(), "unix socket bound");
    Ok(listener)
}

/// [`bind`] for tokio.
#[cfg(feature = "tokio")]
pub fn bind_tokio(path: &Path) -> Result<tokio::net::UnixListener, WireError> {
    let std = bind(path)?;
    std.set_nonblocking(true)?;
    Ok(tokio::net::UnixListener::from_std(std)?)
}

/// Credentials of the process at the other end of a Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Process id when the connection was made.
    pub pid: i32,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

/// Reads `SO_PEERCRED` of a connected Unix socket.
pub fn peer_credentials(sock: &impl AsFd) -> Result<PeerCred, WireError> {
    let c = getsockopt(sock, PeerCredentials).map_err(io::Error::from)?;
    Ok(PeerCred {
        pid: c.pid(),
        uid: c.uid(),
        gid: c.gid(),
    })
}

/// Which peers may talk to a socket: our own effective uid, plus a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPolicy {
    allowed_uids: Vec<u32>,
}

impl PeerPolicy {
    /// Only processes running as our effective uid.
    pub fn same_user() -> Self {
        Self {
            allowed_uids: vec![nix::unistd::geteuid().as_raw()],
        }
    }

    /// Exactly these uids (our own is not implied).
    pub fn uids(uids: &[u32]) -> Self {
        Self {
            allowed_uids: uids.to_vec(),
        }
    }

    /// Also allows `uid`.
    #[must_use]
    pub fn allow_uid(mut self, uid: u32) -> Self {
        if !self.allowed_uids.contains(&uid) {
            self.allowed_uids.push(uid);
        }
        self
    }

    /// Accepts or rejects `cred`.
    pub fn check(&self, cred: &PeerCred) -> Result<(), WireError> {
        if self.allowed_uids.contains(&cred.uid) {
            Ok(())
        } else {
            Err(WireError::PeerRejected {
                uid: cred.uid,
                pid: cred.pid,
            })
        }
    }
}

fn rejection_frame(err: &WireError) -> Vec<u8> {
    let mut fbb = flatbuffers::FlatBufferBuilder::with_capacity(256);
    frame::encode_error(
        &mut fbb,
        ErrorCode::PermissionDenied,
        0,
        true,
        &err.to_string(),
    )
    .to_vec()
}

/// Accepts one connection and checks its credentials. A rejected peer gets
/// a fatal `PermissionDenied` error frame, is disconnected, and the error
/// is returned (the listener stays usable).
pub fn accept_checked(
    listener: &UnixListener,
    policy: &PeerPolicy,
) -> Result<(UnixStream, PeerCred), WireError> {
    let (stream, _) = listener.accept()?;
    let cred = peer_credentials(&stream)?;
    if let Err(err) = policy.check(&cred) {
        tracing::warn!(uid = cred.uid, pid = cred.pid, "unix peer rejected");
        // Best effort: the peer may not read it.
        let _ = FrameWriter::new(&stream, MIN_MAX_FRAME).write_frame(&rejection_frame(&err));
        return Err(err);
    }
    Ok((stream, cred))
}

/// [`accept_checked`] for tokio.
#[cfg(feature = "tokio")]
pub async fn accept_checked_tokio(
    listener: &tokio::net::UnixListener,
    policy: &PeerPolicy,
) -> Result<(tokio::net::UnixStream, PeerCred), WireError> {
    use tokio::io::AsyncWriteExt;

    let (mut stream, _) = listener.accept().await?;
    let cred = peer_credentials(&stream)?;
    if let Err(err) = policy.check(&cred) {
        tracing::warn!(uid = cred.uid, pid = cred.pid, "unix peer rejected");
        let payload = rejection_frame(&err);
        let mut bytes = Vec::with_capacity(payload.len() + frame::PREFIX_LEN);
        bytes.extend_from_slice(&frame::prefix_for(&payload, MIN_MAX_FRAME)?);
        bytes.extend_from_slice(&payload);
        let _ = stream.write_all(&bytes).await;
        return Err(err);
    }
    Ok((stream, cred))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, OsString)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn path_precedence_flag_env_runtime_dir() {
        let env = env_of(&[
            ("TERN_VERIFYD_SOCKET", "/e/v.sock"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
        ]);
        let flag = Path::new("/f/v.sock");
        assert_eq!(
            socket_path_from(Some(flag), "TERN_VERIFYD_SOCKET", "verifyd", &env),
            flag
        );
        assert_eq!(
            socket_path_from(None, "TERN_VERIFYD_SOCKET", "verifyd", &env),
            Path::new("/e/v.sock")
        );
        assert_eq!(
            socket_path_from(None, "TERN_OTHER", "verifyd", &env),
            Path::new("/run/user/1000/tern/verifyd.sock")
        );
        let env = env_of(&[("TERN_RUNTIME_DIR", "/tmp/t"), ("XDG_RUNTIME_DIR", "/x")]);
        assert_eq!(
            socket_path_from(None, "TERN_OTHER", "gossipd", &env),
            Path::new("/tmp/t/gossipd.sock")
        );
        assert_eq!(
            socket_path_from(None, "TERN_OTHER", "relayd", env_of(&[])),
            Path::new("/run/tern/relayd.sock")
        );
    }

    #[test]
    fn policy_allows_listed_uids_only() {
        let p = PeerPolicy::uids(&[1000]).allow_uid(1001);
        let cred = |uid| PeerCred {
            pid: 1,
            uid,
            gid: 0,
        };
        assert!(p.check(&cred(1000)).is_ok());
        assert!(p.check(&cred(1001)).is_ok());
        assert!(matches!(
            p.check(&cred(0)),
            Err(WireError::PeerRejected { uid: 0, pid: 1 })
        ));
    }
}
