//! TLS, once: the rustls configurations iwf builds and the stream that is plain or TLS.
//!
//! * [`server_config_from_pem`]: the SMTP server's STARTTLS and the SIP answerer's TLS
//!   listener.
//! * [`client_config_from_ca_pem`]: a client trusting only the CA certificates of a file
//!   (`msrps:` in Large Message Mode).
//! * [`opportunistic_client_config`]: a client that encrypts without authenticating the
//!   server (STARTTLS to the smarthost, RFC 7435).
//! * [`MaybeTls`]: a TCP connection, plain or TLS (either side), upgradable in place
//!   (STARTTLS): the SMTP server's session, the smarthost client and the MSRP client.
//!
//! Every configuration is built with an explicit ring provider, so nothing depends on a
//! process-wide default provider having been installed. (The SIP back end's TLS is
//! rsipstack's own, configured from PEM in [`crate::sip::TlsClient`].)

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("bad PEM: {0}")]
    Pem(io::Error),
    #[error("no certificate found in the PEM")]
    NoCertificate,
    #[error("no private key found in the PEM")]
    NoPrivateKey,
    #[error("rustls refused the certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Why a CA file gives no client configuration.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("CA file: {0}")]
    Pem(io::Error),
    #[error("CA certificate: {0}")]
    Certificate(rustls::Error),
    #[error("no certificate in the CA file")]
    NoCertificate,
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration from a PEM certificate chain (leaf first) and a PEM private key
/// (PKCS#8, PKCS#1 or SEC1). No client authentication.
pub fn server_config_from_pem(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    let certs = rustls_pemfile::certs(&mut &cert_chain_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsConfigError::Pem)?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate);
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(TlsConfigError::Pem)?
        .ok_or(TlsConfigError::NoPrivateKey)?;
    let config = rustls::ServerConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// [`server_config_from_pem`] reading the two files.
pub fn server_config_from_pem_files(
    cert_chain: &Path,
    key: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsConfigError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    server_config_from_pem(&read(cert_chain)?, &read(key)?)
}

/// A client configuration trusting the CA certificates in `ca_pem` (and nothing else).
pub fn client_config_from_ca_pem(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, CaError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        roots
            .add(cert.map_err(CaError::Pem)?)
            .map_err(CaError::Certificate)?;
    }
    if roots.is_empty() {
        return Err(CaError::NoCertificate);
    }
    let config = rustls::ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Opportunistic TLS (RFC 7435 §1.3): a client configuration that encrypts without
/// authenticating the server (any certificate is taken; the handshake's signatures are
/// still checked).
pub fn opportunistic_client_config() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = ring();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Opportunistic(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Takes any server certificate; checks the handshake's signatures.
#[derive(Debug)]
struct Opportunistic(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Opportunistic {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TCP connection, plain or TLS (as client or server), upgradable in place.
#[derive(Debug)]
pub enum MaybeTls {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
    /// Only while an upgrade moves the TCP stream into the TLS stream (and after a failed
    /// handshake): reads and writes fail.
    Upgrading,
}

impl MaybeTls {
    /// Whether the connection is TLS now.
    pub fn is_tls(&self) -> bool {
        matches!(self, MaybeTls::Tls(_))
    }

    /// STARTTLS as the server: replaces the plain stream by a TLS stream after a handshake.
    pub async fn start_tls(&mut self, config: Arc<rustls::ServerConfig>) -> io::Result<()> {
        let tcp = self.take_plain()?;
        let tls = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await?;
        *self = MaybeTls::Tls(Box::new(tls.into()));
        Ok(())
    }

    /// STARTTLS as the client: replaces the plain stream by a TLS stream to `name` after a
    /// handshake.
    pub async fn connect_tls(
        &mut self,
        connector: &tokio_rustls::TlsConnector,
        name: ServerName<'static>,
    ) -> io::Result<()> {
        let tcp = self.take_plain()?;
        let tls = connector.connect(name, tcp).await?;
        *self = MaybeTls::Tls(Box::new(tls.into()));
        Ok(())
    }

    fn take_plain(&mut self) -> io::Result<TcpStream> {
        match std::mem::replace(self, MaybeTls::Upgrading) {
            MaybeTls::Plain(tcp) => Ok(tcp),
            other => {
                *self = other;
                Err(io::Error::other("STARTTLS on a stream that is not plain"))
            }
        }
    }
}

impl From<tokio_rustls::client::TlsStream<TcpStream>> for MaybeTls {
    fn from(s: tokio_rustls::client::TlsStream<TcpStream>) -> Self {
        MaybeTls::Tls(Box::new(s.into()))
    }
}

fn upgrading() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "stream is being upgraded")
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            MaybeTls::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            MaybeTls::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            MaybeTls::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            MaybeTls::Upgrading => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &[u8] = include_bytes!("smtp/testdata/cert.pem");
    const KEY: &[u8] = include_bytes!("smtp/testdata/key.pem");

    #[test]
    fn loads_the_test_certificate_and_refuses_garbage() {
        assert!(server_config_from_pem(CERT, KEY).is_ok());
        assert!(matches!(
            server_config_from_pem(b"", KEY),
            Err(TlsConfigError::NoCertificate)
        ));
        assert!(matches!(
            server_config_from_pem(CERT, b"nothing"),
            Err(TlsConfigError::NoPrivateKey)
        ));
        assert!(matches!(
            server_config_from_pem(CERT, CERT),
            Err(TlsConfigError::NoPrivateKey)
        ));
    }

    #[test]
    fn client_configs() {
        assert!(client_config_from_ca_pem(CERT).is_ok());
        assert_eq!(
            client_config_from_ca_pem(b"not a certificate")
                .err()
                .map(|e| e.to_string())
                .as_deref(),
            Some("no certificate in the CA file")
        );
        assert!(opportunistic_client_config().is_ok());
    }

    /// Both upgrades on one connection: the server's STARTTLS and the client's, then
    /// bytes each way; a second upgrade is refused and leaves the stream usable.
    #[tokio::test]
    async fn upgrades_in_place_both_sides() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut s = MaybeTls::Plain(tcp);
            s.start_tls(server_config_from_pem(CERT, KEY).unwrap())
                .await
                .unwrap();
            assert!(s.is_tls());
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
            s.flush().await.unwrap();
        });
        let mut c = MaybeTls::Plain(TcpStream::connect(addr).await.unwrap());
        let connector = tokio_rustls::TlsConnector::from(opportunistic_client_config().unwrap());
        let name = ServerName::try_from("localhost").unwrap();
        c.connect_tls(&connector, name.clone()).await.unwrap();
        assert!(c.connect_tls(&connector, name).await.is_err());
        assert!(c.is_tls(), "a refused second upgrade keeps the TLS stream");
        c.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        server.await.unwrap();
    }
}
