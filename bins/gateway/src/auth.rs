//! Static tokens: the first check of the auth chain that runs on the protocol handshake
//! (docs/GATEWAY.md#auth-chain). A role with a token list admits only peers whose HELLO
//! carries one of its tokens.

use serde::Deserialize;

/// The `auth` section.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Tokens services may present (also `TETHER_SERVICE_TOKENS`, comma-separated).
    /// Empty (the default): services need no token.
    pub service_tokens: Vec<String>,
    /// Tokens edges may present (also `TETHER_EDGE_TOKENS`, comma-separated). Empty (the
    /// default): edges need no token.
    pub edge_tokens: Vec<String>,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The role requires a token and the HELLO carried none.
    #[error("a token is required")]
    Missing,
    /// The HELLO's token is not in the list.
    #[error("invalid token")]
    Invalid,
}

/// Checks `presented` against `allowed` (an empty list admits everyone). Every comparison
/// takes time independent of where the bytes differ, so timing does not reveal a prefix.
pub fn check_token(allowed: &[String], presented: &[u8]) -> Result<(), TokenError> {
    if allowed.is_empty() {
        return Ok(());
    }
    if presented.is_empty() {
        return Err(TokenError::Missing);
    }
    let mut found = false;
    for token in allowed {
        found |= constant_time_eq(token.as_bytes(), presented);
    }
    if found {
        Ok(())
    } else {
        Err(TokenError::Invalid)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

/// Splits a comma-separated token list from the environment (empty entries dropped).
pub fn tokens_from_env(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_only_when_a_list_is_set() {
        let allowed = tokens_from_env("alpha, beta,,");
        assert_eq!(allowed, ["alpha", "beta"]);
        assert_eq!(check_token(&[], b""), Ok(()));
        assert_eq!(check_token(&allowed, b"beta"), Ok(()));
        assert_eq!(check_token(&allowed, b""), Err(TokenError::Missing));
        assert_eq!(check_token(&allowed, b"bet"), Err(TokenError::Invalid));
        assert_eq!(check_token(&allowed, b"betaa"), Err(TokenError::Invalid));
    }
}
