//! The users' HTTP/1.1 client: one keep-alive connection per user, one request at a time.
//!
//! A user carries one request at a time, so it needs exactly one connection and no pool. goose's
//! `user.request` (and reqwest beneath it) paid, on every request, for a connection pool, a URL,
//! middleware layers (redirects, decompression, retries) and goose's own per-request metrics, none
//! of which the driver reads: it times each request itself, in microseconds. hyper's connection
//! API, tried next, still cost a second task per connection and a channel between the two per
//! request. Here a request is one `write` of bytes prepared in a reused buffer (a fixed head, the
//! length, the body) on a connection the user opened before the schedule started, and its answer
//! is read by the user itself and parsed with `httparse`, the parser hyper uses: no task, channel
//! or allocation per request. No connection is opened while requests fall due (the first second
//! at 20,000/s used to stall on a burst of lazy connects). The sockets are read through the load
//! thread's [`Inbox`]: answers are collected at the dispatcher's wake-ups and timed by the kernel's
//! receive timestamps, so a request costs no thread wake-up of its own.
//!
//! What it does not do: TLS, redirects, compression, pipelining. It reads answers framed by
//! `Content-Length`, chunked, or by the connection's close, skips `1xx` interim answers, and
//! honours `Connection: close`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::inbox::{Inbox, Socket};
use crate::record::{Outcome, Transport, classify_error};

/// The path sign-ups are posted to.
pub const REGISTER: &str = "/register";

/// Headers an answer may carry that the client looks at, at most; more is a malformed answer.
const MAX_HEADERS: usize = 64;

/// An answer's head larger than this is refused (no server of ours sends one).
const MAX_HEAD: usize = 64 * 1024;

