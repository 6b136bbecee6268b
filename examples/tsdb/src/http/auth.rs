//! Which token a request carries, and the gate every request passes before it is
//! routed, HTTP and Arrow Flight alike: InfluxDB 3's clients send `Authorization:
//! Bearer TOKEN` or `Token TOKEN` (Flight: gRPC's `authorization` metadata, the same
//! header); InfluxDB 1's send HTTP Basic with the token as the password, or `?p=TOKEN`
//! on `/write`.

use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use base64::Engine as _;

use crate::tokens::{TokenError, Tokens};

/// The route that makes the first token: it cannot need one. Its handler refuses it
/// once the operator token exists.
const MAKES_THE_FIRST_TOKEN: &str = "/api/v3/configure/token/admin";

/// The token a request presents, if any; a malformed `Authorization` is an error
/// naming what is wrong with it.
pub fn credential(headers: &HeaderMap, uri: &Uri) -> Result<Option<String>, String> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| "the Authorization header is not ASCII".to_owned())?;
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
        let rest = rest.trim();
        return match scheme.to_ascii_lowercase().as_str() {
            "bearer" | "token" if !rest.is_empty() => Ok(Some(rest.to_owned())),
            "basic" => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(rest)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        "the Authorization header's Basic credentials are not base64 of user:token"
                            .to_owned()
                    })?;
                // InfluxDB 1's clients: the user is ignored, the password is the token.
                let token = decoded.split_once(':').map_or(decoded.as_str(), |(_, p)| p);
                Ok((!token.is_empty()).then(|| token.to_owned()))
            }
            "bearer" | "token" => Err(format!(
                "the Authorization header's {scheme} scheme carries no token"
            )),
            // A token sent with no scheme is in `scheme`: named only if it looks like one.
            _ if (1..=16).contains(&scheme.len())
                && scheme.bytes().all(|b| b.is_ascii_alphabetic()) =>
            {
                Err(format!(
                    "the Authorization header's scheme {scheme:?} is not Bearer, Token or Basic"
                ))
            }
            _ => Err(
                "the Authorization header has no scheme: send `Bearer TOKEN` or `Token TOKEN`"
                    .to_owned(),
            ),
        };
    }
    if uri.path() == "/write" {
        let query =
            axum::extract::Query::<std::collections::HashMap<String, String>>::try_from_uri(uri)
                .map_err(|e| format!("the query string: {e}"))?;
        return Ok(query.0.get("p").filter(|p| !p.is_empty()).cloned());
    }
    Ok(None)
}

/// Lets a request through when tokens are not checked, when its path is open, or when
/// it carries a live token; otherwise why not (a 401's message).
pub fn gate(
    tokens: &Tokens,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(), String> {
    if !tokens.required
        || (method == Method::POST && uri.path() == MAKES_THE_FIRST_TOKEN)
        || tokens.open.contains(&uri.path())
    {
        return Ok(());
    }
    let presented = credential(headers, uri)?;
    tokens.check(presented.as_deref()).map(drop).map_err(|e| {
        tracing::debug!("http: {method} {} refused: {e}", uri.path());
        e.to_string()
    })
}

/// The HTTP status of a token refusal.
pub fn status_of(e: &TokenError) -> StatusCode {
    match e {
        TokenError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        TokenError::Forbidden(_) => StatusCode::FORBIDDEN,
        TokenError::Conflict(_) => StatusCode::CONFLICT,
        TokenError::NotFound(_) => StatusCode::NOT_FOUND,
        TokenError::Invalid(_) => StatusCode::BAD_REQUEST,
        TokenError::Catalog(c) if c.too_large => StatusCode::BAD_REQUEST,
        TokenError::Catalog(_) | TokenError::Random(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presented(authorization: Option<&str>, uri: &str) -> Result<Option<String>, String> {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(header::AUTHORIZATION, value.parse().expect("a header"));
        }
        credential(&headers, &uri.parse().expect("a uri"))
    }

    #[test]
    fn every_way_influxdbs_clients_send_a_token_is_read() {
        let t = Some("apiv3_x".to_owned());
        assert_eq!(
            presented(Some("Bearer apiv3_x"), "/api/v3/query_sql"),
            Ok(t.clone())
        );
        assert_eq!(
            presented(Some("Token apiv3_x"), "/api/v2/write"),
            Ok(t.clone())
        );
        assert_eq!(presented(Some("token  apiv3_x "), "/"), Ok(t.clone()));
        // user:apiv3_x
        assert_eq!(
            presented(Some("Basic dXNlcjphcGl2M194"), "/write"),
            Ok(t.clone())
        );
        assert_eq!(presented(None, "/write?db=m&u=me&p=apiv3_x"), Ok(t.clone()));
        assert_eq!(presented(None, "/api/v3/write_lp?db=m&p=apiv3_x"), Ok(None));
        assert_eq!(presented(None, "/"), Ok(None));
        assert!(presented(Some("Digest abc"), "/").is_err_and(|e| e.contains("\"Digest\"")));
        assert!(presented(Some("Bearer"), "/").is_err_and(|e| e.contains("carries no token")));
        assert!(presented(Some("Basic !!"), "/").is_err());
        // A token without its scheme is not echoed back.
        let bare = presented(Some("apiv3_secretsecretsecret"), "/").expect_err("refused");
        assert!(
            !bare.contains("apiv3") && bare.contains("no scheme"),
            "{bare}"
        );
        let tabbed = presented(Some("Bearer\tapiv3_secret"), "/").expect_err("refused");
        assert!(!tabbed.contains("secret"), "{tabbed}");
    }
}
