//! The one error type of the core, and the stable codes that JavaScript sees.
//!
//! Every fallible operation returns [`CoreError`]. The binding turns it into a
//! JS error in one place (`src/lib.rs`): the class from [`CoreError::arg_kind`]
//! (`TypeError`/`RangeError` for argument and option errors, `Error`
//! otherwise), `err.code` from [`CoreError::code`], the message from `Display`.
//! One family of codes: every argument error is `ERR_INVALID_ARG_TYPE` or
//! `ERR_OUT_OF_RANGE` (Node's own codes) and every option error
//! `ERR_INVALID_OPTION`, whichever layer finds it. Messages never contain
//! secrets: they are built from option names, ids and HTTP statuses, never from
//! URLs with credentials, tokens or the signing secret.

use std::fmt;

/// Which JS error class an argument or option error becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    /// The value has the wrong type (`TypeError`).
    Type,
    /// The value has the right type but is out of range or malformed (`RangeError`).
    Range,
}

/// Everything that can go wrong in the core.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoreError {
    /// A constructor option is invalid; the message names the option.
    #[error("{message}")]
    InvalidOption {
        /// Type or range error.
        kind: ArgKind,
        /// Names the option, never echoes a secret value.
        message: String,
    },
    /// A method argument is invalid (e.g. an id that cannot be one path segment).
    #[error("{message}")]
    InvalidArgument {
        /// Type or range error.
        kind: ArgKind,
        /// Names the argument.
        message: String,
    },
    /// The Wrapper answered 404 (or a remembered 404 is still fresh).
    #[error("not found: {0}")]
    NotFound(String),
    /// Connection refused, timeout, 5xx after retries, or circuit open.
    #[error("wrapper unavailable: {0}")]
    WrapperUnavailable(String),
    /// The Wrapper answered 401 or 403.
    #[error("wrapper refused the credentials (HTTP {0})")]
    WrapperAuth(u16),
    /// The Wrapper answered something that is not JSON or has the wrong shape.
    #[error("invalid response from wrapper: {0}")]
    InvalidResponse(String),
    /// A deduction was refused with 402.
    #[error("insufficient credits")]
    InsufficientCredits {
        /// The balance the Wrapper reported with its 402, when it did.
        available: Option<f64>,
    },
    /// Redis could not be reached (start-up and reconnects).
    #[error("redis unavailable: {0}")]
    RedisUnavailable(String),
    /// The consumer was shut down; no further calls are served.
    #[error("the consumer has been shut down")]
    Shutdown,
}

impl CoreError {
    /// The stable `code` property JS callers switch on.
    pub fn code(&self) -> &'static str {
        match self {
            CoreError::InvalidOption { .. } => "ERR_INVALID_OPTION",
            CoreError::InvalidArgument {
                kind: ArgKind::Type,
                ..
            } => "ERR_INVALID_ARG_TYPE",
            CoreError::InvalidArgument {
                kind: ArgKind::Range,
                ..
            } => "ERR_OUT_OF_RANGE",
            CoreError::NotFound(_) => "NOT_FOUND",
            CoreError::WrapperUnavailable(_) => "WRAPPER_UNAVAILABLE",
            CoreError::WrapperAuth(_) => "WRAPPER_AUTH",
            CoreError::InvalidResponse(_) => "INVALID_RESPONSE",
            CoreError::InsufficientCredits { .. } => "INSUFFICIENT_CREDITS",
            CoreError::RedisUnavailable(_) => "REDIS_UNAVAILABLE",
            CoreError::Shutdown => "SHUTDOWN",
        }
    }

    /// For argument and option errors: which JS error class to throw.
    pub fn arg_kind(&self) -> Option<ArgKind> {
        match self {
            CoreError::InvalidOption { kind, .. } | CoreError::InvalidArgument { kind, .. } => {
                Some(*kind)
            }
            _ => None,
        }
    }

    /// A `TypeError`-class option error naming `option`.
    pub fn option_type(option: &str, expected: impl fmt::Display) -> Self {
        CoreError::InvalidOption {
            kind: ArgKind::Type,
            message: format!("option `{option}` must be {expected}"),
        }
    }

    /// A `RangeError`-class option error naming `option`.
    pub fn option_range(option: &str, expected: impl fmt::Display) -> Self {
        CoreError::InvalidOption {
            kind: ArgKind::Range,
            message: format!("option `{option}` must be {expected}"),
        }
    }

    /// A `RangeError`-class argument error.
    pub fn arg_range(message: impl Into<String>) -> Self {
        CoreError::InvalidArgument {
            kind: ArgKind::Range,
            message: message.into(),
        }
    }

    /// A `TypeError`-class argument error.
    pub fn arg_type(message: impl Into<String>) -> Self {
        CoreError::InvalidArgument {
            kind: ArgKind::Type,
            message: message.into(),
        }
    }
}

/// Result alias used across the core.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_family_of_codes() {
        assert_eq!(CoreError::arg_type("x").code(), "ERR_INVALID_ARG_TYPE");
        assert_eq!(CoreError::arg_range("x").code(), "ERR_OUT_OF_RANGE");
        assert_eq!(
            CoreError::option_type("o", "a").code(),
            "ERR_INVALID_OPTION"
        );
        assert_eq!(
            CoreError::option_range("o", "a").code(),
            "ERR_INVALID_OPTION"
        );
        assert_eq!(CoreError::arg_type("x").arg_kind(), Some(ArgKind::Type));
        assert_eq!(
            CoreError::option_range("o", "a").arg_kind(),
            Some(ArgKind::Range)
        );
        assert_eq!(CoreError::Shutdown.arg_kind(), None);
    }
}
