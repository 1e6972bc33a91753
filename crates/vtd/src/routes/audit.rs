//! `/audit`: search and verify the trail, and the file watches. Root
//! only (the trail shows every user's actions; watches see every process).

use audit::search::parse_time;
use audit::Filter;
use vt_http::{Reply, Request, Response};

use super::{json, Answer};
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::watches::NewWatch;

/// Records returned when `limit` is not given.
const DEFAULT_LIMIT: usize = 1000;
/// The most records one search returns.
const MAX_LIMIT: usize = 100_000;

/// `%XX` and `+` decoded (application/x-www-form-urlencoded).
pub fn percent_decode(s: &str) -> Result<String, ApiError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| ApiError::bad_request(format!("bad %-escape in '{s}'")))?;
                out.push(hex);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request("query is not UTF-8"))
}

/// The filter and limit of `GET /audit?...`.
pub fn filter_of(req: &Request) -> Result<(Filter, usize), ApiError> {
    let param = |k: &str| req.query_param(k).map(percent_decode).transpose();
    let now = audit::trail::now_ms();
    let num = |k: &str| -> Result<Option<i64>, ApiError> {
        param(k)?
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::bad_request(format!("{k} must be a number, not '{v}'")))
            })
            .transpose()
    };
    let time = |k: &str| -> Result<Option<u64>, ApiError> {
        param(k)?
            .map(|v| parse_time(&v, now).map_err(ApiError::bad_request))
            .transpose()
    };
    let filter = Filter {
        vm: param("vm")?,
        key: param("key")?,
        action: param("action")?,
        uid: num("uid")?
            .map(|u| u32::try_from(u).map_err(|_| ApiError::bad_request("uid out of range")))
            .transpose()?,
        pid: num("pid")?
            .map(|p| i32::try_from(p).map_err(|_| ApiError::bad_request("pid out of range")))
            .transpose()?,
        since_ms: time("since")?,
        until_ms: time("until")?,
        result: param("result")?
            .map(|r| r.parse().map_err(ApiError::bad_request))
            .transpose()?,
    };
    let limit = match num("limit")? {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=MAX_LIMIT as i64).contains(&n) => n as usize,
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "limit must be 1 to {MAX_LIMIT}"
            )))
        }
    };
    Ok((filter, limit))
}

/// `GET /audit`: the newest matching records, oldest first.
pub fn search(d: &Daemon, req: &Request) -> Answer {
    let (filter, limit) = filter_of(req)?;
    let found = d
        .audit
        .search(&filter, limit)
        .map_err(|e| ApiError::internal("cannot read the audit trail", e))?;
    json(200, &found)
}

/// `GET /audit/verify`.
pub fn verify(d: &Daemon) -> Answer {
    let report = d
        .audit
        .verify()
        .map_err(|e| ApiError::internal("cannot read the audit trail", e))?;
    json(200, &report)
}

/// `GET /audit/watches`.
pub fn watches(d: &Daemon) -> Answer {
    json(200, &d.watches.list())
}

/// `POST /audit/watches` with `{"path", "perms", "key"}`.
pub fn add_watch(d: &Daemon, body: &[u8]) -> Answer {
    let n: NewWatch = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid watch: {e}")))?;
    json(201, &d.watches.add(&n)?)
}

/// `DELETE /audit/watches/{id}`.
pub fn remove_watch(d: &Daemon, id: &str) -> Answer {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("watch id must be a number, not '{id}'")))?;
    d.watches.remove(id)?;
    Ok(Reply::Full(Response::new(204, "application/json", "")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(percent_decode("image%3Aa+b").unwrap(), "image:a b");
        assert!(percent_decode("%zz").is_err());
        assert!(percent_decode("%4").is_err());
        assert!(percent_decode("%ff").is_err());
    }
}
