//! The users' HTTP/1.1 client: one keep-alive connection per user, on hyper's connection API.
//!
//! A user carries one request at a time, so it needs exactly one connection and no pool. goose's
//! `user.request` (and reqwest beneath it) paid, on every request, for a connection pool, a URL,
//! middleware layers (redirects, decompression, retries) and goose's own per-request metrics, none
//! of which the driver reads: it times each request itself, in microseconds. Here a request is a
//! method, a fixed path, two headers and a body, written to a connection the user opened before the
//! schedule started, so no connection is opened while requests fall due (the first second at
//! 20,000/s used to stall on a burst of lazy connects).
//!
//! Plain HTTP only: the driver measures servers on the loopback or a private network.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::record::{Outcome, classify_error};

/// The path sign-ups are posted to.
pub const REGISTER: &str = "/register";

/// Where requests go: resolved once per run, shared by every user.
#[derive(Debug, Clone)]
pub struct Endpoint {
    addr: SocketAddr,
    host: HeaderValue,
    uri: Uri,
}

/// A target the driver cannot send to.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("`{0}` is not a URL the driver can send to: {1}")]
    Url(String, String),
    #[error("`{0}`: the driver speaks plain HTTP only (http://host:port)")]
    Scheme(String),
    #[error("could not resolve {0}: {1}")]
    Resolve(String, String),
}

impl Endpoint {
    /// Parses a base URL (`http://host[:port][/ignored]`; sign-ups go to `/register` on that host,
    /// as goose's `base_url.join("/register")` did) and resolves its host once.
    pub async fn resolve(target: &str) -> Result<Self, EndpointError> {
        let bad = |why: &str| EndpointError::Url(target.to_string(), why.to_string());
        let uri: Uri = target.parse().map_err(|e| bad(&format!("{e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(_) => return Err(EndpointError::Scheme(target.to_string())),
            None => return Err(bad("it has no scheme")),
        }
        let authority = uri.authority().ok_or_else(|| bad("it has no host"))?;
        let host = authority.host();
        let port = authority.port_u16().unwrap_or(80);
        // IPv6 literals arrive bracketed (`[::1]`); the resolver wants them bare.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addr = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| EndpointError::Resolve(authority.to_string(), e.to_string()))?
            .next()
            .ok_or_else(|| {
                EndpointError::Resolve(authority.to_string(), "no address".to_string())
            })?;
        let host = HeaderValue::from_str(authority.as_str()).map_err(|e| bad(&format!("{e}")))?;
        Ok(Self {
            addr,
            host,
            uri: Uri::from_static(REGISTER),
        })
    }
}

/// One user's connection: opened before the schedule starts, reopened when it breaks.
#[derive(Debug, Default)]
pub struct Connection {
    sender: Option<SendRequest<Full<Bytes>>>,
}

/// Why a connection could not be opened; the request that needed it records it.
#[derive(Debug)]
struct ConnectFailed(Outcome);

impl Connection {
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens the connection now (before the schedule starts) so the first request does not pay
    /// for it. A failure is not an error yet: the first request retries and records it.
    pub async fn open(&mut self, endpoint: &Endpoint) {
        if let Ok(sender) = connect(endpoint).await {
            self.sender = Some(sender);
        }
    }

    /// Posts `body` as JSON and reads the whole answer, within `timeout`. Never fails: a
    /// transport error or a timeout is the request's outcome, and the connection is dropped so the
    /// next request opens a fresh one.
    pub async fn post(&mut self, endpoint: &Endpoint, body: Bytes, timeout: Duration) -> Outcome {
        match tokio::time::timeout(timeout, self.exchange(endpoint, body)).await {
            Ok(Ok(status)) => Outcome::Status(status),
            Ok(Err(outcome)) => {
                self.sender = None;
                outcome
            }
            Err(_elapsed) => {
                // The answer may still come, and would be read as the next request's.
                self.sender = None;
                Outcome::Timeout
            }
        }
    }

    async fn exchange(&mut self, endpoint: &Endpoint, body: Bytes) -> Result<u16, Outcome> {
        // A connection the server closed while idle (keep-alive timeout, restart) is replaced
        // before sending, as a pool would: it is not this request's failure.
        let reusable = match &mut self.sender {
            Some(sender) => !sender.is_closed() && sender.ready().await.is_ok(),
            None => false,
        };
        if !reusable {
            self.sender = None;
            let sender = connect(endpoint).await.map_err(|ConnectFailed(o)| o)?;
            self.sender = Some(sender);
        }
        let Some(sender) = self.sender.as_mut() else {
            return Err(Outcome::ConnectionError(crate::record::Transport::Other));
        };
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = endpoint.uri.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, endpoint.host.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| classify_error(false, false, false, &e))?;
        let status = response.status().as_u16();
        // The answer is complete when its body has arrived.
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            frame.map_err(|e| classify_error(false, false, true, &e))?;
        }
        Ok(status)
    }
}

