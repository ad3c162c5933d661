//! A quinn server and client on loopback, for the raw QUIC measurements (`--files`' bulk
//! throughput, `--floor`'s QUIC figure): a fresh self-signed certificate, TLS 1.3 with the
//! ring provider, the client's transport settings from the client library, quinn's defaults
//! on the server.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{anyhow, Result};

/// The server endpoint, the client endpoint, and the address to connect the client to (with
/// server name `localhost`). Both endpoints run on the runtime that is current.
pub fn quic_pair() -> Result<(quinn::Endpoint, quinn::Endpoint, SocketAddr)> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key.into())?;
    tls.alpn_protocols = vec![tidings_client::transport::ALPN_H3.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse()?)?;
    let addr = server.local_addr()?;
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    client.set_default_client_config(tidings_client::transport::quic_client_config()?);
    Ok((server, client, addr))
}

/// The first unidirectional stream of the first connection `server` accepts, with its
/// connection (which must be kept while the stream is read).
pub async fn accept_uni(
    server: &quinn::Endpoint,
) -> Result<(quinn::Connection, quinn::RecvStream)> {
    let conn = server
        .accept()
        .await
        .ok_or_else(|| anyhow!("no QUIC connection"))?
        .await?;
    let stream = conn.accept_uni().await?;
    Ok((conn, stream))
}
