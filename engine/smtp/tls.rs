//! STARTTLS support, from [`crate::tls`]: the server configuration from PEM, and the stream
//! a session reads and writes, plain before STARTTLS and TLS after.

pub use crate::tls::{
    TlsConfigError, server_config_from_pem as tls_config_from_pem,
    server_config_from_pem_files as tls_config_from_pem_files,
};

/// The connection of one session.
pub(crate) type Stream = crate::tls::MaybeTls;
