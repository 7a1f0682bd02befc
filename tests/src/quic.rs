//! Real QUIC servers and clients (quinn) for the connection-ID routing
//! tests. A server puts its QUIC server ID in every connection ID it hands
//! out, as the IETF QUIC-LB draft's plaintext algorithm does: the first
//! octet (config rotation 0, then the length less one), the server ID, then
//! random bytes. On each bidirectional stream it answers its name.
//!
//! The certificate and key (`tests/data/quic`) are a self-signed pair made
//! for these tests only, for the name [`SERVER_NAME`].

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use quinn::{
    rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    ConnectionId, ConnectionIdGenerator,
};

use crate::netns::Netns;

/// The name in the test certificate.
pub const SERVER_NAME: &str = "veer-quic-test";
const CERT: &[u8] = include_bytes!("../data/quic/cert.der");
const KEY: &[u8] = include_bytes!("../data/quic/key.der");
/// Length of the connection IDs the servers hand out.
const CID_LEN: usize = 8;

/// Connection IDs carrying one server ID.
struct ServerIdCids(u16);

impl ConnectionIdGenerator for ServerIdCids {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut cid = [0u8; CID_LEN];
        // Config rotation 0 (top three bits), then the length less one.
        cid[0] = (CID_LEN - 1) as u8;
        cid[1..3].copy_from_slice(&self.0.to_be_bytes());
        for b in &mut cid[3..] {
            *b = fastrand::u8(..);
        }
        ConnectionId::new(&cid)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// Starts a QUIC server in `ns` on `listen`, handing out connection IDs
/// with `server_id`, answering `name` on every stream. Runs until the
/// namespace goes.
pub fn serve(ns: &Netns, listen: SocketAddr, name: &str, server_id: u16) -> Result<()> {
    let name = name.to_string();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    ns.spawn(move || -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async move {
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(KEY.to_vec()));
            let server = quinn::ServerConfig::with_single_cert(vec![CertificateDer::from(CERT.to_vec())], key)?;
            let mut endpoint = quinn::EndpointConfig::default();
            endpoint.cid_generator(move || Box::new(ServerIdCids(server_id)));
            let socket = std::net::UdpSocket::bind(listen)?;
            let ep = quinn::Endpoint::new(endpoint, Some(server), socket, Arc::new(quinn::TokioRuntime))?;
            ready_tx.send(()).ok();
            while let Some(incoming) = ep.accept().await {
                let name = name.clone();
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        let _ = recv.read_to_end(64).await;
                        let _ = send.write_all(name.as_bytes()).await;
                        let _ = send.finish();
                    }
                });
            }
            Ok(())
        })
    })?;
    ready_rx.recv_timeout(Duration::from_secs(10)).context("the QUIC server did not start")?;
    Ok(())
}

/// A client connection's answers: the server's name before and after the
/// client moved to a new source port, and the two ports.
#[derive(Debug)]
pub struct Migrated {
    /// The name on the first stream.
    pub before: String,
    /// The name on a stream after the move.
    pub after: String,
    /// The client's port before and after.
    pub ports: (u16, u16),
}

/// Connects to `vip` (from the calling thread's namespace), asks the
/// server's name, moves to a new UDP socket (a new source port, as a NAT
/// rebinding does), and asks again on the same connection.
pub fn migrate(vip: SocketAddr) -> Result<Migrated> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let mut roots = quinn::rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(CERT.to_vec()))?;
        let mut client = quinn::ClientConfig::with_root_certificates(Arc::new(roots))?;
        let mut transport = quinn::TransportConfig::default();
        transport.max_idle_timeout(Some(Duration::from_secs(5).try_into()?));
        client.transport_config(Arc::new(transport));
        let mut ep = quinn::Endpoint::client("0.0.0.0:0".parse()?)?;
        ep.set_default_client_config(client);
        let conn = tokio::time::timeout(Duration::from_secs(5), ep.connect(vip, SERVER_NAME)?).await??;
        let ask = |conn: quinn::Connection| async move {
            let (mut send, mut recv) = conn.open_bi().await?;
            send.write_all(b"name").await?;
            send.finish()?;
            let name = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(256)).await??;
            anyhow::Ok(String::from_utf8_lossy(&name).into_owned())
        };
        let before = ask(conn.clone()).await?;
        let first = ep.local_addr()?.port();
        ep.rebind(std::net::UdpSocket::bind("0.0.0.0:0")?)?;
        let second = ep.local_addr()?.port();
        let after = ask(conn.clone()).await.context("after the move")?;
        conn.close(0u32.into(), b"done");
        ep.wait_idle().await;
        Ok(Migrated { before, after, ports: (first, second) })
    })
}