async fn connect(endpoint: &Endpoint) -> Result<SendRequest<Full<Bytes>>, ConnectFailed> {
    let failed = |e: &(dyn std::error::Error + 'static)| {
        ConnectFailed(classify_error(false, true, false, e))
    };
    let stream = TcpStream::connect(endpoint.addr)
        .await
        .map_err(|e| failed(&e))?;
    // Requests are small and each is written whole: Nagle would only hold them back.
    stream.set_nodelay(true).map_err(|e| failed(&e))?;
    let (sender, connection) = Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(&e))?;
    // The connection's own task reads and writes the socket; it ends when the sender is dropped
    // or the server closes the connection.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Transport;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server that answers each connection's first request with `answer`, then closes it;
    /// returns its URL and how many connections it accepted.
    async fn one_answer_per_connection(
        answer: &'static str,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    // Headers, then the body its Content-Length announces.
                    while !request.ends_with(b"}") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = socket.write_all(answer.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        (url, accepted)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_the_server_closed_is_replaced_without_failing_the_request() {
        let (url, accepted) =
            one_answer_per_connection("HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\nok").await;
        let endpoint = Endpoint::resolve(&url).await.unwrap();
        let mut connection = Connection::new();
        connection.open(&endpoint).await;
        let timeout = Duration::from_secs(5);
        for _ in 0..3 {
            let outcome = connection
                .post(&endpoint, Bytes::from_static(b"{}"), timeout)
                .await;
            assert_eq!(outcome, Outcome::Status(202));
            // Let the server's close reach the connection's task, as it would between two slots.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn keep_alive_sends_every_request_on_one_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            let mut answered = 0;
            while answered < 3 {
                let n = socket.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
                while seen.iter().filter(|&&b| b == b'}').count() > answered {
                    socket
                        .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .unwrap();
                    answered += 1;
                }
            }
            String::from_utf8(seen).unwrap()
        });
        let endpoint = Endpoint::resolve(&url).await.unwrap();
        let mut connection = Connection::new();
        for _ in 0..3 {
            let outcome = connection
                .post(&endpoint, Bytes::from_static(b"{}"), Duration::from_secs(5))
                .await;
            assert_eq!(outcome, Outcome::Status(503));
        }
        let requests = server.await.unwrap();
        assert_eq!(requests.matches("POST /register HTTP/1.1\r\n").count(), 3);
        assert!(
            requests
                .to_ascii_lowercase()
                .contains("content-type: application/json")
        );
        assert!(requests.to_ascii_lowercase().contains("content-length: 2"));
        assert!(
            requests
                .to_ascii_lowercase()
                .contains(&format!("host: {}", &url[7..]))
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn silence_is_a_timeout_and_nobody_listening_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        // Accepts, reads, never answers.
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            while let Ok(n) = socket.read(&mut buf).await {
                if n == 0 {
                    return;
                }
            }
        });
        let endpoint = Endpoint::resolve(&url).await.unwrap();
        let mut connection = Connection::new();
        let outcome = connection
            .post(
                &endpoint,
                Bytes::from_static(b"{}"),
                Duration::from_millis(100),
            )
            .await;
        assert_eq!(outcome, Outcome::Timeout);

        // A port nobody listens on: bound, then released.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let endpoint = Endpoint::resolve(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap();
        let outcome = Connection::new()
            .post(&endpoint, Bytes::from_static(b"{}"), Duration::from_secs(5))
            .await;
        assert_eq!(outcome, Outcome::ConnectionError(Transport::Refused));
    }

    #[tokio::test]
    async fn endpoints_are_plain_http_with_a_host() {
        let e = Endpoint::resolve("http://127.0.0.1:8080").await.unwrap();
        assert_eq!(e.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(e.host, "127.0.0.1:8080");
        assert_eq!(e.uri, "/register");
        // A base path is replaced, as goose's join("/register") did.
        let e = Endpoint::resolve("http://[::1]:9/base/").await.unwrap();
        assert_eq!(e.addr, "[::1]:9".parse().unwrap());
        assert!(matches!(
            Endpoint::resolve("https://127.0.0.1:1").await,
            Err(EndpointError::Scheme(_))
        ));
        assert!(matches!(
            Endpoint::resolve("127.0.0.1:1").await,
            Err(EndpointError::Url(..))
        ));
    }
}
