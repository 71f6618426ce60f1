//! The dashboard on the admin listener: one page (HTML, CSS and plain JS embedded in the
//! binary, nothing fetched from elsewhere) that polls `GET /api/overview` every second and
//! draws services, routes and endpoints, pub/sub, stores and recent requests.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};

use crate::sampler::Sampler;

const INDEX: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/dashboard.js");
const STYLE: &str = include_str!("../assets/dashboard.css");

fn reply(body: Bytes, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The answer for `path` if it is one of the dashboard's, else `None`.
pub fn answer(path: &str, sampler: &Sampler) -> Option<Response<Full<Bytes>>> {
    Some(match path {
        "/" | "/index.html" => reply(
            Bytes::from_static(INDEX.as_bytes()),
            "text/html; charset=utf-8",
        ),
        "/dashboard.js" => reply(
            Bytes::from_static(SCRIPT.as_bytes()),
            "text/javascript; charset=utf-8",
        ),
        "/dashboard.css" => reply(
            Bytes::from_static(STYLE.as_bytes()),
            "text/css; charset=utf-8",
        ),
        "/api/overview" => {
            let body = serde_json::to_vec(&*sampler.latest()).expect("an overview serializes");
            reply(Bytes::from(body), "application/json")
        }
        _ => return None,
    })
}
