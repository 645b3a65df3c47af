//! MSRP (RFC 4975) for Large Message Mode (mapping-reference §2).
//!
//! As the SDP offerer the IWF is the active side: after the INVITE's 200 it connects to
//! the answer's `a=path`, sends the CPIM document as SEND chunks and reads back one
//! transaction response per chunk (and, if asked for, a success REPORT).
//!
//! * [`codec`]: frames, the exact wire renderer, the incremental parser and the chunker.
//!   No I/O; every protocol rule lives here and is tested with RFC 4975 examples,
//!   property tests and a fuzz target (`fuzz/`, target `msrp_parse`).
//! * [`client`]: the thin async layer that writes chunks, waits for responses with a
//!   timeout, handles what the peer sends unprompted and reports a [`SendOutcome`].
//! * [`receiver`]: a small receiving endpoint (TCP listener, reassembly, fault
//!   injection) for `iwf demo` and for tests that compare content byte for byte.
//!
//! The SDP offer/answer helpers are in [`crate::render::sdp`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use iwf::msrp::{Client, ClientConfig, OutgoingMessage, Receiver, ReceiverConfig, connect};
//! use std::time::Duration;
//!
//! let (peer, mut inbox) = Receiver::bind("127.0.0.1:0", ReceiverConfig::default()).await?;
//! let to = peer.uri("rA9xq");
//! let stream = connect(&to, None, Duration::from_secs(5)).await?;
//! let mut client = Client::new(stream, ClientConfig::default());
//! let msg = OutgoingMessage::new(to, "msrp://192.0.2.10:2855/s8Kf02jqx;tcp", "message/cpim");
//! let outcome = client.send(&msg, bytes::Bytes::from_static(b"hello")).await;
//! assert!(matches!(outcome, iwf::msrp::SendOutcome::Delivered { .. }));
//! assert_eq!(&inbox.recv().await.unwrap().content[..], b"hello");
//! # Ok(()) }
//! ```

pub(crate) mod client;
pub mod codec;
pub(crate) mod receiver;

pub use client::{
    Client, ClientConfig, ConnectError, MsrpStream, OutgoingMessage, SendOutcome, connect,
};
pub use codec::{Frame, MsrpUri, ParseError, Parser};
pub use receiver::{Fault, ReceivedMessage, Receiver, ReceiverConfig};