/// Where requests go: resolved once per run, shared by every user.
#[derive(Debug, Clone)]
pub struct Endpoint {
    addr: SocketAddr,
    /// Every request's head up to its `Content-Length` value.
    head: Vec<u8>,
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
        let uri: http::Uri = target.parse().map_err(|e| bad(&format!("{e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(_) => return Err(EndpointError::Scheme(target.to_string())),
            None => return Err(bad("it has no scheme")),
        }
        let authority = uri.authority().ok_or_else(|| bad("it has no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        // IPv6 literals arrive bracketed (`[::1]`); the resolver wants them bare.
        let bare = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let addr = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| EndpointError::Resolve(authority.to_string(), e.to_string()))?
            .next()
            .ok_or_else(|| {
                EndpointError::Resolve(authority.to_string(), "no address".to_string())
            })?;
        let head = format!(
            "POST {REGISTER} HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/json\r\ncontent-length: "
        )
        .into_bytes();
        Ok(Self { addr, head })
    }
}

/// One user's connection: opened before the schedule starts, reopened when it breaks.
#[derive(Debug)]
pub struct Connection {
    inbox: Arc<Inbox>,
    stream: Option<Socket>,
    /// Whether the open connection has carried a request already: only such a connection may
    /// have been closed by the server while idle.
    reused: bool,
    /// The request being sent, and the answer being read: allocated once, reused.
    request: Vec<u8>,
    answer: Vec<u8>,
}

/// How an exchange on one connection failed.
enum Failure {
    /// Before any byte of an answer arrived (the request may not have been read).
    Unanswered(io::Error),
    /// Part of an answer arrived, then the connection failed or closed.
    CutOff(io::Error),
    /// Not an HTTP/1.1 answer the client can read.
    Malformed,
}

impl Failure {
    fn outcome(&self) -> Outcome {
        match self {
            Failure::Unanswered(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Outcome::ConnectionError(Transport::Reset)
            }
            Failure::Unanswered(e) => classify_error(false, false, false, e),
            Failure::CutOff(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Outcome::ConnectionError(Transport::CutOff)
            }
            Failure::CutOff(e) => classify_error(false, false, true, e),
            Failure::Malformed => Outcome::ConnectionError(Transport::Other),
        }
    }
}

fn eof() -> io::Error {
    io::Error::from(io::ErrorKind::UnexpectedEof)
}

impl Connection {
    /// A connection read through `inbox`, its load thread's.
    pub fn new(inbox: Arc<Inbox>) -> Self {
        Self {
            inbox,
            stream: None,
            reused: false,
            request: Vec::with_capacity(512),
            answer: Vec::with_capacity(4096),
        }
    }

    /// Opens the connection now (before the schedule starts) so the first request does not pay
    /// for it. A failure is not an error yet: the first request retries and records it.
    pub async fn open(&mut self, endpoint: &Endpoint) {
        if let Ok(stream) = Socket::connect(endpoint.addr, &self.inbox).await {
            self.stream = Some(stream);
            self.reused = false;
        }
    }

    /// Posts `body` as JSON and reads the whole answer, within `timeout`. Never fails: a
    /// transport error or a timeout is the request's outcome, and the connection is dropped so the
    /// next request opens a fresh one. Returns the outcome and when it came: for an answer, when
    /// its last bytes reached the socket (the kernel's stamp, however late the user read them);
    /// otherwise when the failure was seen.
    pub async fn post(
        &mut self,
        endpoint: &Endpoint,
        body: &[u8],
        timeout: Duration,
    ) -> (Outcome, Instant) {
        self.request.clear();
        self.request.extend_from_slice(&endpoint.head);
        self.request
            .extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        self.request.extend_from_slice(b"\r\n\r\n");
        self.request.extend_from_slice(body);
        let _underway = self.inbox.begin();
        match tokio::time::timeout(timeout, self.exchange(endpoint)).await {
            Ok(Ok((status, at))) => (Outcome::Status(status), at),
            Ok(Err(outcome)) => (outcome, Instant::now()),
            Err(_elapsed) => {
                // The answer may still come, and would be read as the next request's.
                self.stream = None;
                (Outcome::Timeout, Instant::now())
            }
        }
    }

    async fn exchange(&mut self, endpoint: &Endpoint) -> Result<(u16, Instant), Outcome> {
        loop {
            let stream = match &mut self.stream {
                Some(stream) => stream,
                None => {
                    let stream = Socket::connect(endpoint.addr, &self.inbox)
                        .await
                        .map_err(|e| classify_error(false, true, false, &e))?;
                    self.reused = false;
                    self.stream.insert(stream)
                }
            };
            match exchange(stream, &self.request, &mut self.answer).await {
                Ok((status, keep, at)) => {
                    if keep {
                        self.reused = true;
                    } else {
                        self.stream = None;
                    }
                    return Ok((status, at));
                }
                // A connection the server closed while it sat idle (its keep-alive timeout, a
                // restart) fails before answering: that is not this request's failure, and the
                // server never read it. It is sent again once, on a fresh connection, as a pool
                // would.
                Err(Failure::Unanswered(_)) if self.reused => {
                    self.stream = None;
                }
                Err(failure) => {
                    self.stream = None;
                    return Err(failure.outcome());
                }
            }
        }
    }
}

/// Reads more of the answer into `buf` and notes when it arrived in `at`; an end of stream is an
/// error (the caller knows whether any of the answer had arrived).
async fn read_more(stream: &mut Socket, buf: &mut Vec<u8>, at: &mut Instant) -> io::Result<()> {
    match stream.read(buf).await? {
        (0, _) => Err(eof()),
        (_, arrived) => {
            *at = arrived;
            Ok(())
        }
    }
}

/// What an answer's head says about it.
struct Head {
    /// Its length in bytes.
    len: usize,
    status: u16,
    framing: Framing,
    /// Whether the connection stays open after it.
    keep: bool,
}

enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

fn parse_head(buf: &[u8]) -> Result<Option<Head>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
        _ => return Err(Failure::Malformed),
    };
    let status = response.code.ok_or(Failure::Malformed)?;
    let mut keep = response.version == Some(1);
    let mut length = None;
    let mut chunked = false;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value).map_err(|_| Failure::Malformed)?;
            length = Some(text.trim().parse().map_err(|_| Failure::Malformed)?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h.value.eq_ignore_ascii_case(b"chunked") || h.value.ends_with(b"chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            if h.value.eq_ignore_ascii_case(b"close") {
                keep = false;
            } else if h.value.eq_ignore_ascii_case(b"keep-alive") {
                keep = true;
            }
        }
    }
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        keep = false;
        Framing::UntilClose
    };
    Ok(Some(Head {
        len,
        status,
        framing,
        keep,
    }))
}

