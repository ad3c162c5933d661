//! The website: what the relay is to anyone who does not hold its address.
//!
//! A small static site kept in memory: the files of `--site DIR`, or without it a built-in
//! one (a few pages, a stylesheet, an icon and a 404 page) that looks like any small personal
//! site and never mentions Tidings. It answers `GET` and `HEAD` like a plain static server:
//! `200` with the file, `404` with the 404 page, and `405` with `allow: GET, HEAD` for every
//! other method. The same function answers every request that does not open a tunnel, over
//! every binding, so a request with a wrong, stale or replayed proof gets exactly what the
//! same request without one gets (PROTOCOL.md section 3.1).
//!
//! Headers a prober compares are the same whatever the path was for: `content-type`,
//! `content-length`, `date`, and for files `etag` and `last-modified`; there is no `server`
//! header.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, DATE, ETAG, LAST_MODIFIED};
use http::{Method, Response, StatusCode};

use crate::error::{RelayError, Result};

/// Most files a site directory may hold.
pub const MAX_SITE_FILES: usize = 4096;
/// Most bytes a site directory may hold in all (it is kept in memory).
pub const MAX_SITE_BYTES: u64 = 64 << 20;
/// Deepest directory nesting read from a site directory.
const MAX_DEPTH: usize = 8;

/// One file of the site.
#[derive(Debug, Clone)]
struct Page {
    body: Bytes,
    content_type: HeaderValue,
    etag: HeaderValue,
    last_modified: HeaderValue,
}

/// A static website held in memory.
#[derive(Debug, Clone)]
pub struct Website {
    pages: HashMap<String, Page>,
    not_found: Bytes,
}

/// The built-in site's files: path, content type, body.
const BUILTIN: &[(&str, &str, &[u8])] = &[
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_bytes!("site/index.html"),
    ),
    (
        "/about.html",
        "text/html; charset=utf-8",
        include_bytes!("site/about.html"),
    ),
    (
        "/notes.html",
        "text/html; charset=utf-8",
        include_bytes!("site/notes.html"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_bytes!("site/style.css"),
    ),
    (
        "/favicon.ico",
        "image/x-icon",
        include_bytes!("site/favicon.ico"),
    ),
];
const BUILTIN_404: &[u8] = include_bytes!("site/404.html");
/// When the built-in files were last changed (their `last-modified`).
const BUILTIN_MTIME: u64 = 1_760_433_164;

fn content_type_of(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("txt") => "text/plain; charset=utf-8",
        Some("json") => "application/json",
        Some("xml") => "application/xml",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("pdf") => "application/pdf",
        _ => "application/octet-stream",
    }
}

fn http_date(t: SystemTime) -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(t))
        .unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

fn page(body: Bytes, content_type: &str, mtime: SystemTime) -> Page {
    let secs = mtime
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // The form nginx uses: modification time and length in hex.
    let etag = format!("\"{secs:x}-{:x}\"", body.len());
    Page {
        content_type: HeaderValue::from_str(content_type)
            .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream")),
        etag: HeaderValue::from_str(&etag).unwrap_or_else(|_| HeaderValue::from_static("\"0\"")),
        last_modified: http_date(mtime),
        body,
    }
}

impl Website {
    /// The built-in site.
    pub fn builtin() -> Self {
        let mtime = UNIX_EPOCH + Duration::from_secs(BUILTIN_MTIME);
        let pages = BUILTIN
            .iter()
            .map(|(path, ct, body)| {
                (
                    (*path).to_string(),
                    page(Bytes::from_static(body), ct, mtime),
                )
            })
            .collect();
        Self {
            pages,
            not_found: Bytes::from_static(BUILTIN_404),
        }
    }

