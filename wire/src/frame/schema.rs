//! Schema markers, verified zero-copy decoding and the error frame.
//!
//! Decoding never trusts the payload: the file identifier is read with a
//! bounds check (the flatbuffers helper asserts instead), and the verifier
//! runs with limits proportional to the payload so that a buffer whose
//! offsets form a DAG ("billion laughs") costs at most a few passes over its
//! own length.

use flatbuffers::{FlatBufferBuilder, Follow, Verifiable, VerifierOptions, WIPOffset};

use crate::error::{RemoteError, WireError, bounded_text};
use crate::generated::{admin, client, error, hello, relay, verify};

/// A root table with its file identifier: one per protocol.
pub trait Schema {
    /// Name used in errors and logs (the protocol name for protocols).
    const NAME: &'static str;
    /// The schema's 4-byte `file_identifier`.
    const IDENTIFIER: &'static str;
    /// The generated root table type.
    type Root<'a>: Follow<'a, Inner = Self::Root<'a>> + Verifiable + 'a;
}

macro_rules! schema {
    ($(#[$doc:meta])* $marker:ident, $name:literal, $ident:expr, $root:ident :: $table:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $marker;
        impl Schema for $marker {
            const NAME: &'static str = $name;
            const IDENTIFIER: &'static str = $ident;
            type Root<'a> = $root::$table<'a>;
        }
    };
}

schema!(
    /// The hello, first frame each way (`THLO`).
    HelloSchema, "tern.hello", hello::HELLO_IDENTIFIER, hello::Hello
);
schema!(
    /// The generic error frame (`TERR`).
    ErrorSchema, "tern.error", error::ERROR_FRAME_IDENTIFIER, error::ErrorFrame
);
schema!(
    /// gossipd ↔ verifyd (`TVFY`).
    VerifySchema, "tern.verify", verify::VERIFY_FRAME_IDENTIFIER, verify::VerifyFrame
);
schema!(
    /// relayd ↔ gossipd (`TRLY`).
    RelaySchema, "tern.relay", relay::RELAY_FRAME_IDENTIFIER, relay::RelayFrame
);
schema!(
    /// nodectl ↔ admin sockets (`TADM`).
    AdminSchema, "tern.admin", admin::ADMIN_FRAME_IDENTIFIER, admin::AdminFrame
);
schema!(
    /// applications ↔ gossipd's API socket (`TCLI`).
    ClientSchema, "tern.client", client::CLIENT_FRAME_IDENTIFIER, client::ClientFrame
);

/// Smallest flatbuffer with a file identifier: root offset + identifier.
const MIN_IDENTIFIED: usize = 8;

/// The file identifier of a payload, if it is long enough to have one.
pub fn peek_identifier(payload: &[u8]) -> Option<[u8; 4]> {
    let id = payload.get(4..MIN_IDENTIFIED)?;
    let mut out = [0; 4];
    out.copy_from_slice(id);
    Some(out)
}

/// Verifier limits for a payload of `len` bytes.
///
/// Every table occupies at least 4 bytes, so a tree-shaped buffer never has
/// more than `len / 4` tables; the apparent size (bytes visited, counting
/// shared sub-objects each time) of an honest buffer is its length plus the
/// vtables it re-reads. Allowing a few times that keeps every builder output
/// valid while bounding the work a DAG-shaped buffer can cause. Our schemas
/// nest at most 4 tables deep; 16 leaves room for growth.
pub fn verifier_options(len: usize) -> VerifierOptions {
    VerifierOptions {
        max_depth: 16,
        max_tables: len / 4 + 16,
        max_apparent_size: len.saturating_mul(4).saturating_add(4096),
        ignore_missing_null_terminator: false,
    }
}

fn verify_as<'a, S: Schema>(payload: &'a [u8]) -> Result<S::Root<'a>, WireError> {
    let opts = verifier_options(payload.len());
    flatbuffers::root_with_opts::<S::Root<'a>>(&opts, payload).map_err(|source| {
        WireError::BadFlatbuffer {
            schema: S::NAME,
            source,
        }
    })
}

/// Verifies `payload` as schema `S` and returns its root table, borrowing the
/// payload (zero-copy).
///
/// An error frame (`TERR`) is verified and returned as
/// [`WireError::Remote`]; any other identifier is [`WireError::WrongSchema`].
pub fn decode<S: Schema>(payload: &[u8]) -> Result<S::Root<'_>, WireError> {
    let Some(found) = peek_identifier(payload) else {
        return Err(WireError::TooShort { len: payload.len() });
    };
    if found == S::IDENTIFIER.as_bytes() {
        return verify_as::<S>(payload);
    }
    if found == ErrorSchema::IDENTIFIER.as_bytes() {
        let e = verify_as::<ErrorSchema>(payload)?;
        return Err(WireError::Remote(RemoteError {
            code: e.code(),
            request_id: e.request_id(),
            fatal: e.fatal(),
            message: e.message().map(bounded_text).unwrap_or_default(),
        }));
    }
    let mut expected = [0; 4];
    expected.copy_from_slice(S::IDENTIFIER.as_bytes());
    Err(WireError::WrongSchema { expected, found })
}

/// Finishes `fbb` with `root` as a frame of schema `S` (sets its identifier).
/// The frame is then `fbb.finished_data()`.
pub fn finish<S: Schema>(fbb: &mut FlatBufferBuilder<'_>, root: WIPOffset<S::Root<'_>>) {
    fbb.finish(root, Some(S::IDENTIFIER));
}

/// Builds an error frame into `fbb` (after resetting it) and returns its bytes.
pub fn encode_error<'b>(
    fbb: &'b mut FlatBufferBuilder<'_>,
    code: error::ErrorCode,
    request_id: u64,
    fatal: bool,
    message: &str,
) -> &'b [u8] {
    fbb.reset();
    let message = fbb.create_string(message);
    let root = error::ErrorFrame::create(
        fbb,
        &error::ErrorFrameArgs {
            code,
            request_id,
            fatal,
            message: Some(message),
        },
    );
    error::finish_error_frame_buffer(fbb, root);
    fbb.finished_data()
}
