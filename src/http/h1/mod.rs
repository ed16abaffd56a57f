//! relais's own HTTP/1.1 codec (`server.engine = "relais"`): what both the
//! client-facing server and the origin connections share.

pub(crate) mod decode;
pub(crate) mod encode;
pub(crate) mod head;
pub(crate) mod incoming;

pub(crate) use decode::{Decoded, Decoder, Framing};
