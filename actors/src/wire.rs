//! How fleet's types cross ractor_cluster: bincode inside `BytesConvertable`.
//!
//! ractor_cluster's `BytesConvertable::from_bytes` cannot fail, and a message that fails to
//! decode would otherwise be dropped silently. So every wire type says what it becomes when its
//! bytes do not decode (usually a variant that the receiver answers with a typed
//! [`FleetError::Protocol`](crate::FleetError) error), through the [`wire_type!`] macro.

use crate::FleetError;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Encodes with bincode's standard configuration. Encoding our own types cannot fail in
/// practice; if it does, the bytes are empty and the receiver's decode fails loudly.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    match bincode::serde::encode_to_vec(value, bincode::config::standard()) {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::error!(error = %e, ty = std::any::type_name::<T>(), "cannot encode a wire message");
            Vec::new()
        }
    }
}

/// The length of `value` encoded by [`encode`], counted without building the bytes.
pub fn encoded_len<T: Serialize>(value: &T) -> usize {
    let mut size = bincode::enc::write::SizeWriter::default();
    match bincode::serde::encode_into_writer(value, &mut size, bincode::config::standard()) {
        Ok(()) => size.bytes_written,
        // Cannot be encoded: it could not be sent either, so it counts as too large.
        Err(_) => usize::MAX,
    }
}

/// The bytes bincode's standard (varint) configuration uses for a length `n`.
fn varint_len(n: usize) -> usize {
    match n as u64 {
        0..=250 => 1,
        251..=0xFFFF => 3,
        0x1_0000..=0xFFFF_FFFF => 5,
        _ => 9,
    }
}

/// The encoded length of `payload`, counted from its length instead of walking its bytes
/// (the same number [`encoded_len`] gives, in constant time).
pub fn payload_len(payload: &crate::Payload) -> usize {
    encoded_len(&payload.codec)
        .saturating_add(varint_len(payload.bytes.len()))
        .saturating_add(payload.bytes.len())
}

/// [`check_size`] for a size already measured.
pub fn check_len(
    size: usize,
    limit: usize,
    what: impl FnOnce() -> String,
) -> Result<(), FleetError> {
    if size > limit {
        return Err(FleetError::PayloadTooLarge {
            what: what(),
            size: u64::try_from(size).unwrap_or(u64::MAX),
            limit: u64::try_from(limit).unwrap_or(u64::MAX),
        }
        .bounded());
    }
    Ok(())
}

/// The one size guard of fleet's messages: refuses `value` when its encoded length (exactly
/// what would cross ractor_cluster) is over `limit`, with [`FleetError::PayloadTooLarge`]
/// naming `what`. Every field counts (arguments, `rpc_meta`, method, path, headers, ...).
/// ractor_cluster drops a whole peer session on a frame over its 16 MiB limit, so every send
/// site on both sides checks its message with this before sending; `limit` is the node's
/// message limit (8 MiB by default, half the frame limit, which leaves room for the envelope).
pub fn check_size<T: Serialize>(
    value: &T,
    limit: usize,
    what: impl FnOnce() -> String,
) -> Result<(), FleetError> {
    check_len(encoded_len(value), limit, what)
}

/// Makes a reply fit under `limit` before it is sent: an error has its text
/// [bounded](FleetError::bounded); a result whose encoded size is over the limit becomes
/// [`FleetError::PayloadTooLarge`] naming `what` (the result of which call, on which worker).
pub fn fit_reply<T: Serialize>(
    reply: Result<T, FleetError>,
    limit: usize,
    what: impl FnOnce() -> String,
) -> Result<T, FleetError> {
    match reply {
        Err(e) => Err(e.bounded()),
        Ok(v) => check_size(&v, limit, what).map(|()| v),
    }
}

/// Decodes with bincode's standard configuration, rejecting trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (v, used) = bincode::serde::decode_from_slice::<T, _>(bytes, bincode::config::standard())
        .map_err(|e| format!("undecodable {}: {e}", std::any::type_name::<T>()))?;
    if used != bytes.len() {
        return Err(format!(
            "undecodable {}: {} trailing bytes",
            std::any::type_name::<T>(),
            bytes.len() - used
        ));
    }
    Ok(v)
}

/// Implements `ractor::BytesConvertable` for a serde type over bincode, with an expression that
/// builds the value to use when the bytes do not decode (`|err| ...`, `err: String`).
#[macro_export]
macro_rules! wire_type {
    ($ty:ty, |$err:ident| $on_err:expr) => {
        impl ::ractor::BytesConvertable for $ty {
            fn into_bytes(self) -> Vec<u8> {
                $crate::wire::encode(&self)
            }
            fn from_bytes(bytes: Vec<u8>) -> Self {
                match $crate::wire::decode::<$ty>(&bytes) {
                    Ok(v) => v,
                    Err($err) => $on_err,
                }
            }
        }
    };
}

/// A value that crosses ractor_cluster as bincode, or the reason its bytes did not decode.
///
/// Local sends move the value without serializing it; only remote sends pay for bincode.
#[derive(Clone, Debug, PartialEq)]
pub struct Wire<T>(pub Result<T, String>);

impl<T> Wire<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Wire(Ok(value))
    }

    /// The value, or a [`FleetError::Protocol`](crate::FleetError) naming what failed to decode.
    pub fn into_result(self) -> Result<T, crate::FleetError> {
        self.0
            .map_err(|detail| crate::FleetError::Protocol { detail })
    }
}

impl<T> ractor::BytesConvertable for Wire<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn into_bytes(self) -> Vec<u8> {
        match self.0 {
            Ok(v) => encode(&v),
            // A value that never decoded is re-sent as bytes that will not decode either.
            Err(_) => Vec::new(),
        }
    }
    fn from_bytes(bytes: Vec<u8>) -> Self {
        Wire(decode(&bytes))
    }
}

/// A reply that crosses the wire: the result or a typed error.
pub type WireReply<T> = Wire<Result<T, crate::FleetError>>;

impl<T> Wire<Result<T, crate::FleetError>> {
    /// Flattens a decoded reply into one result.
    pub fn flatten(self) -> Result<T, crate::FleetError> {
        self.into_result().and_then(|r| r)
    }
}
