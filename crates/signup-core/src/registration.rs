use std::fmt;
use std::str::FromStr;

use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::{StatusCode, header};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::ApiError;

/// The largest sign-up body accepted; a larger one is answered 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The layer that enforces [`MAX_BODY_BYTES`] on a router.
pub fn body_limit() -> DefaultBodyLimit {
    DefaultBodyLimit::max(MAX_BODY_BYTES)
}

/// A notification channel, in the order the naive design calls them.
///
/// This is the one place the channels are listed: everything else iterates [`Channel::ALL`], keeps
/// per-channel data in arrays indexed by [`Channel::index`], and reads and writes names through
/// [`Channel::as_str`] and [`FromStr`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Email,
    Sms,
    Push,
}

impl Channel {
    /// Every channel, in declaration order, so `ALL[c.index()] == c`.
    pub const ALL: [Channel; 3] = [Channel::Email, Channel::Sms, Channel::Push];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
        }
    }

    /// The channel's position in [`Channel::ALL`], for per-channel arrays.
    pub const fn index(self) -> usize {
        // The discriminants count up from 0 in declaration order, which `ALL` follows (tested).
        self as usize
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl Channel {
    /// The channels a sign-up is notified on, from what it gave: email always, SMS with a phone,
    /// push with a device token. The one statement of that rule; stored sign-ups are read back
    /// through it too.
    pub fn for_contact(has_phone: bool, has_device: bool) -> Vec<Channel> {
        Self::ALL
            .into_iter()
            .filter(|c| match c {
                Channel::Email => true,
                Channel::Sms => has_phone,
                Channel::Push => has_device,
            })
            .collect()
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a channel; its message names the valid ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no channel `{0}`; use {list}", list = channel_list())]
pub struct UnknownChannel(pub String);

/// `email, sms or push`, from [`Channel::ALL`].
fn channel_list() -> String {
    let names = Channel::ALL.map(Channel::as_str);
    match names.split_last() {
        Some((last, [])) => (*last).to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

impl FromStr for Channel {
    type Err = UnknownChannel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| UnknownChannel(s.to_string()))
    }
}

/// `--channel email|sms|push` in a clap derive, with the names and the error message from here.
#[cfg(feature = "clap")]
impl clap::ValueEnum for Channel {
    fn value_variants<'a>() -> &'a [Self] {
        &Self::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

/// A sign-up as the client sends it. Unknown fields are rejected, so a misspelt `device_token` is an
/// error rather than a user silently never notified by push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub email: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_token: Option<String>,
}

impl Registration {
    /// The channels this sign-up is notified on: email always, SMS with a phone, push with a device.
    pub fn channels(&self) -> Vec<Channel> {
        Channel::for_contact(self.phone.is_some(), self.device_token.is_some())
    }

    /// Where a channel's notification goes.
    pub fn address(&self, channel: Channel) -> Option<&str> {
        match channel {
            Channel::Email => Some(&self.email),
            Channel::Sms => self.phone.as_deref(),
            Channel::Push => self.device_token.as_deref(),
        }
    }

    /// Checks the values; the error names the field and what was expected.
    pub fn validate(&self) -> Result<(), ApiError> {
        // Every field must be storable before anything else is said about it.
        storable("email", &self.email)?;
        storable("name", &self.name)?;
        if let Some(phone) = &self.phone {
            storable("phone", phone)?;
        }
        if let Some(token) = &self.device_token {
            storable("device_token", token)?;
        }
        validate_email(&self.email)?;
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(ApiError::invalid("`name` must be 1 to 200 characters"));
        }
        if let Some(phone) = &self.phone {
            let digits = phone.strip_prefix('+').unwrap_or("");
            if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ApiError::invalid(
                    "`phone` must be in E.164 form: + and 8 to 15 digits",
                ));
            }
        }
        if let Some(token) = &self.device_token {
            if token.is_empty() || token.len() > 4096 || token.chars().any(char::is_whitespace) {
                return Err(ApiError::invalid(
                    "`device_token` must be 1 to 4096 characters without spaces",
                ));
            }
        }
        Ok(())
    }
}

/// Whether PostgreSQL can store `value` in a `text` column of a UTF8 database; the error names the
/// field.
///
/// NUL (U+0000) is the one character it cannot: PostgreSQL's text types are NUL-terminated inside
/// the server and reject the byte, as `\u0000` in JSON easily sends it. Nothing else a Rust `String`
/// can hold is refused: a `String` is valid UTF-8, so it holds only Unicode scalar values (lone
/// surrogates, which PostgreSQL would reject, cannot reach one; serde_json refuses them as malformed
/// JSON), and a UTF8 database stores every scalar value up to U+10FFFF, noncharacters included.
/// Lengths are bounded by the body limit and the per-field checks, far below any column or index
/// limit.
fn storable(field: &str, value: &str) -> Result<(), ApiError> {
    if value.contains('\0') {
        return Err(ApiError::invalid(format!(
            "`{field}` must not contain NUL (U+0000), which cannot be stored"
        )));
    }
    Ok(())
}

fn validate_email(email: &str) -> Result<(), ApiError> {
    let bad = || ApiError::invalid("`email` must be an address like name@example.com");
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = email.rsplit_once('@').ok_or_else(bad)?;
    let labels_ok = domain.split('.').all(|l| !l.is_empty());
    if local.is_empty() || local.contains('@') || !domain.contains('.') || !labels_ok {
        return Err(bad());
    }
    Ok(())
}

/// An extractor for a sign-up body that answers every kind of bad input with the right status and a
/// JSON reason: 415 for a non-JSON content type, 413 over [`MAX_BODY_BYTES`] (with [`body_limit`] on
/// the router), 400 for malformed JSON, 422 for a well-formed body that is not a valid sign-up.
#[derive(Debug, Clone)]
pub struct ValidRegistration(pub Registration);

impl<S: Send + Sync> FromRequest<S> for ValidRegistration {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the sign-up as JSON with `Content-Type: application/json`",
            ));
        }
        let body = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the body is over {MAX_BODY_BYTES} bytes"),
                )
            } else {
                ApiError::malformed_json(format!("could not read the body: {rejection}"))
            }
        })?;
        let registration = parse(&body)?;
        registration.validate()?;
        Ok(Self(registration))
    }
}

