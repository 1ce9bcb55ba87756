//! Serialized arguments and results of engine calls.
//!
//! A [`Payload`] is bytes plus the codec that made them: bincode on the actor path (compact,
//! fast), JSON on the HTTP path (curl-friendly, any language). An engine decodes with
//! [`Payload::decode`] and its reply is encoded with the same codec as the request, so one
//! engine serves both paths unchanged.

use crate::error::FleetError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Which serializer produced a payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Codec {
    /// bincode 2 (standard config) over serde.
    Bincode,
    /// JSON.
    Json,
}

/// Serialized bytes and their codec.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// The codec of `bytes`.
    pub codec: Codec,
    /// The serialized value.
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({:?}, {} bytes)", self.codec, self.bytes.len())
    }
}

impl Payload {
    /// The empty bincode payload (unit).
    pub fn unit() -> Self {
        Payload::encode(Codec::Bincode, &()).unwrap_or(Payload {
            codec: Codec::Bincode,
            bytes: Vec::new(),
        })
    }

    /// Serializes `value` with `codec`.
    pub fn encode<T: Serialize + ?Sized>(codec: Codec, value: &T) -> Result<Self, FleetError> {
        let bytes = match codec {
            Codec::Bincode => bincode::serde::encode_to_vec(value, bincode::config::standard())
                .map_err(|e| FleetError::bad_request("encoding a bincode payload", e))?,
            Codec::Json => serde_json::to_vec(value)
                .map_err(|e| FleetError::bad_request("encoding a JSON payload", e))?,
        };
        Ok(Payload { codec, bytes })
    }

    /// Serializes `value` with bincode.
    pub fn bincode<T: Serialize + ?Sized>(value: &T) -> Result<Self, FleetError> {
        Payload::encode(Codec::Bincode, value)
    }

    /// Wraps JSON text that is already serialized.
    pub fn json_bytes(bytes: Vec<u8>) -> Self {
        Payload {
            codec: Codec::Json,
            bytes,
        }
    }

    /// Deserializes into `T`; a mismatch is a [`FleetError::BadRequest`] naming the type.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, FleetError> {
        let what = || {
            format!(
                "decoding a {:?} payload as {}",
                self.codec,
                std::any::type_name::<T>()
            )
        };
        match self.codec {
            Codec::Bincode => {
                let (v, used) = bincode::serde::decode_from_slice::<T, _>(
                    &self.bytes,
                    bincode::config::standard(),
                )
                .map_err(|e| FleetError::bad_request(what(), e))?;
                if used != self.bytes.len() {
                    return Err(FleetError::bad_request(
                        what(),
                        format!("{} trailing bytes", self.bytes.len() - used),
                    ));
                }
                Ok(v)
            }
            Codec::Json => {
                serde_json::from_slice(&self.bytes).map_err(|e| FleetError::bad_request(what(), e))
            }
        }
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_of_the_wrong_type_is_a_bad_request_naming_the_type() {
        let p = Payload::bincode(&"hello").unwrap();
        let err = p.decode::<(u64, u64, u64)>().unwrap_err();
        assert!(matches!(err, FleetError::BadRequest { .. }), "{err:?}");
        assert!(err.to_string().contains("u64"), "{err}");
    }

    #[test]
    fn both_codecs_round_trip() {
        for codec in [Codec::Bincode, Codec::Json] {
            let p = Payload::encode(codec, &vec![1u32, 2, 3]).unwrap();
            assert_eq!(p.decode::<Vec<u32>>().unwrap(), vec![1, 2, 3]);
        }
    }
}
