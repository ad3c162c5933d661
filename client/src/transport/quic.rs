//! HTTP/3 over QUIC: `POST /<token>` on one request stream.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, StatusCode};

use tidings_protocol::address::RelayAddress;

use super::{
    authority, proof_path, server_name, tls_client_config, Binding, Link, RecordStream, Sink,
    Source,
};
use crate::error::{ClientError, Result};

/// ALPN of QUIC: HTTP/3.
pub const ALPN_H3: &[u8] = b"h3";

/// A client-only QUIC endpoint on an ephemeral port of the right address family.
pub fn client_endpoint(ipv6: bool) -> Result<quinn::Endpoint> {
    let bind = if ipv6 {
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)
    } else {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
    };
    let mut endpoint = quinn::Endpoint::client(bind).map_err(|_| ClientError::Unreachable)?;
    endpoint.set_default_client_config(quic_client_config()?);
    Ok(endpoint)
}

/// The QUIC client configuration: ALPN `h3`, TLS 1.3 with the ring provider, any server
/// certificate accepted (the Noise handshake authenticates the relay), keep-alives every 15 s.
pub fn quic_client_config() -> Result<quinn::ClientConfig> {
    let tls = tls_client_config(&[ALPN_H3])?;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|_| ClientError::Unreachable)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(15)));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Opens the HTTP/3 tunnel to the relay at `address`, reached at `target`, from `endpoint`:
/// QUIC handshake, HTTP/3 settings, `POST /<token>`, and the relay's `200`.
///
/// # Errors
/// [`ClientError::Unreachable`] when no QUIC server answers; [`ClientError::ProofRefused`]
/// when one answers as a website (another key, or a clock more than 5 minutes off).
pub async fn dial_quic(
    endpoint: &quinn::Endpoint,
    address: &RelayAddress,
    target: SocketAddr,
) -> Result<RecordStream> {
    let connection = endpoint
        .connect(target, &server_name(&address.host))
        .map_err(|_| ClientError::Unreachable)?
        .await
        .map_err(|_| ClientError::Unreachable)?;
    let (mut driver, mut requests) = h3::client::builder()
        .build::<_, _, Bytes>(h3_quinn::Connection::new(connection.clone()))
        .await
        .map_err(|_| ClientError::Unreachable)?;
    let driver = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let link = Link::Quic {
        endpoint: endpoint.clone(),
        connection: connection.clone(),
        _requests: Arc::new(requests.clone()),
        driver: Arc::new(driver.abort_handle()),
    };
    let request = Request::post(format!(
        "https://{}{}",
        authority(address),
        proof_path(address, Binding::Http3)
    ))
    .header(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    )
    .body(())
    .map_err(|_| ClientError::Unreachable)?;
    let opened = async {
        let stream = requests
            .send_request(request)
            .await
            .map_err(|_| ClientError::ConnectionLost)?;
        let (send, mut recv) = stream.split();
        let response = recv
            .recv_response()
            .await
            .map_err(|_| ClientError::ConnectionLost)?;
        if response.status() != StatusCode::OK {
            return Err(ClientError::ProofRefused);
        }
        Ok((send, recv))
    };
    match opened.await {
        Ok((send, recv)) => Ok(RecordStream::new(
            Binding::Http3,
            Sink::Http3(Box::new(send)),
            Source::Http3(recv),
            link,
        )),
        Err(e) => {
            connection.close(super::H3_NO_ERROR.into(), b"");
            driver_abort(&link);
            Err(e)
        }
    }
}

fn driver_abort(link: &Link) {
    if let Link::Quic { driver, .. } = link {
        driver.abort();
    }
}
