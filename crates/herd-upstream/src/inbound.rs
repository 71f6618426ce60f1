//! Request heads herd refuses before anything else looks at them, on the gateway's listeners
//! and the sidecar API alike.
//!
//! hyper parses the head and already refuses most malformed framing (differing
//! `Content-Length` values, bad chunk sizes, a `Transfer-Encoding` whose last coding is not
//! `chunked`). What it lets through, and HTTP says a server must not accept, is checked here:
//!
//! - an HTTP/1.1 request without `Host`, any HTTP/1.x request with more than one `Host` or with
//!   a `Host` value that is no `host[:port]`: 400 (RFC 9112 §3.2);
//! - `CONNECT`: 405, as herd opens no tunnels;
//! - a transfer coding other than `chunked` (e.g. `gzip, chunked`): 501 (RFC 9112 §6.1), since
//!   herd would otherwise pass on a body whose coding it never looked at.
//!
//! The connection is closed after every one of these answers (`Fault::close`), since what
//! follows the head on it cannot be trusted to be framed as the head says. The check is a few
//! header look-ups per request.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, Version};

/// Why a request head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The answer's status.
    pub status: StatusCode,
    /// A short sentence for the answer's body.
    pub reason: &'static str,
}

impl Fault {
    /// `Allow` for a 405: every method but `CONNECT` is passed on.
    pub const ALLOW: HeaderValue =
        HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE");

    /// `Connection: close`, for an HTTP/1.x answer to a refused head (HTTP/2 has no such
    /// header: only the stream ends there).
    pub fn close(version: Version) -> Option<HeaderValue> {
        (version < Version::HTTP_2).then_some(HeaderValue::from_static("close"))
    }
}

/// Whether `value` can be a `Host` header: `host[:port]` with a registered name, an IPv4
/// address or a bracketed IPv6 address (RFC 3986 authority without userinfo).
fn valid_host(value: &[u8]) -> bool {
    !value.is_empty()
        && value.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'%'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                        | b':'
                        | b'['
                        | b']'
                )
        })
}

/// The fault of a request head with `version`, `method` and `headers`, if it has one.
pub fn head_fault(version: Version, method: &Method, headers: &HeaderMap) -> Option<Fault> {
    if version < Version::HTTP_2 {
        let mut hosts = headers.get_all(header::HOST).iter();
        match (hosts.next(), hosts.next()) {
            (None, _) if version == Version::HTTP_11 => {
                return Some(Fault {
                    status: StatusCode::BAD_REQUEST,
                    reason: "an HTTP/1.1 request needs a Host header",
                });
            }
            (Some(_), Some(_)) => {
                return Some(Fault {
                    status: StatusCode::BAD_REQUEST,
                    reason: "more than one Host header",
                });
            }
            (Some(h), None) if !valid_host(h.as_bytes()) => {
                return Some(Fault {
                    status: StatusCode::BAD_REQUEST,
                    reason: "the Host header is not a host[:port]",
                });
            }
            _ => {}
        }
    }
    if method == Method::CONNECT {
        return Some(Fault {
            status: StatusCode::METHOD_NOT_ALLOWED,
            reason: "CONNECT is not supported: herd opens no tunnels",
        });
    }
    // hyper accepted the framing, so the last coding is `chunked`; any other before it is one
    // herd does not decode.
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    if let Some(first) = codings.next()
        && (codings.next().is_some() || !first.as_bytes().eq_ignore_ascii_case(b"chunked"))
        && !only_chunked(headers)
    {
        return Some(Fault {
            status: StatusCode::NOT_IMPLEMENTED,
            reason: "unsupported transfer coding: only chunked is implemented",
        });
    }
    None
}

/// Whether `Transfer-Encoding` lists `chunked` once and nothing else (the slow path, for values
/// with spaces or several fields; `chunked` applied twice is as malformed as any other coding).
fn only_chunked(headers: &HeaderMap) -> bool {
    let mut codings = 0;
    for value in headers.get_all(header::TRANSFER_ENCODING) {
        let Ok(text) = value.to_str() else {
            return false;
        };
        for coding in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if !coding.eq_ignore_ascii_case("chunked") {
                return false;
            }
            codings += 1;
        }
    }
    codings == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(version: Version, method: Method, headers: &[(&str, &str)]) -> Option<u16> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        head_fault(version, &method, &h).map(|f| f.status.as_u16())
    }

    #[test]
    fn host_is_required_once_on_http_1_1() {
        let v11 = Version::HTTP_11;
        assert_eq!(fault(v11, Method::GET, &[("host", "a.example:80")]), None);
        assert_eq!(fault(v11, Method::GET, &[("host", "[::1]:8080")]), None);
        assert_eq!(fault(v11, Method::GET, &[]), Some(400));
        assert_eq!(
            fault(v11, Method::GET, &[("host", "a"), ("host", "b")]),
            Some(400)
        );
        assert_eq!(fault(v11, Method::GET, &[("host", "a b")]), Some(400));
        assert_eq!(fault(v11, Method::GET, &[("host", "a/b")]), Some(400));
        assert_eq!(fault(v11, Method::GET, &[("host", "u@a")]), Some(400));
        assert_eq!(fault(v11, Method::GET, &[("host", "")]), Some(400));
        assert_eq!(fault(Version::HTTP_10, Method::GET, &[]), None);
        assert_eq!(fault(Version::HTTP_2, Method::GET, &[]), None);
    }

    #[test]
    fn connect_is_refused() {
        let h = [("host", "a:443")];
        assert_eq!(fault(Version::HTTP_11, Method::CONNECT, &h), Some(405));
        assert_eq!(fault(Version::HTTP_2, Method::CONNECT, &[]), Some(405));
    }

    #[test]
    fn only_the_chunked_coding_is_accepted() {
        let te = |v: &'static str| {
            fault(
                Version::HTTP_11,
                Method::POST,
                &[("host", "a"), ("transfer-encoding", v)],
            )
        };
        assert_eq!(te("chunked"), None);
        assert_eq!(te("Chunked"), None);
        assert_eq!(te(" chunked "), None);
        assert_eq!(te("gzip, chunked"), Some(501));
        assert_eq!(te("identity, chunked"), Some(501));
        assert_eq!(te("deflate,chunked"), Some(501));
        assert_eq!(te("chunked, chunked"), Some(501));
        let two = [
            ("host", "a"),
            ("transfer-encoding", "gzip"),
            ("transfer-encoding", "chunked"),
        ];
        assert_eq!(fault(Version::HTTP_11, Method::POST, &two), Some(501));
    }
}