    /// Reads the site in `dir` into memory: every regular file (hidden ones and symbolic
    /// links skipped), at most [`MAX_SITE_FILES`] files and [`MAX_SITE_BYTES`] bytes. Its
    /// `404.html`, if any, is the 404 page; otherwise the built-in one is used.
    ///
    /// # Errors
    /// [`RelayError::Config`] naming the directory when it cannot be read or is too large.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let mut pages = HashMap::new();
        let mut total = 0u64;
        read_dir(dir, "", 0, &mut pages, &mut total).map_err(|why| {
            RelayError::Config(format!(
                "the site directory {} cannot be served: {why}",
                dir.display()
            ))
        })?;
        if !pages.contains_key("/index.html") {
            return Err(RelayError::Config(format!(
                "the site directory {} has no index.html; add one or leave out --site to \
                 serve the built-in site",
                dir.display()
            )));
        }
        let not_found = pages
            .get("/404.html")
            .map(|p: &Page| p.body.clone())
            .unwrap_or_else(|| Bytes::from_static(BUILTIN_404));
        Ok(Self { pages, not_found })
    }

    /// The answer to `method` on `path` (the request target's path, without the query).
    pub fn answer(&self, method: &Method, path: &str) -> Response<Bytes> {
        self.answer_to(method, path, &http::HeaderMap::new())
    }

    /// The answer to a request with these headers: like [`Website::answer`], and a
    /// conditional `GET` or `HEAD` of a file (`if-none-match` with its etag or `*`, or without
    /// it `if-modified-since` not before its `last-modified`) gets `304 Not Modified` with
    /// `etag`, `last-modified` and `date`, as static servers answer.
    pub fn answer_to(
        &self,
        method: &Method,
        path: &str,
        request: &http::HeaderMap,
    ) -> Response<Bytes> {
        let date = http_date(SystemTime::now());
        let head = method == Method::HEAD;
        if method != Method::GET && !head {
            let body = Bytes::from_static(METHOD_NOT_ALLOWED);
            return respond(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/html; charset=utf-8",
                body,
                date,
                false,
                |h| {
                    h.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
                },
            );
        }
        let key = if path.ends_with('/') {
            format!("{path}index.html")
        } else {
            path.to_string()
        };
        match self.pages.get(&key) {
            Some(page) if not_modified(page, request) => {
                let mut response = Response::new(Bytes::new());
                *response.status_mut() = StatusCode::NOT_MODIFIED;
                let headers = response.headers_mut();
                headers.insert(DATE, date);
                headers.insert(ETAG, page.etag.clone());
                headers.insert(LAST_MODIFIED, page.last_modified.clone());
                response
            }
            Some(page) => {
                let (etag, last_modified) = (page.etag.clone(), page.last_modified.clone());
                let mut response =
                    respond(StatusCode::OK, "", page.body.clone(), date, head, |h| {
                        h.insert(ETAG, etag);
                        h.insert(LAST_MODIFIED, last_modified);
                    });
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, page.content_type.clone());
                response
            }
            None => respond(
                StatusCode::NOT_FOUND,
                "text/html; charset=utf-8",
                self.not_found.clone(),
                date,
                head,
                |_| {},
            ),
        }
    }
}

/// Whether a conditional request's validators match `page` (RFC 9110 section 13.1).
fn not_modified(page: &Page, request: &http::HeaderMap) -> bool {
    use http::header::{IF_MODIFIED_SINCE, IF_NONE_MATCH};
    if let Some(tags) = request.get(IF_NONE_MATCH) {
        let Ok(tags) = tags.to_str() else {
            return false;
        };
        return tags.split(',').any(|t| {
            let t = t.trim();
            t == "*" || t.strip_prefix("W/").unwrap_or(t).as_bytes() == page.etag.as_bytes()
        });
    }
    let since = request
        .get(IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let modified = page
        .last_modified
        .to_str()
        .ok()
        .and_then(|v| httpdate::parse_http_date(v).ok());
    matches!((since, modified), (Some(since), Some(modified)) if modified <= since)
}

const METHOD_NOT_ALLOWED: &[u8] = b"<!DOCTYPE html>\n<html><head><title>405 Method Not Allowed</title></head>\n<body><h1>Method Not Allowed</h1></body></html>\n";

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
    date: HeaderValue,
    head: bool,
    extra: impl FnOnce(&mut http::HeaderMap),
) -> Response<Bytes> {
    let len = body.len();
    let mut response = Response::new(if head { Bytes::new() } else { body });
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if !content_type.is_empty() {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(DATE, date);
    extra(headers);
    response
}

fn read_dir(
    dir: &Path,
    prefix: &str,
    depth: usize,
    pages: &mut HashMap<String, Page>,
    total: &mut u64,
) -> std::result::Result<(), String> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| e.to_string())?;
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') {
            continue;
        }
        let kind = entry.file_type().map_err(|e| e.to_string())?;
        let path = format!("{prefix}/{name}");
        if kind.is_dir() {
            read_dir(&entry.path(), &path, depth + 1, pages, total)?;
        } else if kind.is_file() {
            let meta = entry.metadata().map_err(|e| e.to_string())?;
            *total = total.saturating_add(meta.len());
            if *total > MAX_SITE_BYTES || pages.len() >= MAX_SITE_FILES {
                return Err(format!(
                    "it holds more than {MAX_SITE_FILES} files or {MAX_SITE_BYTES} bytes"
                ));
            }
            let body = std::fs::read(entry.path()).map_err(|e| format!("{path}: {e}"))?;
            let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
            pages.insert(
                path.clone(),
                page(body.into(), content_type_of(&path), mtime),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_site_answers_like_a_static_server() -> std::result::Result<(), String> {
        let site = Website::builtin();
        let root = site.answer(&Method::GET, "/");
        assert_eq!(root.status(), StatusCode::OK);
        let text = String::from_utf8_lossy(root.body()).to_lowercase();
        assert!(!text.contains("tidings"), "the site names the software");
        let head = site.answer(&Method::HEAD, "/");
        assert!(head.body().is_empty());
        assert_eq!(
            head.headers().get(CONTENT_LENGTH),
            root.headers().get(CONTENT_LENGTH)
        );
        let missing = site.answer(&Method::GET, "/no/such/page");
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        let post = site.answer(&Method::POST, "/");
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            post.headers().get(ALLOW).map(|v| v.as_bytes()),
            Some(&b"GET, HEAD"[..])
        );
        for (path, _, body) in BUILTIN {
            let text = String::from_utf8_lossy(body).to_lowercase();
            if text.contains("tidings") {
                return Err(format!("{path} names the software"));
            }
        }
        Ok(())
    }
}