/// Parses a body: syntax errors are 400, well-formed JSON of the wrong shape is 422.
fn parse(body: &[u8]) -> Result<Registration, ApiError> {
    let registration = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::invalid(e.to_string()),
        _ => ApiError::malformed_json(format!("the body is not valid JSON: {e}")),
    })?;
    // serde's derived structs also accept a sequence of the fields in order, so
    // `["a@b.co", "Ada"]` would parse; the API takes objects only, whose keys say what each value is.
    if body.trim_ascii_start().starts_with(b"[") {
        return Err(ApiError::invalid("the sign-up must be a JSON object"));
    }
    Ok(registration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(email: &str) -> Registration {
        Registration {
            email: email.into(),
            name: "Ada".into(),
            phone: None,
            device_token: None,
        }
    }

    #[test]
    fn emails() {
        for ok in ["a@b.co", "first.last+tag@example.com", "x@sub.domain.org"] {
            assert!(reg(ok).validate().is_ok(), "{ok}");
        }
        for bad in [
            "", "plain", "@b.co", "a@", "a@b", "a@b..co", "a b@c.co", "a@b@c.co", "a@.co",
        ] {
            assert_eq!(
                reg(bad).validate().unwrap_err().status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{bad}"
            );
        }
    }

    #[test]
    fn phones_names_and_tokens() {
        let mut r = reg("a@b.co");
        r.phone = Some("+4915112345678".into());
        assert!(r.validate().is_ok());
        for bad in [
            "4915112345678",
            "+49 151",
            "+12",
            "+1234567890123456",
            "+49abc45678",
        ] {
            r.phone = Some(bad.into());
            assert!(r.validate().is_err(), "{bad}");
        }
        r.phone = None;
        r.name = "   ".into();
        assert!(r.validate().is_err());
        r.name = "x".repeat(201);
        assert!(r.validate().is_err());
        r.name = "Ada".into();
        r.device_token = Some(String::new());
        assert!(r.validate().is_err());
    }

    #[test]
    fn nul_is_refused_in_every_field_naming_it() {
        let valid = || Registration {
            phone: Some("+4915112345678".into()),
            device_token: Some("tok".into()),
            ..reg("a@b.co")
        };
        assert!(valid().validate().is_ok());
        type Spoil = fn(&mut Registration);
        let cases: [(&str, Spoil); 4] = [
            ("email", |r| r.email = "a\0@b.co".into()),
            ("name", |r| r.name = "A\0da".into()),
            ("phone", |r| r.phone = Some("+49151\0".into())),
            ("device_token", |r| r.device_token = Some("to\0k".into())),
        ];
        for (field, spoil) in cases {
            let mut r = valid();
            spoil(&mut r);
            let err = r.validate().unwrap_err();
            assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY, "{field}");
            assert!(
                err.message.contains(&format!("`{field}`")),
                "{field}: {err:?}"
            );
            assert!(err.message.contains("NUL"), "{field}: {err:?}");
        }
        // Everything else a String holds is storable, oddities included.
        let mut r = valid();
        r.name = "\u{feff}\u{202e}e\u{301}\u{fffe}\u{10ffff}\u{1f600}\u{7f}".into();
        assert!(r.validate().is_ok());
    }

    #[test]
    fn channel_names_and_indexes_round_trip() {
        for (i, c) in Channel::ALL.into_iter().enumerate() {
            assert_eq!(c.index(), i, "{c}");
            assert_eq!(c.as_str().parse::<Channel>(), Ok(c));
            assert_eq!(Channel::parse(c.as_str()), Some(c));
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{c}\""));
        }
        let err = "fax".parse::<Channel>().unwrap_err();
        assert_eq!(err.to_string(), "no channel `fax`; use email, sms or push");
    }

    #[cfg(feature = "clap")]
    #[test]
    fn channel_is_a_clap_value() {
        use clap::ValueEnum;
        assert_eq!(
            <Channel as ValueEnum>::from_str("sms", false),
            Ok(Channel::Sms)
        );
        let names: Vec<String> = Channel::value_variants()
            .iter()
            .filter_map(|c| c.to_possible_value())
            .map(|v| v.get_name().to_string())
            .collect();
        assert_eq!(names, ["email", "sms", "push"]);
    }

    #[test]
    fn channels_follow_the_fields() {
        let mut r = reg("a@b.co");
        assert_eq!(r.channels(), vec![Channel::Email]);
        r.device_token = Some("tok".into());
        assert_eq!(r.channels(), vec![Channel::Email, Channel::Push]);
        r.phone = Some("+4915112345678".into());
        assert_eq!(r.channels(), Channel::ALL.to_vec());
    }

    #[test]
    fn parse_errors_are_classified() {
        let cases: [(&str, StatusCode); 7] = [
            ("{", StatusCode::BAD_REQUEST),
            ("not json", StatusCode::BAD_REQUEST),
            ("", StatusCode::BAD_REQUEST),
            (r#"{"email": "a@b.co"}"#, StatusCode::UNPROCESSABLE_ENTITY),
            (
                r#"{"email": 5, "name": "x"}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                r#"{"email": "a@b.co", "name": "x", "devicetoken": "t"}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            ("[]", StatusCode::UNPROCESSABLE_ENTITY),
        ];
        for (body, want) in cases {
            assert_eq!(parse(body.as_bytes()).unwrap_err().status, want, "{body}");
        }
        assert!(parse(br#"{"email": "a@b.co", "name": "x", "phone": null}"#).is_ok());
        // The fields in order as an array are well-formed, and still not a sign-up.
        let err = parse(br#" ["a@b.co", "x"]"#).unwrap_err();
        assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(err.message.contains("object"), "{err:?}");
    }
}
