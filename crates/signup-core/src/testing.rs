//! Bad sign-up inputs and the answers both designs must give them, as data, so the two servers'
//! tests check one table; a deterministic fuzz run ([`fuzz_register`]) both designs' tests point
//! at their server; and a deterministic mix of good sign-ups ([`registration`]) with the channels
//! each is owed, for the queue designs' delivery tests.

mod fuzz;

pub use fuzz::{Framing, FuzzCase, FuzzReport, fuzz_cases, fuzz_register};

/// Sign-up `i` of a deterministic mix: every one has an email, two in three a phone, one in two a
/// device.
pub fn registration(i: usize) -> serde_json::Value {
    let mut body =
        serde_json::json!({ "email": format!("user{i}@example.com"), "name": format!("User {i}") });
    if i % 3 != 0 {
        body["phone"] = serde_json::json!(format!("+4415550{i:05}"));
    }
    if i % 2 == 0 {
        body["device_token"] = serde_json::json!(format!("device-{i}"));
    }
    body
}

/// The channels sign-up `i` of [`registration`] is owed, in the order they are named.
pub fn expected_channels(i: usize) -> Vec<&'static str> {
    let mut channels = vec!["email"];
    if i % 3 != 0 {
        channels.push("sms");
    }
    if i % 2 == 0 {
        channels.push("push");
    }
    channels
}

/// A malformed or invalid sign-up request.
#[derive(Debug, Clone)]
pub struct BadInput {
    pub what: &'static str,
    pub content_type: Option<&'static str>,
    pub body: String,
    /// The status it must be answered with.
    pub status: u16,
}

/// Every kind of bad input the API distinguishes; none may write anything or call a provider.
pub fn bad_inputs() -> Vec<BadInput> {
    let json = Some("application/json");
    let case = |what, content_type, body: &str, status| BadInput {
        what,
        content_type,
        body: body.to_string(),
        status,
    };
    let valid = r#"{"email":"a@example.com","name":"A"}"#;
    let oversized = format!(
        r#"{{"email":"a@example.com","name":"{}"}}"#,
        "x".repeat(17 * 1024)
    );
    vec![
        case("malformed JSON", json, r#"{"email":"#, 400),
        case("empty body", json, "", 400),
        case("missing name", json, r#"{"email":"a@example.com"}"#, 422),
        case(
            "invalid email",
            json,
            r#"{"email":"not-an-email","name":"A"}"#,
            422,
        ),
        case(
            "email of the wrong type",
            json,
            r#"{"email":42,"name":"A"}"#,
            422,
        ),
        case(
            "phone of the wrong type",
            json,
            r#"{"email":"a@example.com","name":"A","phone":1}"#,
            422,
        ),
        case(
            "unknown field",
            json,
            r#"{"email":"a@example.com","name":"A","devicetoken":"x"}"#,
            422,
        ),
        case(
            "invalid phone",
            json,
            r#"{"email":"a@example.com","name":"A","phone":"12"}"#,
            422,
        ),
        case("not an object", json, r#"["a@example.com"]"#, 422),
        BadInput {
            what: "body over 16 KiB",
            content_type: json,
            body: oversized,
            status: 413,
        },
        case("text/plain", Some("text/plain"), valid, 415),
        case("no content type", None, valid, 415),
    ]
}

/// A sign-up whose one field holds a NUL (sent as the JSON escape `\u0000`): well-formed JSON that
/// PostgreSQL could not store, so it must be answered 422 naming `field`.
#[derive(Debug, Clone)]
pub struct NulInput {
    pub field: &'static str,
    pub body: String,
}

/// One [`NulInput`] per text field; each is otherwise a valid sign-up of `a@example.com`.
pub fn nul_inputs() -> Vec<NulInput> {
    let fields = ["email", "name", "phone", "device_token"];
    fields
        .into_iter()
        .map(|field| {
            let mut body = serde_json::json!({
                "email": "a@example.com",
                "name": "Ada",
                "phone": "+441234567890",
                "device_token": "dev-1",
            });
            let spoilt = match field {
                "email" => "a\u{0}b@example.com",
                "phone" => "+44123\u{0}4567890",
                _ => "a\u{0}b",
            };
            body[field] = serde_json::Value::from(spoilt);
            // serde_json writes U+0000 as the escape `\u0000`, as a client would.
            NulInput {
                field,
                body: body.to_string(),
            }
        })
        .collect()
}

/// Asserts `response` is the answer to a database that failed mid-request: 503, `Retry-After: 1`,
/// code `database_unavailable`, and a message saying the sign-up may or may not have been stored.
pub async fn assert_database_unavailable(response: reqwest::Response) {
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = response.json().await.expect("a JSON error body");
    assert_eq!(body["error"]["code"], "database_unavailable", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("may or may not"), "{message}");
}

/// Sends every [`nul_inputs`] case to `{base_url}/register` and asserts each is answered 422
/// `invalid_registration` with a message naming its field. Both designs' tests call this, so the
/// two are held to the same answer.
pub async fn assert_nul_inputs_refused(base_url: &str) {
    let http = reqwest::Client::new();
    for case in nul_inputs() {
        assert!(case.body.contains(r"\u0000"), "{}", case.body);
        let r = http
            .post(format!("{base_url}/register"))
            .header("content-type", "application/json")
            .body(case.body.clone())
            .send()
            .await
            .expect("the server answers");
        assert_eq!(r.status(), 422, "{}", case.field);
        let body: serde_json::Value = r.json().await.expect("a JSON error body");
        assert_eq!(body["error"]["code"], "invalid_registration", "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("`{}`", case.field)),
            "{}: {message}",
            case.field
        );
    }
}

/// One series of a server's `/metrics` (`{base_url}/metrics`), by its name and labels as the
/// exposition spells them (`fanbench_deliveries_concurrency_limit{channel="sms"}`). Panics, naming
/// what was there, when the series is missing: a renamed metric must fail a test, never read as 0.
pub async fn metric(http: &reqwest::Client, base_url: &str, name_and_labels: &str) -> f64 {
    let text = http
        .get(format!("{base_url}/metrics"))
        .send()
        .await
        .expect("the server answers /metrics")
        .text()
        .await
        .expect("a /metrics body");
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name_and_labels)
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no {name_and_labels} in\n{text}"))
}
