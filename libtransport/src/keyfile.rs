//! The node identity as a key file: PKCS#8 DER of the ML-DSA-65 private key,
//! readable by its owner only.
//!
//! * [`Identity::save_file`] writes a new key file atomically and never
//!   replaces an existing one: the key goes to a temporary file created with
//!   mode `0600` in the same directory, is synced, then hard-linked to the
//!   final name (which fails if that name exists), so a crash leaves either
//!   no key file or a complete one, and a second `identity new` cannot
//!   silently destroy a node's identity.
//! * [`Identity::load_file`] refuses a file that group or others may read
//!   or write (as ssh does for private keys), anything but a regular file,
//!   and files larger than [`MAX_KEY_FILE`], before reading it, so a wrong
//!   path costs no large allocation; a file that is not an ML-DSA-65 PKCS#8
//!   key is [`KeyFileError::Malformed`].
//! * [`Identity::load_or_generate`] is what a daemon does at start: load the
//!   key, or create one when the file does not exist yet.
//!
//! Every error names the path and keeps the underlying `io::Error` as its
//! source.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::identity::Identity;

/// Largest key file accepted. An ML-DSA-65 PKCS#8 document is about 4 KiB;
/// anything far beyond that is not a key.
pub const MAX_KEY_FILE: u64 = 64 << 10;

/// Why a key file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// No key file at the path.
    #[error(
        "{path}: no key file (create one with `nodectl identity new` or let the daemon generate it)"
    )]
    NotFound {
        /// The path.
        path: PathBuf,
    },
    /// Reading, writing, syncing or linking failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The key file exists; saving never replaces an identity.
    #[error(
        "{path}: a key file already exists; remove it first if the node's identity is really to change"
    )]
    AlreadyExists {
        /// The path.
        path: PathBuf,
    },
    /// Group or others have some access to the key file.
    #[error(
        "{path}: key file mode {mode:04o} lets others read or change the node's identity; run `chmod 600` on it"
    )]
    InsecurePermissions {
        /// The path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The path is a directory, device, socket or fifo.
    #[error("{path}: not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// Larger than [`MAX_KEY_FILE`].
    #[error("{path}: {len} bytes is too large for a key file (at most {max})")]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// Its size.
        len: u64,
        /// [`MAX_KEY_FILE`].
        max: u64,
    },
    /// Not an ML-DSA-65 PKCS#8 private key.
    #[error("{path}: not an ML-DSA-65 PKCS#8 private key")]
    Malformed {
        /// The path.
        path: PathBuf,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Identity {
    /// Loads the identity from a key file written by [`Identity::save_file`]
    /// (or any ML-DSA-65 PKCS#8 DER file with mode `0600` or stricter).
    pub fn load_file(path: impl AsRef<Path>) -> Result<Self, KeyFileError> {
        let path = path.as_ref();
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(KeyFileError::NotFound {
                    path: path.to_owned(),
                });
            }
            Err(e) => return Err(io_err(path)(e)),
        };
        // Checked on the open file, not the path, so a swap between the
        // check and the read cannot slip another file in.
        let meta = file.metadata().map_err(io_err(path))?;
        if !meta.file_type().is_file() {
            return Err(KeyFileError::NotAFile {
                path: path.to_owned(),
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::InsecurePermissions {
                path: path.to_owned(),
                mode,
            });
        }
        if meta.len() > MAX_KEY_FILE {
            return Err(KeyFileError::TooLarge {
                path: path.to_owned(),
                len: meta.len(),
                max: MAX_KEY_FILE,
            });
        }
        // `take` bounds the read even if the file grows after the check.
        let mut der = Vec::with_capacity(meta.len() as usize);
        file.take(MAX_KEY_FILE + 1)
            .read_to_end(&mut der)
            .map_err(io_err(path))?;
        if der.len() as u64 > MAX_KEY_FILE {
            return Err(KeyFileError::TooLarge {
                path: path.to_owned(),
                len: der.len() as u64,
                max: MAX_KEY_FILE,
            });
        }
        Identity::from_pkcs8(&der).map_err(|_| KeyFileError::Malformed {
            path: path.to_owned(),
        })
    }

    /// Writes this identity to a new key file with mode `0600`, atomically;
    /// refuses to replace an existing file ([`KeyFileError::AlreadyExists`]).
    pub fn save_file(&self, path: impl AsRef<Path>) -> Result<(), KeyFileError> {
        let path = path.as_ref();
        let der = self.to_pkcs8().map_err(|_| KeyFileError::Malformed {
            path: path.to_owned(),
        })?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .ok_or_else(|| KeyFileError::NotAFile {
                path: path.to_owned(),
            })?
            .to_string_lossy()
            .into_owned();
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let result = write_new(&tmp, &der).and_then(|()| {
            fs::hard_link(&tmp, path).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    KeyFileError::AlreadyExists {
                        path: path.to_owned(),
                    }
                } else {
                    io_err(path)(e)
                }
            })
        });
        // The temporary name goes whether or not the link worked; failing to
        // remove it leaves a 0600 file and changes nothing about the result.
        let _ = fs::remove_file(&tmp);
        result?;
        // Make the new directory entry durable too.
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&dir))
    }

    /// Loads the key file, or generates an identity and saves it there when
    /// no file exists. Returns the identity and whether it was created.
    pub fn load_or_generate(path: impl AsRef<Path>) -> Result<(Self, bool), KeyFileError> {
        let path = path.as_ref();
        match Identity::load_file(path) {
            Ok(id) => Ok((id, false)),
            Err(KeyFileError::NotFound { .. }) => {
                let id = Identity::generate().map_err(|_| KeyFileError::Malformed {
                    path: path.to_owned(),
                })?;
                match id.save_file(path) {
                    Ok(()) => Ok((id, true)),
                    // Another process created it first: use theirs, so two
                    // daemons starting together agree on one identity.
                    Err(KeyFileError::AlreadyExists { .. }) => {
                        Identity::load_file(path).map(|id| (id, false))
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }
}

fn write_new(tmp: &Path, der: &[u8]) -> Result<(), KeyFileError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(io_err(tmp))?;
    // The umask can only remove bits; set exactly 0600 regardless.
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io_err(tmp))?;
    f.write_all(der).map_err(io_err(tmp))?;
    f.sync_all().map_err(io_err(tmp))
}
