//! Hostile and malformed sign-up requests, generated deterministically from a seed, and a runner that
//! sends them over real HTTP to either design.
//!
//! Whatever arrives, the answer must not be a 5xx (a 5xx here is a crash, or a failure the client
//! was blamed for by nobody), and every 4xx must carry the JSON error body with `error.code`. Some
//! cases also pin the exact status where the API promises one (415, 413, 400, 422).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::MAX_BODY_BYTES;

/// How a case is put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// With `Content-Length` (reqwest).
    Length,
    /// With `Transfer-Encoding: chunked`, over a raw TCP connection, so that the body limit is met
    /// while the body streams in rather than from a declared length.
    Chunked,
}

/// One request of the fuzz run.
#[derive(Debug, Clone)]
pub struct FuzzCase {
    pub what: String,
    /// The raw `Content-Type` header value, if any (not necessarily valid UTF-8).
    pub content_type: Option<Vec<u8>>,
    pub body: Vec<u8>,
    pub framing: Framing,
    /// The one status the API promises for this input, when it promises one.
    pub expect: Option<u16>,
}

const JSON: &[u8] = b"application/json";

/// The status a case must get, when the API promises one.
type Expect = Option<u16>;

/// The fields of a sign-up, in the order they are written.
const FIELDS: [&str; 4] = ["email", "name", "phone", "device_token"];

/// A valid sign-up with every field, as a JSON object whose members are raw JSON fragments, so
/// that a fragment can be anything at all (invalid UTF-8 included).
fn object(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = b"{".to_vec();
    for (i, (key, value)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(format!("\"{key}\":").as_bytes());
        out.extend_from_slice(value);
    }
    out.push(b'}');
    out
}

fn quoted(s: &str) -> Vec<u8> {
    serde_json::to_vec(s).unwrap_or_default()
}

/// The fields of a valid sign-up numbered `n` (so every valid one has its own email).
fn valid_members(n: usize) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("email", quoted(&format!("fuzz{n}@example.com"))),
        ("name", quoted("Fuzz")),
        ("phone", quoted("+441234567890")),
        ("device_token", quoted("dev-1")),
    ]
}

