//! mTLS on loopback with the stock WebPKI verifiers plus role checks: a gateway client with a
//! valid certificate gets through; a revoked certificate, no certificate and a certificate of
//! another role are refused in the handshake; the client refuses a server of the wrong role.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::{TestCa, request};
use mps_pki::{Role, TrustStore, tls};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Outcome {
    /// What the client read back (Ok only if the server answered).
    client: Result<Vec<u8>, String>,
    /// Whether the server's handshake succeeded.
    server: Result<(), String>,
}

/// One connection: the server accepts with `server_config` and answers "pong" to "ping"; the
/// client connects with `client_identity`, expecting a server of `server_role`.
async fn attempt(
    server_config: Arc<rustls::ServerConfig>,
    trust: &TrustStore,
    server_role: Role,
    client_identity: Option<(PathBuf, PathBuf)>,
) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        match acceptor.accept(stream).await {
            Ok(mut tls) => {
                let mut buffer = [0u8; 5];
                if tls.read_exact(&mut buffer).await.is_ok() && &buffer == b"ping\n" {
                    tls.write_all(b"pong\n").await.unwrap();
                    tls.shutdown().await.unwrap();
                }
                Ok(())
            }
            Err(error) => Err(format!("{error:?}")),
        }
    });

    let verifier = tls::server_cert_verifier(trust, server_role).unwrap();
    let identity = client_identity.as_ref().map(|(chain, key)| (chain.as_path(), key.as_path()));
    let client_config = tls::client_config(verifier, identity).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let client = async {
        let tcp = TcpStream::connect(address).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.map_err(|e| format!("{e:?}"))?;
        tls.write_all(b"ping\n").await.map_err(|e| format!("{e:?}"))?;
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer).await.map_err(|e| format!("{e:?}"))?;
        Ok(answer)
    }
    .await;
    let server = server.await.unwrap();
    Outcome { client, server }
}

#[tokio::test]
async fn only_a_valid_unrevoked_gateway_client_gets_through() {
    let mut ca = TestCa::new();
    let server_leaf = ca.issue("authz", &request(Role::AuthzServer));
    let good = ca.issue("gateway-good", &request(Role::GatewayClient));
    let revoked = ca.issue("gateway-revoked", &request(Role::GatewayClient));
    let merchant = ca.issue("merchant", &request(Role::Merchant));
    ca.revoke(&revoked);
    let trust = ca.trust_store();

    let client_verifier = tls::client_cert_verifier(&trust, Role::GatewayClient).unwrap();
    let server_config =
        Arc::new(tls::server_config(&server_leaf.chain_file, &server_leaf.key_file, client_verifier).unwrap());

    let ok = attempt(server_config.clone(), &trust, Role::AuthzServer, Some((good.chain_file, good.key_file))).await;
    assert_eq!(ok.server, Ok(()));
    assert_eq!(ok.client.unwrap(), b"pong\n");

    let refused =
        attempt(server_config.clone(), &trust, Role::AuthzServer, Some((revoked.chain_file, revoked.key_file))).await;
    let server_error = refused.server.unwrap_err();
    assert!(server_error.contains("Revoked"), "{server_error}");
    assert!(refused.client.is_err(), "{:?}", refused.client);

    let anonymous = attempt(server_config.clone(), &trust, Role::AuthzServer, None).await;
    let server_error = anonymous.server.unwrap_err();
    assert!(server_error.contains("NoCertificatesPresented"), "{server_error}");
    assert!(anonymous.client.is_err(), "{:?}", anonymous.client);

    let wrong_role =
        attempt(server_config, &trust, Role::AuthzServer, Some((merchant.chain_file, merchant.key_file))).await;
    let server_error = wrong_role.server.unwrap_err();
    assert!(server_error.contains("InvalidPurpose"), "{server_error}");
    assert!(wrong_role.client.is_err(), "{:?}", wrong_role.client);
}

#[tokio::test]
async fn the_client_refuses_a_server_of_another_role() {
    let mut ca = TestCa::new();
    let gateway_server = ca.issue("gateway-server", &request(Role::GatewayServer));
    let client = ca.issue("gateway-client", &request(Role::GatewayClient));
    let trust = ca.trust_store();
    let client_verifier = tls::client_cert_verifier(&trust, Role::GatewayClient).unwrap();
    let server_config =
        Arc::new(tls::server_config(&gateway_server.chain_file, &gateway_server.key_file, client_verifier).unwrap());

    // Expecting the authorization server, reaching the gateway's merchant-facing server.
    let outcome = attempt(
        server_config.clone(),
        &trust,
        Role::AuthzServer,
        Some((client.chain_file.clone(), client.key_file.clone())),
    )
    .await;
    let client_error = outcome.client.unwrap_err();
    assert!(client_error.contains("InvalidPurpose"), "{client_error}");
    assert!(outcome.server.is_err());

    // Expecting the gateway server, it works.
    let outcome = attempt(server_config, &trust, Role::GatewayServer, Some((client.chain_file, client.key_file))).await;
    assert_eq!(outcome.client.unwrap(), b"pong\n");
}