/// Sends `request` and reads one whole answer (skipping interim `1xx` ones). Returns its status,
/// whether the connection can carry another request, and when the answer's last bytes arrived.
async fn exchange(
    stream: &mut Socket,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(u16, bool, Instant), Failure> {
    let mut arrived = Instant::now();
    stream
        .write_all(request)
        .await
        .map_err(Failure::Unanswered)?;
    buf.clear();
    let head = loop {
        let head = match parse_head(buf)? {
            Some(head) => head,
            None => {
                let answered = !buf.is_empty();
                read_more(stream, buf, &mut arrived).await.map_err(|e| {
                    if answered {
                        Failure::CutOff(e)
                    } else {
                        Failure::Unanswered(e)
                    }
                })?;
                continue;
            }
        };
        if (100..200).contains(&head.status) && head.status != 101 {
            buf.drain(..head.len);
            continue;
        }
        break head;
    };
    let cut = Failure::CutOff;
    match head.framing {
        Framing::None => {}
        Framing::Length(n) => {
            // The body is not kept: what arrives is counted and dropped.
            let mut have = buf.len() - head.len;
            while have < n {
                buf.clear();
                read_more(stream, buf, &mut arrived).await.map_err(cut)?;
                have += buf.len();
            }
            if have > n {
                // More than was announced: nothing was asked for, so the connection is unusable.
                return Ok((head.status, false, arrived));
            }
        }
        Framing::Chunked => {
            let mut at = head.len;
            loop {
                // A chunk's size line, then its data and CRLF; the last chunk is empty and is
                // followed by trailers, up to an empty line.
                let line_end = loop {
                    if let Some(i) = find_crlf(&buf[at..]) {
                        break at + i;
                    }
                    read_more(stream, buf, &mut arrived).await.map_err(cut)?;
                };
                let size_text = std::str::from_utf8(&buf[at..line_end])
                    .map_err(|_| Failure::Malformed)?
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim();
                let size = usize::from_str_radix(size_text, 16).map_err(|_| Failure::Malformed)?;
                at = line_end + 2;
                if size == 0 {
                    loop {
                        let end = loop {
                            if let Some(i) = find_crlf(&buf[at..]) {
                                break at + i;
                            }
                            read_more(stream, buf, &mut arrived).await.map_err(cut)?;
                        };
                        let empty = end == at;
                        at = end + 2;
                        if empty {
                            break;
                        }
                    }
                    break;
                }
                let next = at + size + 2;
                while buf.len() < next {
                    read_more(stream, buf, &mut arrived).await.map_err(cut)?;
                }
                at = next;
            }
            if buf.len() > at {
                return Ok((head.status, false, arrived));
            }
        }
        Framing::UntilClose => loop {
            buf.clear();
            match read_more(stream, buf, &mut arrived).await {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(Failure::CutOff(e)),
            }
        },
    }
    Ok((head.status, head.keep, arrived))
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// An inbox harvested whenever an answer arrives, as a load thread's is between slots.
    fn watched_inbox() -> Arc<Inbox> {
        let inbox = Inbox::new().unwrap();
        let watched = inbox.clone();
        tokio::spawn(async move { watched.watch().await });
        inbox
    }

    #[tokio::test]
    async fn endpoints_are_plain_http_with_a_host() {
        let e = Endpoint::resolve("http://127.0.0.1:8080").await.unwrap();
        assert_eq!(e.addr, "127.0.0.1:8080".parse().unwrap());
        let head = String::from_utf8(e.head.clone()).unwrap();
        assert!(head.starts_with("POST /register HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("host: 127.0.0.1:8080\r\n"), "{head}");
        assert!(head.ends_with("content-length: "), "{head}");
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

    /// Reads one request (head and the body its length announces) from `socket`; `None` at the
    /// end of the stream.
    async fn read_request(socket: &mut TcpStream, pending: &mut Vec<u8>) -> Option<String> {
        loop {
            if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(pending[..end].to_vec()).unwrap();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if pending.len() >= end + 4 + length {
                    let request: Vec<u8> = pending.drain(..end + 4 + length).collect();
                    return Some(String::from_utf8(request).unwrap());
                }
            }
            let mut buf = [0u8; 4096];
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// A server that writes `answers[i]` (in pieces, to exercise partial reads) for the `i`-th
    /// request on each connection, closes the connection when it runs out, and notes every
    /// request it read and every connection it accepted.
    async fn server(
        answers: Vec<&'static str>,
    ) -> (String, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (count, noted) = (accepted.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let answers = answers.clone();
                let noted = noted.clone();
                tokio::spawn(async move {
                    let mut pending = Vec::new();
                    for answer in answers {
                        let Some(request) = read_request(&mut socket, &mut pending).await else {
                            return;
                        };
                        noted.lock().unwrap().push(request);
                        let bytes = answer.as_bytes();
                        let (a, b) = bytes.split_at(bytes.len() / 2);
                        let _ = socket.write_all(a).await;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        let _ = socket.write_all(b).await;
                    }
                    let _ = socket.shutdown().await;
                });
            }
        });
        (url, accepted, requests)
    }

    async fn post_n(url: &str, n: usize) -> Vec<Outcome> {
        let endpoint = Endpoint::resolve(url).await.unwrap();
        let mut connection = Connection::new(watched_inbox());
        connection.open(&endpoint).await;
        let mut outcomes = Vec::new();
        for _ in 0..n {
            let sent = Instant::now();
            let (outcome, at) = connection
                .post(&endpoint, b"{\"a\":1}", Duration::from_secs(5))
                .await;
            assert!(
                at + Duration::from_millis(1) >= sent && at <= Instant::now(),
                "answered between sending and now"
            );
            outcomes.push(outcome);
            // Let a server's close reach the connection, as it would between two slots.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        outcomes
    }

    #[tokio::test(flavor = "current_thread")]
    async fn keep_alive_carries_every_request_on_one_connection_whatever_the_framing() {
        let (url, accepted, requests) = server(vec![
            "HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\nok",
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 409 Conflict\r\ntransfer-encoding: chunked\r\n\r\n4;x=1\r\nabcd\r\n3\r\nefg\r\n0\r\ntrailer: t\r\n\r\n",
            "HTTP/1.1 204 No Content\r\n\r\n",
            "HTTP/1.1 201 Created\r\ncontent-length: 5\r\n\r\nhello",
        ])
        .await;
        let outcomes = post_n(&url, 5).await;
        let statuses = [202, 503, 409, 204, 201].map(Outcome::Status);
        assert_eq!(outcomes, statuses);
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection");
        let requests = requests.lock().unwrap();
        assert_eq!(requests.len(), 5);
        let host = format!("host: {}\r\n", &url[7..]);
        for r in requests.iter() {
            assert!(r.starts_with("POST /register HTTP/1.1\r\n"), "{r}");
            assert!(r.contains(&host), "{r}");
            assert!(r.contains("content-type: application/json\r\n"), "{r}");
            assert!(r.ends_with("content-length: 7\r\n\r\n{\"a\":1}"), "{r}");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_the_server_closed_is_replaced_without_failing_the_request() {
        // One answer per connection, then the server closes it: each later request finds its
        // connection closed, and is sent again on a fresh one.
        let (url, accepted, requests) =
            server(vec!["HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n"]).await;
        let outcomes = post_n(&url, 3).await;
        assert_eq!(outcomes, [Outcome::Status(202); 3]);
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        assert_eq!(requests.lock().unwrap().len(), 3, "each request read once");
        // An answer that says so closes the connection; one framed by the close is read to it.
        let (url, accepted, _) = server(vec![
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\nx",
        ])
        .await;
        assert_eq!(post_n(&url, 2).await, [Outcome::Status(200); 2]);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        let (url, _, _) = server(vec!["HTTP/1.0 200 OK\r\n\r\nuntil the end"]).await;
        assert_eq!(post_n(&url, 2).await, [Outcome::Status(200); 2]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn broken_answers_are_transport_errors() {
        // Cut off in its body: the server closes after half of it.
        let (url, _, _) = server(vec![
            "HTTP/1.1 202 Accepted\r\ncontent-length: 100\r\n\r\nshort",
        ])
        .await;
        assert_eq!(
            post_n(&url, 1).await,
            [Outcome::ConnectionError(Transport::CutOff)]
        );
        let (url, _, _) = server(vec!["SMTP ready\r\n\r\n"]).await;
        assert_eq!(
            post_n(&url, 1).await,
            [Outcome::ConnectionError(Transport::Other)]
        );
        // A fresh connection closed before any answer is the server's doing.
        let (url, _, _) = server(vec![]).await;
        assert_eq!(
            post_n(&url, 1).await,
            [Outcome::ConnectionError(Transport::Reset)]
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
        let mut connection = Connection::new(watched_inbox());
        let (outcome, _) = connection
            .post(&endpoint, b"{}", Duration::from_millis(100))
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
        let (outcome, _) = Connection::new(watched_inbox())
            .post(&endpoint, b"{}", Duration::from_secs(5))
            .await;
        assert_eq!(outcome, Outcome::ConnectionError(Transport::Refused));
    }
}