/// Hostile values for one field, as raw JSON fragments, with the status each must get when it
/// is known whatever the field.
fn hostile_values() -> Vec<(&'static str, Vec<u8>, Expect)> {
    vec![
        // NUL: escaped it is valid JSON PostgreSQL cannot store; raw it is not JSON at all.
        ("escaped NUL", br#""a\u0000b""#.to_vec(), Some(422)),
        ("only an escaped NUL", br#""\u0000""#.to_vec(), Some(422)),
        (
            "escaped NUL at the end",
            br#""fuzz@example.com\u0000""#.to_vec(),
            Some(422),
        ),
        ("raw NUL", b"\"a\0b\"".to_vec(), Some(400)),
        // Invalid UTF-8 inside a string.
        ("invalid UTF-8 byte", b"\"a\xffb\"".to_vec(), Some(400)),
        ("truncated UTF-8 sequence", b"\"a\xc3\"".to_vec(), Some(400)),
        ("overlong UTF-8", b"\"\xc0\xaf\"".to_vec(), Some(400)),
        (
            "UTF-8-encoded surrogate",
            b"\"\xed\xa0\x80\"".to_vec(),
            Some(400),
        ),
        ("latin-1 e-acute", b"\"caf\xe9\"".to_vec(), Some(400)),
        // Surrogates by escape: a lone one is no scalar value.
        ("lone high surrogate", br#""\ud800""#.to_vec(), Some(400)),
        ("lone low surrogate", br#""x\udc00x""#.to_vec(), Some(400)),
        (
            "reversed surrogate pair",
            br#""\ude00\ud83d""#.to_vec(),
            Some(400),
        ),
        (
            "surrogate pair (emoji)",
            br#""\ud83d\ude00""#.to_vec(),
            None,
        ),
        ("bad escape", br#""\x41""#.to_vec(), Some(400)),
        ("short unicode escape", br#""\u12""#.to_vec(), Some(400)),
        // Numbers where strings belong.
        ("1e999999", b"1e999999".to_vec(), Some(400)),
        ("-1e999999", b"-1e999999".to_vec(), Some(400)),
        ("100-digit integer", "9".repeat(100).into_bytes(), Some(422)),
        ("negative zero", b"-0".to_vec(), Some(422)),
        ("float", b"3.14".to_vec(), Some(422)),
        ("leading zero", b"0123".to_vec(), Some(400)),
        ("NaN", b"NaN".to_vec(), Some(400)),
        ("Infinity", b"Infinity".to_vec(), Some(400)),
        // Other wrong types.
        ("true", b"true".to_vec(), Some(422)),
        ("empty array", b"[]".to_vec(), Some(422)),
        ("array of strings", br#"["a@b.co"]"#.to_vec(), Some(422)),
        ("object", br#"{"a":"b"}"#.to_vec(), Some(422)),
        ("deeply nested arrays", nested(b"[", b"]", 500), Some(422)),
        ("single-quoted string", b"'x'".to_vec(), Some(400)),
        ("unquoted word", b"fuzz".to_vec(), Some(400)),
        // Strings that are long, control-laden or odd.
        ("empty string", b"\"\"".to_vec(), Some(422)),
        ("10,000 characters", quoted(&"x".repeat(10_000)), Some(422)),
        ("2,000 emoji", quoted(&"\u{1F600}".repeat(2_000)), Some(422)),
        (
            "escaped control characters",
            br#""a\u0001\u001fb""#.to_vec(),
            None,
        ),
        ("raw tab", b"\"a\tb\"".to_vec(), Some(400)),
        ("raw newline", b"\"a\nb\"".to_vec(), Some(400)),
        ("escaped newline and tab", br#""a\n\tb""#.to_vec(), None),
        ("DEL and C1 controls", quoted("a\u{7f}\u{85}\u{9f}b"), None),
        ("byte order mark", quoted("\u{feff}x"), None),
        (
            "right-to-left override",
            quoted("\u{202e}moc.elpmaxe@a"),
            None,
        ),
        (
            "zero-width joiners",
            quoted("a\u{200d}\u{200b}\u{2060}b"),
            None,
        ),
        (
            "combining marks",
            quoted("e\u{301}\u{302}\u{303}\u{304}"),
            None,
        ),
        ("noncharacters", quoted("\u{fffe}\u{ffff}\u{10ffff}"), None),
        ("fullwidth at sign", quoted("a\u{ff20}example.com"), None),
        (
            "line and paragraph separators",
            quoted("a\u{2028}\u{2029}b"),
            None,
        ),
        ("private use", quoted("\u{e000}\u{f8ff}\u{100000}"), None),
        ("ideographic space", quoted("\u{3000}"), None),
        (
            "escaped NUL among emoji",
            quoted("\u{1F600}\0\u{1F600}"),
            Some(422),
        ),
    ]
}

fn nested(open: &[u8], close: &[u8], depth: usize) -> Vec<u8> {
    let mut out = open.repeat(depth);
    out.extend(close.repeat(depth));
    out
}

/// Every case, in a fixed order; the randomised part depends on `seed` alone.
pub fn fuzz_cases(seed: u64) -> Vec<FuzzCase> {
    let mut cases = Vec::new();
    let mut n = 0usize;
    let mut next = || {
        n += 1;
        n
    };
    let json = |what: String, body: Vec<u8>, expect: Option<u16>| FuzzCase {
        what,
        content_type: Some(JSON.to_vec()),
        body,
        framing: Framing::Length,
        expect,
    };

    // Each hostile value in each field of an otherwise valid sign-up.
    for field in FIELDS {
        for (what, value, expect) in hostile_values() {
            let mut members = valid_members(next());
            for m in &mut members {
                if m.0 == field {
                    m.1 = value.clone();
                }
            }
            cases.push(json(format!("{field}: {what}"), object(&members), expect));
        }
    }

    // Whole bodies that are not a sign-up object.
    let valid = object(&valid_members(next()));
    let whole: Vec<(&str, Vec<u8>, Expect)> = vec![
        ("empty body", vec![], Some(400)),
        ("whitespace only", b" \n\t\r ".to_vec(), Some(400)),
        ("null", b"null".to_vec(), Some(422)),
        ("true", b"true".to_vec(), Some(422)),
        ("zero", b"0".to_vec(), Some(422)),
        ("a string", b"\"a@b.co\"".to_vec(), Some(422)),
        ("an empty array", b"[]".to_vec(), Some(422)),
        (
            "an array of objects",
            format!("[{}]", String::from_utf8_lossy(&valid)).into_bytes(),
            Some(422),
        ),
        (
            "an array holding a whole sign-up",
            br#"["arr@example.com","Arr"]"#.to_vec(),
            Some(422),
        ),
        ("an empty object", b"{}".to_vec(), Some(422)),
        ("10,000 levels of [", b"[".repeat(10_000), None),
        (
            "10,000 levels of [ closed",
            nested(b"[", b"]", 10_000),
            None,
        ),
        (
            "10,000 levels of {\"a\":",
            b"{\"a\":".repeat(10_000),
            Some(413),
        ),
        (
            "3,000 levels of {\"a\":",
            b"{\"a\":".repeat(3_000),
            Some(422),
        ),
        (
            "129 levels inside a field",
            object(&[("email", nested(b"[", b"]", 129))]),
            Some(422),
        ),
        ("top-level 1e999999", b"1e999999".to_vec(), Some(400)),
        (
            "top-level 100-digit integer",
            "1".repeat(100).into_bytes(),
            Some(422),
        ),
        (
            "duplicate email key",
            br#"{"email":"dup1@example.com","email":"dup2@example.com","name":"D"}"#.to_vec(),
            Some(422),
        ),
        (
            "duplicate name key",
            br#"{"email":"dup3@example.com","name":"D","name":"E"}"#.to_vec(),
            Some(422),
        ),
        (
            "NUL in a key",
            br#"{"em\u0000ail":"a@b.co","name":"x"}"#.to_vec(),
            Some(422),
        ),
        (
            "unknown field",
            br#"{"email":"u@example.com","name":"x","admin":true}"#.to_vec(),
            Some(422),
        ),
        (
            "trailing garbage",
            [valid.as_slice(), b"xyz"].concat(),
            Some(400),
        ),
        (
            "two objects",
            [valid.as_slice(), valid.as_slice()].concat(),
            Some(400),
        ),
        (
            "trailing comma",
            br#"{"email":"t@example.com","name":"x",}"#.to_vec(),
            Some(400),
        ),
        (
            "comment",
            br#"{/* hi */"email":"c@example.com","name":"x"}"#.to_vec(),
            Some(400),
        ),
        (
            "single quotes",
            b"{'email':'q@example.com','name':'x'}".to_vec(),
            Some(400),
        ),
        (
            "unquoted keys",
            b"{email:\"k@example.com\",name:\"x\"}".to_vec(),
            Some(400),
        ),
        (
            "byte order mark first",
            [b"\xef\xbb\xbf".as_slice(), valid.as_slice()].concat(),
            Some(400),
        ),
        ("UTF-16 body", utf16(&valid), Some(400)),
        ("raw invalid UTF-8", b"\xff\xfe\xfd".to_vec(), Some(400)),
        ("raw NUL bytes", b"\0\0\0\0".to_vec(), Some(400)),
        (
            "NUL after the object",
            [valid.as_slice(), b"\0"].concat(),
            Some(400),
        ),
        ("only a quote", b"\"".to_vec(), Some(400)),
        (
            "unterminated string",
            b"{\"email\":\"a@b.co".to_vec(),
            Some(400),
        ),
        ("body over 16 KiB", padded(MAX_BODY_BYTES + 1), Some(413)),
        ("body of exactly 16 KiB", padded(MAX_BODY_BYTES), Some(422)),
        ("1 MiB body", vec![b'['; 1 << 20], Some(413)),
    ];
    for (what, body, expect) in whole {
        cases.push(json(what.to_string(), body, expect));
    }

    // Every truncation of a valid body.
    let full = object(&valid_members(next()));
    for len in 0..full.len() {
        cases.push(json(
            format!("truncated to {len} bytes"),
            full[..len].to_vec(),
            Some(400),
        ));
    }

    // Content types, each with a body that would otherwise be a valid sign-up.
    let types: Vec<(&str, Option<Vec<u8>>, Expect)> = vec![
        ("no content type", None, Some(415)),
        ("text/plain", Some(b"text/plain".to_vec()), Some(415)),
        ("empty content type", Some(b"".to_vec()), Some(415)),
        (
            "multipart",
            Some(b"multipart/form-data; boundary=xyz".to_vec()),
            Some(415),
        ),
        (
            "form",
            Some(b"application/x-www-form-urlencoded".to_vec()),
            Some(415),
        ),
        (
            "json-patch",
            Some(b"application/json-patch+json".to_vec()),
            Some(415),
        ),
        ("jsonx", Some(b"application/jsonx".to_vec()), Some(415)),
        ("wildcard", Some(b"*/*".to_vec()), Some(415)),
        ("application/*", Some(b"application/*".to_vec()), Some(415)),
        ("text/json", Some(b"text/json".to_vec()), Some(415)),
        (
            "latin-1 byte in the header",
            Some(b"application/json; charset=\xe9".to_vec()),
            Some(415),
        ),
        (
            "a very long content type",
            Some([b"application/".as_slice(), &b"x".repeat(4000)].concat()),
            Some(415),
        ),
        (
            "charset=latin1",
            Some(b"application/json; charset=latin1".to_vec()),
            None,
        ),
        (
            "charset=utf-16",
            Some(b"application/json;charset=utf-16".to_vec()),
            None,
        ),
        ("upper case", Some(b"APPLICATION/JSON".to_vec()), None),
        ("padded", Some(b"  application/json  ".to_vec()), None),
        (
            "stray parameters",
            Some(b"application/json;;; x=\"y\"".to_vec()),
            None,
        ),
    ];
    for (what, content_type, expect) in types {
        cases.push(FuzzCase {
            what: format!("content type: {what}"),
            content_type,
            body: object(&valid_members(next())),
            framing: Framing::Length,
            expect,
        });
    }
    // A latin-1 body declared as latin-1 is still read as UTF-8, and so is not JSON.
    let mut latin1 = valid_members(next());
    latin1[1].1 = b"\"Ren\xe9e\"".to_vec();
    cases.push(FuzzCase {
        what: "latin-1 body declared latin-1".into(),
        content_type: Some(b"application/json; charset=latin1".to_vec()),
        body: object(&latin1),
        framing: Framing::Length,
        expect: Some(400),
    });

    // Streamed bodies: the limit holds without a declared length.
    let streamed: Vec<(&str, Vec<u8>, Expect)> = vec![
        (
            "chunked body over 16 KiB",
            padded(MAX_BODY_BYTES + 1),
            Some(413),
        ),
        ("chunked 1 MiB body", vec![b' '; 1 << 20], Some(413)),
        (
            "chunked valid sign-up",
            object(&valid_members(next())),
            None,
        ),
        (
            "chunked raw NUL",
            b"{\"email\":\"a\0\"}".to_vec(),
            Some(400),
        ),
        ("chunked empty body", vec![], Some(400)),
    ];
    for (what, body, expect) in streamed {
        cases.push(FuzzCase {
            what: what.to_string(),
            content_type: Some(JSON.to_vec()),
            body,
            framing: Framing::Chunked,
            expect,
        });
    }

    // Random mutations of valid bodies, from the seed.
    let mut rng = StdRng::seed_from_u64(seed);
    const SPICE: &[u8] = b"\0\x01\x1f\x7f\x80\xbf\xc0\xff\"\\{}[],:u0e-+. \t\n";
    for i in 0..120 {
        let mut body = object(&valid_members(next()));
        let edits = rng.random_range(1..=4);
        for _ in 0..edits {
            let at = rng.random_range(0..=body.len());
            match rng.random_range(0..4) {
                0 if at < body.len() => body[at] = SPICE[rng.random_range(0..SPICE.len())],
                1 => body.insert(at, SPICE[rng.random_range(0..SPICE.len())]),
                2 if at < body.len() => {
                    let end = (at + rng.random_range(1..8)).min(body.len());
                    body.drain(at..end);
                }
                _ => {
                    let junk: Vec<u8> = (0..rng.random_range(1..6)).map(|_| rng.random()).collect();
                    body.splice(at..at, junk);
                }
            }
        }
        cases.push(json(format!("mutation {i} (seed {seed})"), body, None));
    }
    cases
}

/// A sign-up padded with spaces (JSON whitespace) to exactly `len` bytes, with a name that is too
/// long, so that a body the limit lets through is still refused, by validation.
fn padded(len: usize) -> Vec<u8> {
    let mut body = object(&[
        ("email", quoted("pad@example.com")),
        ("name", quoted(&"x".repeat(300))),
    ]);
    let pad = len.saturating_sub(body.len());
    body.splice(1..1, std::iter::repeat_n(b' ', pad));
    body
}

fn utf16(body: &[u8]) -> Vec<u8> {
    let mut out = vec![0xff, 0xfe];
    for unit in String::from_utf8_lossy(body).encode_utf16() {
        out.extend_from_slice(&unit.to_le_bytes());
    }
    out
}

/// What a fuzz run saw.
#[derive(Debug, Clone, Default)]
pub struct FuzzReport {
    /// Requests sent.
    pub sent: usize,
    /// How many answers had each status.
    pub statuses: BTreeMap<u16, usize>,
}

/// Sends every case of [`fuzz_cases`] to `POST {base_url}/register`, one after another, and panics
/// listing every case that got a 5xx, a 4xx without a JSON `error.code`, or a status other than the
/// one the API promises for it.
pub async fn fuzz_register(base_url: &str, seed: u64) -> FuzzReport {
    let http = reqwest::Client::new();
    let url = format!("{}/register", base_url.trim_end_matches('/'));
    let mut report = FuzzReport::default();
    let mut failures = String::new();
    for case in fuzz_cases(seed) {
        let answer = match case.framing {
            Framing::Length => send(&http, &url, &case).await,
            Framing::Chunked => send_chunked(base_url, &case).await,
        };
        report.sent += 1;
        let (status, body) = match answer {
            Ok(answer) => answer,
            Err(e) => {
                let _ = writeln!(failures, "{}: no answer: {e}", case.what);
                continue;
            }
        };
        *report.statuses.entry(status).or_default() += 1;
        let problem = if status >= 500 {
            Some("a server error")
        } else if (400..500).contains(&status) && !has_error_code(&body) {
            Some("a 4xx without a JSON error.code")
        } else if case.expect.is_some_and(|want| want != status) {
            Some("not the promised status")
        } else {
            None
        };
        if let Some(problem) = problem {
            let _ = writeln!(
                failures,
                "{}: {problem}: {status} (want {:?}) {}",
                case.what,
                case.expect,
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
        }
    }
    assert!(failures.is_empty(), "fuzz failures:\n{failures}");
    report
}

fn has_error_code(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|v| v["error"]["code"].is_string() && v["error"]["message"].is_string())
}

async fn send(
    http: &reqwest::Client,
    url: &str,
    case: &FuzzCase,
) -> Result<(u16, Vec<u8>), String> {
    let mut request = http.post(url).body(case.body.clone());
    if let Some(ct) = &case.content_type {
        let value = HeaderValue::from_bytes(ct).map_err(|e| e.to_string())?;
        request = request.header(CONTENT_TYPE, value);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    Ok((status, body.to_vec()))
}

/// Sends a chunked request over a fresh connection and reads the first response (the server's
/// answers carry a `Content-Length`).
async fn send_chunked(base_url: &str, case: &FuzzCase) -> Result<(u16, Vec<u8>), String> {
    let addr = base_url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|e| e.to_string())?;
    let mut request =
        format!("POST /register HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\n")
            .into_bytes();
    if let Some(ct) = &case.content_type {
        request.extend_from_slice(b"Content-Type: ");
        request.extend_from_slice(ct);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"Connection: close\r\n\r\n");
    stream
        .write_all(&request)
        .await
        .map_err(|e| e.to_string())?;
    // Chunks of 1000 bytes; the server may answer (413) and close before all of them are written,
    // so a failed write is not the test's failure — its answer decides.
    for chunk in case.body.chunks(1000) {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
        if stream.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let (head_end, content_length) = loop {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("connection closed after {} bytes", raw.len()));
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| format!("no content-length in {head}"))?;
            break (end + 4, length);
        }
    };
    while raw.len() < head_end + content_length {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let status = String::from_utf8_lossy(&raw[..head_end])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status line")?;
    let end = (head_end + content_length).min(raw.len());
    Ok((status, raw[head_end..end].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cases_are_many_varied_and_repeatable() {
        let a = fuzz_cases(7);
        assert!(a.len() >= 300, "{}", a.len());
        let b = fuzz_cases(7);
        assert!(
            a.iter()
                .zip(&b)
                .all(|(x, y)| x.body == y.body && x.what == y.what)
        );
        let c = fuzz_cases(8);
        assert!(
            a.iter().zip(&c).any(|(x, y)| x.body != y.body),
            "the seed matters"
        );
        let what: Vec<&str> = a.iter().map(|c| c.what.as_str()).collect();
        for want in [
            "name: escaped NUL",
            "phone: raw NUL",
            "device_token: invalid UTF-8 byte",
        ] {
            assert!(what.contains(&want), "{want}");
        }
        let exact = a
            .iter()
            .find(|c| c.what == "body of exactly 16 KiB")
            .map(|c| c.body.len());
        assert_eq!(exact, Some(MAX_BODY_BYTES));
    }
}
